"""The notebooks under `notebooks/`: committed without outputs, and each runs top to bottom.

Each notebook is executed with nbclient in a fresh kernel running this interpreter (a
`python3` kernel spec written for the tests), in a temporary copy of the folders it reads
(`notebooks/` and the synthetic checkpoint fixtures), so nothing is written into the
repository. A failing cell fails the test with that cell's error and traceback.
"""

from __future__ import annotations

import re
import shutil
import sys
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
    "05_hybrid.ipynb",
)
# Each notebook takes 20-60 s on a shared 2-core machine; the bounds leave room for a busy one.
CELL_TIMEOUT_S = 240
NOTEBOOK_TIMEOUT_S = 420
# Where a notebook may write, relative to the folder it runs in.
OUTPUT_DIR = "notebook_out"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A `python3` kernel spec that starts this interpreter, whatever kernels are installed."""
    from ipykernel.kernelspec import write_kernel_spec

    root = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(root / "kernels" / "python3")
    return root


@pytest.fixture(autouse=True)
def _this_interpreter(kernel_dir, monkeypatch):
    # JUPYTER_PATH comes first in the kernel-spec search, before a user's own `python3`.
    monkeypatch.setenv("JUPYTER_PATH", str(kernel_dir))


def test_kernel_is_this_interpreter():
    from jupyter_client.kernelspec import KernelSpecManager

    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable


def _read(name: str):
    return nbformat.read(NOTEBOOK_DIR / name, as_version=4)


def test_every_notebook_is_listed():
    assert sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


def stripping_problems(notebook) -> list[str]:
    """What keeps a notebook from being committed as is: outputs, counts, widget state."""
    problems = []
    if "widgets" in notebook.metadata:
        problems.append("widget state in the notebook metadata")
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        if cell.outputs:
            problems.append(f"cell {index} has outputs")
        if cell.execution_count is not None:
            problems.append(f"cell {index} has an execution count")
        if "widgets" in cell.metadata:
            problems.append(f"cell {index} has widget state")
    return problems


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_stripped(name):
    notebook = _read(name)
    nbformat.validate(notebook)
    assert notebook.nbformat == 4
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    assert notebook.cells[0].cell_type == "markdown", f"{name}: should open with prose"
    assert any(cell.cell_type == "code" for cell in notebook.cells), f"{name} has no code"
    assert stripping_problems(notebook) == [], f"{name}: strip the outputs before committing"


def test_stripping_problems_finds_outputs():
    notebook = _read(NOTEBOOKS[0])
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {}}
    code = next(i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code")
    notebook.cells[code].outputs = [nbformat.v4.new_output("stream", text="hello\n")]
    notebook.cells[code].execution_count = 3
    assert stripping_problems(notebook) == [
        "widget state in the notebook metadata",
        f"cell {code} has outputs",
        f"cell {code} has an execution count",
    ]


def _snapshot(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*")}


def _run(name: str, workdir: Path, source: Path = NOTEBOOK_DIR, fixtures: bool = True) -> float:
    """Executes `<source>/<name>` in a copy under `workdir`; returns the wall time.

    `workdir` gets `notebooks/` (a copy of `source`) and, with `fixtures`,
    `tests/fixtures/checkpoints/`, the layout of a clone; the kernel runs in
    `workdir/notebooks`, as Jupyter would.
    """
    shutil.copytree(source, workdir / "notebooks", ignore=shutil.ignore_patterns(OUTPUT_DIR))
    if fixtures:
        fixture_dir = Path("tests") / "fixtures" / "checkpoints"
        shutil.copytree(ROOT / fixture_dir, workdir / fixture_dir)
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
    except nbclient.exceptions.CellTimeoutError as error:
        pytest.fail(f"{name}: a cell ran longer than {CELL_TIMEOUT_S} s: {error}", pytrace=False)
    except nbclient.exceptions.CellExecutionError as error:
        # IPython colours tracebacks; plain text reads better in a test report.
        pytest.fail(f"{name} failed:\n{ANSI_ESCAPE.sub('', str(error))}", pytrace=False)
    seconds = time.perf_counter() - start
    written = _snapshot(workdir) - before
    stray = sorted(p for p in written if not p.startswith(f"notebooks/{OUTPUT_DIR}"))
    assert not stray, f"{name} wrote outside notebooks/{OUTPUT_DIR}/: {stray[:5]}"
    return seconds


def _write_notebook(folder: Path, *sources: str) -> str:
    folder.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, folder / "check.ipynb")
    return "check.ipynb"


def test_runner_fails_with_the_cells_error(tmp_path):
    source = tmp_path / "source"
    name = _write_notebook(source, "x = 1", "raise ValueError(f'bad value {x + 1}')")
    with pytest.raises(pytest.fail.Exception, match="ValueError: bad value 2"):
        _run(name, tmp_path / "work", source)


def test_runner_refuses_writes_outside_the_output_folder(tmp_path):
    source = tmp_path / "source"
    name = _write_notebook(
        source,
        "from pathlib import Path",
        "Path('notebook_out').mkdir(); Path('notebook_out/ok.txt').write_text('fine')",
        "Path('../stray.txt').write_text('not here')",
    )
    with pytest.raises(AssertionError, match=r"stray\.txt"):
        _run(name, tmp_path / "work", source)


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, tmp_path, record_property):
    seconds = _run(name, tmp_path)
    record_property("seconds", round(seconds, 1))
    print(f"{name}: executed in {seconds:.1f} s")


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
def test_finetune_notebook_without_the_fixture(tmp_path):
    # A notebook copied out of the repository writes its own stand-in checkpoint.
    _run("02_finetune_npz.ipynb", tmp_path, fixtures=False)
    assert (tmp_path / "notebooks" / OUTPUT_DIR / "02_finetune_npz" / "stand_in.npz").is_file()
