"""Fuzzes the readers of user files with truncations and seeded byte flips of valid files.

Readers: `.npz` (`load_npz`), `model.keras` (`read_checkpoint(...).load_model()`),
`config.json` / `labels.txt` (`read_checkpoint`), `.tflite` (`export.runtime.Classifier`
and the FlatBuffer reader `export.tflite_reader`), images (`export.runtime.load_image`).
Every case must end in a correct result or the reader's documented error (one line,
naming the file), never another exception type, a hang or a crash. The cases run in a
worker process (`tests/fuzz_worker.py`) so that a crash of the interpreter is caught and
reported naming the case; the worker is restarted after it.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import FIXTURES, REPO, write_exif_rotated, write_png, write_png16

pytestmark = pytest.mark.integration

TRUNCATIONS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999)
FLIPS = ((1, 8), (4, 8), (16, 8))  # (bytes flipped, variants)
SILENCE_SECONDS = 180  # no output from the worker for this long: the case hangs
# A seed file per reader; several seeds share a reader.
SEEDS = {
    "npz": "npz",
    "npz_compressed": "npz",
    "model.keras": "model.keras",
    "config.json": "config.json",
    "labels.txt": "labels.txt",
    "tflite": "tflite",
    "tflite_bytes": "tflite_reader",
    "png": "image",
    "png16": "image",
    "jpeg_exif": "image",
    "webp": "image",
    "tiff": "image",
}
# Cases the code gets wrong, as (seed file, "case case ...") -> reason; each is
# xfail(strict=True), so a fix turns it into a failure and it leaves this table.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}
KNOWN = {
    f"{seed}-{name}": reason
    for (seed, names), reason in KNOWN_FAILURES.items()
    for name in names.split()
}


def mutations(content: bytes, seed: int):
    """`(name, bytes)`: truncations at fixed fractions, then seeded random byte flips."""
    for fraction in TRUNCATIONS:
        yield f"cut{fraction:g}", content[: int(len(content) * fraction)]
    rng = np.random.default_rng(seed)
    for flips, variants in FLIPS:
        for variant in range(variants):
            data = bytearray(content)
            for position in rng.integers(0, len(data), flips):
                data[position] ^= int(rng.integers(1, 256))
            yield f"flip{flips}x{variant}", bytes(data)


def _zip_normalised(path: Path) -> None:
    """Rewrites a `.keras` zip with fixed timestamps and save date, so bytes repeat."""
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    if "metadata.json" in files:
        metadata = json.loads(files["metadata.json"])
        metadata["date_saved"] = "2000-01-01@00:00:00"
        files["metadata.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in files.items():
            archive.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), value)


def _seed_run_dir(root: Path) -> Path:
    """A run directory of an untrained, seeded one-block ViT, with a float32 `.tflite`."""
    from helpers import write_checkpoint

    import keras_vit
    from export import tflite

    run = root / "run"
    model = keras_vit.ViT(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        mlp_dim=32,
        num_classes=3,
        seed=0,
    )
    write_checkpoint(run, model, ["cat", "dog", "fox"], dataset={"source": "digits"})
    _zip_normalised(run / "model.keras")
    tflite.export_tflite(run, root / "tflite", quantize=["float32"], evaluate=False)
    return run


def _seeds(root: Path) -> dict[str, Path]:
    from PIL import Image

    run = _seed_run_dir(root)
    compressed = root / "compressed.npz"
    with np.load(FIXTURES / "tiny_token.npz") as npz:
        np.savez_compressed(compressed, **{k: npz[k] for k in npz.files})
    png = write_png(root / "seed.png")
    with Image.open(png) as image:
        image.save(root / "seed.webp", lossless=True)
        image.save(root / "seed.tiff")
    return {
        "npz": FIXTURES / "tiny_token.npz",
        "npz_compressed": compressed,
        "model.keras": run / "model.keras",
        "config.json": run / "config.json",
        "labels.txt": run / "labels.txt",
        "tflite": root / "tflite" / "model_float32.tflite",
        "tflite_bytes": root / "tflite" / "model_float32.tflite",
        "png": png,
        "png16": write_png16(root / "seed16.png"),
        "jpeg_exif": write_exif_rotated(root / "seed.jpg")[0],
        "webp": root / "seed.webp",
        "tiff": root / "seed.tiff",
    }


def build_cases(root: Path) -> list[dict]:
    """Writes every mutated file under `root`; returns the worker's case list."""
    seeds = _seeds(root / "seeds")
    run = seeds["model.keras"].parent
    cases = []
    for index, (seed_name, reader) in enumerate(SEEDS.items()):
        source = seeds[seed_name]
        for name, content in mutations(source.read_bytes(), seed=index):
            case_id = f"{seed_name}-{name}"
            folder = root / "cases" / case_id
            if reader in ("model.keras", "config.json", "labels.txt"):
                shutil.copytree(run, folder)
                (folder / source.name).write_bytes(content)
                path = folder
            else:
                folder.mkdir(parents=True)
                path = folder / source.name
                path.write_bytes(content)
            cases.append({"id": case_id, "reader": reader, "path": str(path)})
    return cases


def run_worker(cases: list[dict], workdir: Path) -> dict[str, dict]:
    """Runs the cases in worker processes; a crash or hang is recorded against its case."""
    results: dict[str, dict] = {}
    remaining = list(cases)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    while remaining:
        listing = workdir / "cases.json"
        listing.write_text(json.dumps(remaining))
        worker = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "fuzz_worker.py"), str(listing)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        current = None
        stalled = False
        while True:
            ready, _, _ = select.select([worker.stdout], [], [], SILENCE_SECONDS)
            if not ready:
                stalled = True
                break
            line = worker.stdout.readline()
            if not line:
                break
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if "start" in record:
                current = record["start"]
            else:
                results[record["id"]] = record
                current = None
        worker.kill()
        code = worker.wait(30)
        worker.stdout.close()
        if current is not None:
            outcome = "hang" if stalled else f"crash (exit {code})"
            results[current] = {"id": current, "outcome": outcome, "detail": ""}
        elif stalled:  # silent before the first case started (importing)
            raise AssertionError("the fuzz worker produced no output")
        remaining = [case for case in cases if case["id"] not in results]
        if code not in (0, None) and current is None and remaining:
            raise AssertionError(f"the fuzz worker exited {code} between cases")
    return results


CASE_IDS = [
    f"{seed_name}-{name}"
    for index, seed_name in enumerate(SEEDS)
    for name, _ in mutations(b"\0" * 64, seed=index)
]


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    cases = build_cases(root)
    assert [case["id"] for case in cases] == CASE_IDS
    started = time.perf_counter()
    results = run_worker(cases, root)
    print(f"fuzz: {len(cases)} cases in {time.perf_counter() - started:.0f} s")
    return results


def _params():
    for case_id in CASE_IDS:
        marks = []
        if case_id in KNOWN:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN[case_id]))
        yield pytest.param(case_id, id=case_id, marks=marks)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("case_id", _params())
def test_fuzz_case(case_id, fuzz_results):
    result = fuzz_results[case_id]
    assert result["outcome"] in ("ok", "error"), f"{case_id}: {result}"
