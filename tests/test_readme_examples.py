"""Every example in README.md and docs/*.md runs, so the documentation cannot rot.

Python blocks run in a fresh namespace in a temporary folder. A block preceded by
`<!-- test: stand-in WHAT -->` runs with small stand-ins for what would download or take
long; the substitutions are listed here, and only these:

- `stand-in variants`: every named builder `keras_vit.ViT_XX(...)` builds the same variant
  with the tiny test architecture (`STAND_IN_ARCHITECTURE`) at about a seventh of the image
  size (`stand_in_size`); `pixels` is a small batch of uint8 images at that size.
- `stand-in npz FILE`: as `variants`, and FILE is a checkpoint of the tiny architecture at
  32 px; a published weights name (`weights="imagenet21k"`, ...) loads FILE instead.
- `stand-in training`: `epochs=N` runs one epoch, and `make_config(SOURCE, ...)` trains
  the one-block `STAND_IN_TRAINING_ARCHITECTURE` on 16x16 images.
- `stand-in model`: `model` is a tiny class-token ViT, `images` a batch of 4 float images in
  [-1, 1] and `raw_image` one uint8 image.
- `quickstart`: runs as written; the test checks that the loss goes down.

Shell commands of the README are not run here (they train, export, install): each one is
filed in `COVERED_BY` under the tests that run it, and a command missing from the table fails.
"""

from __future__ import annotations

import ast
import configparser
import json
import re
import shlex
import subprocess
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY
from markdown_blocks import ROOT, blocks, command_key, shell_commands

import keras_vit
from keras_vit import checkpoints
from keras_vit.variants import variant_config

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
STAND_IN_ARCHITECTURE = {key: value for key, value in TINY.items() if key != "image_size"}
STAND_IN_TRAINING_ARCHITECTURE = dict(
    image_size=16, patch_size=8, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32
)
# Published weights names the `npz` stand-in replaces with its local file.
PUBLISHED_WEIGHTS = re.compile(r"""weights=(["'])(imagenet21k[^"']*|sam|augreg[^"']*)\1""")
BUILDER_CALL = re.compile(r"\bkeras_vit\.(ViT_(?:R\d*_)?[A-Za-z]+\d+)\(")
# A hybrid builder's stand-in keeps a stem, the smallest: the root block at half width
# (stride 4), under 1x1 patches.
STAND_IN_STEM = dict(patch_size=1, resnet_layers=(), resnet_width=0.5)

# API the examples document that lands with another branch of this round: a block using any
# of these is expected to fail until then (strict, so the lead sees it flip at the merge).
PENDING: dict[str, str] = {}  # API name -> the branch it lands with (strict xfail until then)

# Which tests run each README command (`command_key` form). Every command of a ```bash block
# must be here, and nothing else.
COVERED_BY = {
    "make demo": (
        "tests/test_readme_examples.py::test_make_targets_exist",
        "tests/test_cli.py::test_train_and_evaluate_cli",
        "tests/test_export_tflite.py::test_cli_prints_the_table",
        "tests/test_export_tflite.py::test_evaluate_cli",
    ),
    "make test": ("tests/test_readme_examples.py::test_ci_runs_make_test",),
    "make test-fast": (
        "tests/test_readme_examples.py::test_make_targets_exist",
        "tests/test_tiers.py::test_every_listed_integration_test_exists",
    ),
    "make format": ("tests/test_readme_examples.py::test_make_targets_exist",),
    "pip install -e .": ("tests/test_readme_examples.py::test_install_extras_exist",),
    "pip install -e '.[train]'": ("tests/test_readme_examples.py::test_install_extras_exist",),
    "pip install -e '.[edge]'": ("tests/test_readme_examples.py::test_install_extras_exist",),
    "pip install -e '.[dev]'": ("tests/test_readme_examples.py::test_install_extras_exist",),
    "pip install numpy pillow ai-edge-litert": (
        "tests/test_device_install.py::test_predict_in_the_device_environment",
    ),
    "pip install --no-deps .": (
        "tests/test_device_install.py::test_predict_in_the_device_environment",
    ),
    "python -m keras_vit.train": (
        "tests/test_cli.py::test_train_and_evaluate_cli",
        "tests/test_cli.py::test_train_bad_input_is_one_line",
    ),
    "python -m keras_vit.evaluate": ("tests/test_cli.py::test_train_and_evaluate_cli",),
    "python -m export.tflite": ("tests/test_export_tflite.py::test_cli_prints_the_table",),
    "python -m export.evaluate_tflite": ("tests/test_export_tflite.py::test_evaluate_cli",),
    "python -m export.saved_model": (
        "tests/test_export_saved_model.py::test_cli_refuses_existing_output_and_bad_checkpoints",
    ),
    "python -m export.predict": (
        "tests/test_export_tflite.py::test_predict_runs_without_tensorflow",
        "tests/test_device_install.py::test_predict_in_the_device_environment",
    ),
    "python -m keras_vit.visualize": ("tests/test_visualize.py::test_cli_writes_every_plot",),
}


