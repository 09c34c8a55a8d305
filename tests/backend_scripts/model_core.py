"""The model-core checks on whatever Keras backend `KERAS_BACKEND` selects.

Run by `tests/test_backends.py` in a subprocess (the backend is fixed at import time):
forward against the Flax goldens, `.npz` load/save, position-embedding resize, a few `fit`
steps, a `.keras` round trip and the input checks. Writes the native logits to argv[1].
"""

import json
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for the fixtures package

from fixtures import synthetic_checkpoints as synthetic  # noqa: E402

import keras_vit  # noqa: E402
from keras_vit.checkpoints import load_npz, save_npz  # noqa: E402

FIXTURES = HERE.parent / "fixtures" / "checkpoints"
GOLDENS = np.load(FIXTURES / "goldens.npz", allow_pickle=False)
META = json.loads(str(GOLDENS["meta"]))


def logits(model, images):
    return keras.ops.convert_to_numpy(model(images, training=False))


def golden_case(case, model):
    info = META["cases"][case]
    images = synthetic.images(info["image_seed"], META["images_per_case"], *info["image_size"])
    out = logits(model, images)
    diff = float(np.abs(out - GOLDENS[f"{case}/logits"]).max())
    assert diff < 1e-4, f"{case}: {diff}"
    return out


def main(out_path: str) -> None:
    assert keras.backend.backend() == sys.argv[2], keras.backend.backend()
    # Forward against the goldens; the same through from_npz.
    model = keras_vit.ViT(**synthetic.TINY_TOKEN)
    load_npz(model, FIXTURES / "tiny_token.npz")
    native = golden_case("tiny_token/native", model)
    golden_case("tiny_token/native", keras_vit.from_npz(FIXTURES / "tiny_token.npz"))
    # Position-embedding resize on load.
    wide = keras_vit.ViT(**dict(synthetic.TINY_TOKEN, image_size=(48, 48)))
    load_npz(wide, FIXTURES / "tiny_token.npz")
    golden_case("tiny_token/grid6x6", wide)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # save_npz -> load_npz is exact.
        path = save_npz(model, tmp / "saved.npz")
        again = keras_vit.ViT(**synthetic.TINY_TOKEN)
        load_npz(again, path)
        images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
        np.testing.assert_array_equal(logits(again, images), logits(model, images))
        # A few fit steps learn with a from_logits loss.
        small = keras_vit.ViT(**dict(synthetic.TINY_TOKEN, num_classes=3), seed=0)
        small.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        train = np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
        history = small.fit(train, np.arange(8) % 3, epochs=5, batch_size=8, verbose=0)
        losses = history.history["loss"]
        assert losses[-1] < losses[0] - 0.05, losses
        # .keras round trip in safe mode.
        small.save(tmp / "model.keras")
        restored = keras.saving.load_model(tmp / "model.keras", safe_mode=True)
        np.testing.assert_array_equal(logits(restored, train), logits(small, train))
    # Input checks: integer images refused by a float model, taken with preprocessing.
    pixels = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    try:
        model(pixels)
    except ValueError as error:
        assert "include_preprocessing=True" in str(error)
    else:
        raise AssertionError("uint8 images were accepted by a float model")
    pre = keras_vit.ViT(**synthetic.TINY_TOKEN, include_preprocessing=True)
    pre.set_weights(model.get_weights())
    scaled = (pixels.astype("float32") - 127.5) / 127.5
    np.testing.assert_allclose(logits(pre, pixels), logits(model, scaled), atol=1e-6)
    np.save(out_path, native)
    print("ok")


if __name__ == "__main__":
    main(sys.argv[1])
