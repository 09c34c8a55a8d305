"""The notebooks under `notebooks/`: committed without outputs, and each runs top to bottom.

Each notebook is executed with nbclient in a fresh kernel (the `python3` kernel spec, which
jupyter_client starts with this interpreter), in a temporary copy of the folders it reads
(`notebooks/` and the synthetic checkpoint fixtures), so nothing is written into the
repository. A failing cell fails the test with that cell's error and traceback.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = (
    "01_quickstart.ipynb",
    "02_finetune_npz.ipynb",
    "03_export_tflite.ipynb",
    "04_attention_fig7.ipynb",
)
# Each notebook takes 20-60 s on a shared 2-core machine; the bounds leave room for a busy one.
CELL_TIMEOUT_S = 240
NOTEBOOK_TIMEOUT_S = 420
# Where a notebook may write, relative to the folder it runs in.
OUTPUT_DIR = "notebook_out"


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def test_every_notebook_is_listed():
    assert sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_stripped(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert "widgets" not in notebook.metadata, f"{name}: widget state in the metadata"
    assert notebook.cells[0].cell_type == "markdown", f"{name}: should open with prose"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, f"{name} has no code cells"
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        assert cell.outputs == [], f"{name}: cell {index} has outputs; strip them"
        assert cell.execution_count is None, f"{name}: cell {index} has an execution count"
        assert "widgets" not in cell.metadata, f"{name}: cell {index} has widget state"


def _snapshot(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def _run(name: str, workdir: Path) -> float:
    """Executes `notebooks/<name>` in a copy under `workdir`; returns the wall time."""
    shutil.copytree(NOTEBOOK_DIR, workdir / "notebooks", ignore=shutil.ignore_patterns(OUTPUT_DIR))
    shutil.copytree(
        ROOT / "tests" / "fixtures" / "checkpoints", workdir / "tests" / "fixtures" / "checkpoints"
    )
    before = _snapshot(workdir)
    notebook = nbformat.read(workdir / "notebooks" / name, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir / "notebooks")}},
    )
    start = time.perf_counter()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{name} failed:\n{error}", pytrace=False)
    except nbclient.exceptions.CellTimeoutError as error:
        pytest.fail(f"{name}: a cell ran longer than {CELL_TIMEOUT_S} s: {error}", pytrace=False)
    seconds = time.perf_counter() - start
    written = _snapshot(workdir) - before
    stray = sorted(p for p in written if not p.startswith(f"notebooks/{OUTPUT_DIR}"))
    assert not stray, f"{name} wrote outside notebooks/{OUTPUT_DIR}/: {stray[:5]}"
    return seconds


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, record_property):
    seconds = _run(name, tmp_path)
    record_property("seconds", round(seconds, 1))
    print(f"{name}: executed in {seconds:.1f} s")
