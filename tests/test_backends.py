"""The model core on the JAX backend: same logits as TensorFlow, loads, saves and trains.

Export and the `tf.data` pipeline stay TensorFlow; the layers and model use `keras.ops`
only, so the model itself runs on any Keras 3 backend. The checks run in a subprocess
because the backend is chosen when Keras is first imported.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from fixtures import synthetic_checkpoints as synthetic

import keras_vit
from keras_vit.checkpoints import load_npz

TESTS = Path(__file__).resolve().parent
SCRIPT = TESTS / "backend_scripts" / "model_core.py"


def run_model_core(backend: str, tmp_path: Path) -> np.ndarray:
    out = tmp_path / f"{backend}.npy"
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(TESTS.parent)}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), backend],
        cwd=TESTS.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]
    return np.load(out)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_model_core_on_jax_matches_tensorflow(tmp_path):
    jax_logits = run_model_core("jax", tmp_path)
    model = keras_vit.ViT(**synthetic.TINY_TOKEN)
    load_npz(model, TESTS / "fixtures" / "checkpoints" / "tiny_token.npz")
    info = {"seed": 11, "size": (32, 32)}
    images = synthetic.images(info["seed"], jax_logits.shape[0], *info["size"])
    tf_logits = keras.ops.convert_to_numpy(model(images, training=False))
    assert np.abs(jax_logits - tf_logits).max() < 1e-5
