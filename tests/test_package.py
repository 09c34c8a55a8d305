"""The package imports lazily: TensorFlow-free modules stay TensorFlow-free."""

import subprocess
import sys
from pathlib import Path

import keras_vit

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import sys
import keras_vit
import keras_vit.imagenet, keras_vit.validation, keras_vit.variant_table
assert keras_vit.__version__
heavy = sorted(m for m in ("tensorflow", "keras", "jax") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_import_keras_vit_does_not_import_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert result.stdout.strip() == "none", result.stdout + result.stderr


def test_public_names_resolve_and_are_listed():
    for name in keras_vit.__all__:
        assert getattr(keras_vit, name) is not None
    assert {"ViT", "ViT_B16", "VisionTransformer", "VARIANTS", "variant_config"} <= set(
        dir(keras_vit)
    )
    assert {"layers", "checkpoints", "from_npz", "__version__"} <= set(keras_vit.__all__)
    assert keras_vit.checkpoints.load_npz is keras_vit.checkpoints.loading.load_npz
    assert keras_vit.ViT_B16.__module__ == "keras_vit.variants"
    try:
        keras_vit.not_a_name  # noqa: B018
    except AttributeError as error:
        assert "not_a_name" in str(error)
    else:
        raise AssertionError("expected AttributeError")


LOAD_AFTER_KERAS = """
import sys
import keras
import numpy as np
import keras_vit

path = sys.argv[1]
keras.saving.load_model(path, safe_mode=True)  # no keras_vit name touched: registered at import
print("loaded")
"""


def test_import_after_keras_registers_the_layers_for_load_model(tmp_path, tiny_config):
    path = tmp_path / "tiny.keras"
    keras_vit.ViT(num_classes=3, **tiny_config).save(path)
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AFTER_KERAS, str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.stdout.strip() == "loaded", result.stderr[-2000:]
