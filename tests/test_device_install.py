"""The README's device install: exported files run where TensorFlow is not installed.

Builds the environment the README's "Install on a device" commands make, from this
repository: its wheel (`pip wheel --no-deps`), a fresh venv, the interpreter packages and the
wheel installed with `--no-deps`; then `python -m export.predict` runs the float32, int8,
int8_cpu and Edge TPU files of a tiny exported run there and prints what the runtime prints
here. Needs the package index (a few seconds with a local mirror). Integration tier.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import make_trained as trained
from helpers import parse_predictions, write_checkpoint
from markdown_blocks import ROOT, blocks, shell_commands

from export import tflite
from export.runtime import Classifier
from keras_vit import data

LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FILES = (
    "model_float32.tflite",
    "model_int8.tflite",
    "model_int8_cpu.tflite",
    "model_edgetpu_int8.tflite",
)
# The alternative the README gives for boards whose Python has tflite-runtime.
TFLITE_RUNTIME_PACKAGES = ["numpy<2", "pillow", "tflite-runtime"]
# What the package's sources need to build a wheel (setup.cfg reads README.md).
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "keras_vit", "export")


def readme_device_commands() -> list[list[str]]:
    """The README's device install, as argument lists: [[pip, install, ...], ...]."""
    (block,) = [b for b in blocks(ROOT / "README.md") if b.marker == "device-install"]
    return [shlex.split(command) for command in shell_commands(block.source)]


def test_readme_device_install_is_two_commands_without_tensorflow():
    commands = readme_device_commands()
    assert len(commands) == 2
    interpreter, package = commands
    assert interpreter[:2] == ["pip", "install"] and "tensorflow" not in " ".join(interpreter)
    assert package == ["pip", "install", "--no-deps", "."]
    readme = (ROOT / "README.md").read_text()
    assert " ".join(f'"{p}"' if "<" in p else p for p in TFLITE_RUNTIME_PACKAGES) in readme


def test_the_device_extra_lists_the_readme_packages():
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extra = config["options.extras_require"]["device"].split()
    assert extra == readme_device_commands()[0][2:]
    assert not any(name.startswith(("tensorflow", "keras")) for name in extra)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """This repository's wheel, built from a copy of its sources (nothing written here)."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(root / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = (root / "dist").glob("keras_vit-*.whl")
    return path


def device_environment(folder: Path, interpreter_packages: list[str], wheel: Path) -> Path:
    """A fresh venv with `interpreter_packages` and the wheel (no deps); its python."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True, timeout=300)
    python = folder / "bin" / "python"
    for packages in (interpreter_packages, ["--no-deps", str(wheel)]):
        install = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", *packages],
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert install.returncode == 0, f"pip install {packages}: {install.stderr[-2000:]}"
    return python


def run_in(python: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    # No PYTHONPATH: the installed wheel, not this checkout, must provide the modules.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [str(python), *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.fixture(scope="module", params=["readme", "tflite-runtime"])
def device_python(request, wheel, tmp_path_factory) -> Path:
    if request.param == "readme":
        packages = readme_device_commands()[0][2:]
    else:
        packages = TFLITE_RUNTIME_PACKAGES
    folder = tmp_path_factory.mktemp("device") / request.param
    python = device_environment(folder, packages, wheel)
    for module in ("tensorflow", "keras"):
        probe = run_in(python, "-c", f"import {module}", cwd=folder)
        assert probe.returncode != 0, f"{module} is importable in the device environment"
    return python


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """float32, int8, int8_cpu and Edge TPU files of the committed TINY ViT trained on digits."""
    root = tmp_path_factory.mktemp("run")
    model = trained.load("vit")
    write_checkpoint(root / "run_dir", model, LABELS, dataset={"source": "digits"})
    report = tflite.export_tflite(
        root / "run_dir",
        root / "tflite",
        quantize=("float32", "int8", "int8_cpu"),
        calibration_samples=32,
        edgetpu=True,
        evaluate=False,
        latency_runs=1,
    )
    return Path(report["output_dir"])


@pytest.fixture(scope="module")
def digit_files(tmp_path_factory) -> tuple[list[Path], np.ndarray]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("digits")
    images, _ = data.digits_arrays("test", 32)
    paths = []
    for index in range(3):
        paths.append(folder / f"digit{index}.png")
        Image.fromarray(images[index]).save(paths[-1])
    return paths, images[:3]


@pytest.mark.parametrize("name", FILES)
def test_predict_in_the_device_environment(device_python, exported, digit_files, name, tmp_path):
    paths, images = digit_files
    model = exported / name
    result = run_in(
        device_python, "-m", "export.predict", str(model), *map(str, paths), "--top-k", "3",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    printed = parse_predictions(result.stdout)
    assert list(printed) == [str(p) for p in paths], result.stdout
    here = Classifier(model)
    for path, top in zip(paths, here.top_k(here.predict(images), 3), strict=True):
        (label, score), *_ = printed[str(path)]
        # Other interpreters round int8 kernels differently: the same ranking, scores within
        # a few 8-bit steps (tflite-runtime), or equal (LiteRT, as here).
        assert abs(score - top[0].score) < 0.05, (name, path, printed[str(path)], top)
        if top[0].score - top[1].score > 0.05:
            assert label == top[0].label, (name, path, printed[str(path)], top)


def test_tflite_runtime_beside_numpy2_is_one_line(wheel, exported, digit_files, tmp_path):
    """tflite-runtime 2.14 imports beside NumPy 2 but cannot open a model: one clear line."""
    python = device_environment(tmp_path / "venv", ["numpy>=2", "pillow", "tflite-runtime"], wheel)
    paths, _ = digit_files
    result = run_in(
        python, "-m", "export.predict", str(exported / "model_int8.tflite"), str(paths[0]),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "No TFLite interpreter could run the model" in last
    assert "tflite_runtime.interpreter" in last and "pip install ai-edge-litert" in last