def python_blocks() -> list:
    return [b for path in (README, *DOCS) for b in blocks(path) if b.lang == "python"]


def readme_commands() -> list[str]:
    return [c for b in blocks(README) if b.lang == "bash" for c in shell_commands(b.source)]


def stand_in_size(size):
    """About a seventh of `size` (an int or a pair), in whole patches of 8, at least 2."""
    if isinstance(size, int):
        return 8 * max(2, round(size / 56))
    return tuple(stand_in_size(side) for side in size)


def stand_in_variant(name: str, image_size=224, **kwargs):
    """The named builder with the tiny architecture at a smaller size (see the docstring)."""
    builder = getattr(keras_vit, name)
    architecture = dict(STAND_IN_ARCHITECTURE)
    if "resnet_layers" in variant_config(name):
        architecture.update(STAND_IN_STEM)
    return builder(image_size=stand_in_size(image_size), **kwargs, **architecture)


def tiny_checkpoint(path: Path) -> Path:
    model = keras_vit.ViT(num_classes=1000, seed=3, **TINY)  # an ImageNet-1k head
    return checkpoints.save_npz(model, path)


def prepared(block, folder: Path) -> tuple[str, dict]:
    """The block's source with its stand-ins, and the namespace it runs in."""
    words = (block.marker or "").split()
    source, namespace = block.source, {"__name__": "__readme__"}
    if words[:1] == ["stand-in"]:
        what = words[1]
        if what in ("variants", "npz"):
            source = BUILDER_CALL.sub(r'stand_in_variant("\1", ', source)
            namespace.update(keras=keras, keras_vit=keras_vit, stand_in_variant=stand_in_variant)
            size = stand_in_size(224)
            rng = np.random.default_rng(0)
            namespace["pixels"] = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
        if what == "npz":
            (file,) = words[2:]
            tiny_checkpoint(folder / file)
            source = PUBLISHED_WEIGHTS.sub(f'weights="{file}"', source)
        elif what == "training":
            source = re.sub(r"\bepochs=\d+", "epochs=1", source)
            source = re.sub(
                r"\bmake_config\(([^,()]+),",
                r"make_config(\1, architecture=stand_in_architecture,",
                source,
            )
            namespace["stand_in_architecture"] = STAND_IN_TRAINING_ARCHITECTURE
        elif what == "model":
            rng = np.random.default_rng(0)
            raw = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
            namespace.update(
                model=keras_vit.ViT(num_classes=10, seed=0, **TINY),
                images=(raw.astype("float32") - 127.5) / 127.5,
                raw_image=raw[0],
            )
        elif what not in ("variants",):
            raise ValueError(f"{block.name}: unknown stand-in {what!r}")
    return source, namespace


def run_block(block, folder: Path, monkeypatch) -> dict:
    monkeypatch.chdir(folder)
    source, namespace = prepared(block, folder)
    exec(compile(source, block.name, "exec"), namespace)
    return namespace


def pending_branch(block) -> str | None:
    for name, branch in PENDING.items():
        if re.search(rf"\b{name}\b", block.source):
            return branch
    return None


def example_params():
    params = []
    for block in python_blocks():
        if block.marker == "quickstart":
            continue
        marks = []
        branch = pending_branch(block)
        if branch:
            marks.append(pytest.mark.xfail(strict=True, reason=f"API lands with branch {branch}"))
        params.append(pytest.param(block, id=block.name, marks=marks))
    return params


@pytest.mark.parametrize("block", example_params())
def test_python_block_runs(block, tmp_path, monkeypatch):
    run_block(block, tmp_path, monkeypatch)


def test_quickstart_learns(tmp_path, monkeypatch):
    (block,) = [b for b in python_blocks() if b.marker == "quickstart"]
    assert block.path == README
    assert "from_logits=True" in block.source
    namespace = run_block(block, tmp_path, monkeypatch)
    losses = namespace["model"].history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], f"the Quickstart did not learn: loss {losses}"
    probabilities = keras.ops.convert_to_numpy(namespace["probabilities"])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_a_probability_loss_on_logits_is_refused(tiny_config):
    # What the README says of `loss="sparse_categorical_crossentropy"` on a logits model.
    model = keras_vit.ViT(num_classes=10, seed=0, **tiny_config)
    with pytest.raises(ValueError, match="from_logits=True"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    softmax = keras_vit.ViT(num_classes=10, classifier_activation="softmax", **tiny_config)
    softmax.compile(optimizer="adam", loss="sparse_categorical_crossentropy")


LOGITS_AS_PROBABILITIES = re.compile(
    r"""loss\s*=\s*["']sparse_categorical_crossentropy["']"""
    r"|SparseCategoricalCrossentropy\((?![^)]*from_logits\s*=\s*True)[^)]*\)"
)


def documents_with_code() -> dict[str, str]:
    """The code of the README, the docs and the notebooks, by file."""
    code = {}
    for path in (README, *DOCS):
        code[str(path.relative_to(ROOT))] = "\n".join(b.source for b in blocks(path))
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        code[str(path.relative_to(ROOT))] = "\n".join(
            "".join(c["source"]) for c in cells if c["cell_type"] == "code"
        )
    return code


def test_no_example_trains_logits_with_a_probability_loss():
    offenders = {
        name: match.group(0)
        for name, text in documents_with_code().items()
        for match in [LOGITS_AS_PROBABILITIES.search(text)]
        if match
    }
    assert not offenders, f"the models output logits; use from_logits=True: {offenders}"


def test_the_logits_check_finds_the_old_quickstart():
    assert LOGITS_AS_PROBABILITIES.search('compile(loss="sparse_categorical_crossentropy")')
    assert LOGITS_AS_PROBABILITIES.search("keras.losses.SparseCategoricalCrossentropy()")
    assert not LOGITS_AS_PROBABILITIES.search(
        "keras.losses.SparseCategoricalCrossentropy(from_logits=True)"
    )


def test_every_readme_command_is_covered_by_a_test():
    found = {command_key(c) for c in readme_commands()}
    assert found - set(COVERED_BY) == set(), "README commands without a test in COVERED_BY"
    assert set(COVERED_BY) - found == set(), "COVERED_BY lists commands the README lacks"


def test_the_covering_tests_exist():
    for key, tests in COVERED_BY.items():
        for test in tests:
            file, function = test.split("::")
            tree = ast.parse((ROOT / file).read_text())
            names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
            assert function in names, f"{key!r} is filed under {test}, which does not exist"


def test_command_keys():
    assert command_key("python -m export.tflite run_dir/ --edgetpu") == "python -m export.tflite"
    assert command_key("make demo") == "make demo"
    assert command_key("pip install --no-deps .") == "pip install --no-deps ."
    assert shell_commands("a \\\n  b  # c\n\n# d\ne 'f g'\n") == ["a b", "e 'f g'"]


def make_targets() -> list[str]:
    return sorted({shlex.split(c)[1] for c in readme_commands() if c.startswith("make ")})


@pytest.mark.parametrize("target", make_targets())
def test_make_targets_exist(target):
    # A dry run prints the recipe without running it; an unknown target is an error.
    done = subprocess.run(
        ["make", "--dry-run", target], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


def test_make_test_fast_skips_the_slow_and_integration_tiers():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\ntest-fast:")[1].split("\n\n")[0]
    assert '-m "not slow and not integration"' in recipe


def test_ci_runs_make_test():
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make test" in [line.strip() for line in lines]


def test_install_extras_exist():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    extras = set(config["options.extras_require"])
    for command in readme_commands():
        words = shlex.split(command)
        if words[:3] == ["pip", "install", "-e"]:
            requested = re.fullmatch(r"\.(?:\[(\w+)\])?", words[3])
            assert requested, f"unexpected install target in {command!r}"
            assert requested[1] is None or requested[1] in extras, command
