"""SavedModel export: uint8 images in, probabilities / class ids / names out, labels asset."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import write_checkpoint

import keras_vit
from export import saved_model

LABELS = ["cat", "dog", "bird"]


def test_serving_signature(tmp_path, tiny_config, rng):
    model = keras_vit.ViT(num_classes=3, **tiny_config)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.2, size=weight.shape).astype("float32"))
    write_checkpoint(tmp_path / "ckpt", model, LABELS)
    out = saved_model.export_saved_model(tmp_path / "ckpt", tmp_path / "sm")
    assert (out / "assets" / "labels.txt").read_text().split() == LABELS

    serving = tf.saved_model.load(str(out)).signatures["serving_default"]
    (spec,) = serving.structured_input_signature[1].values()
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 32, 32, 3]
    images = rng.integers(0, 256, size=(4, 32, 32, 3)).astype("uint8")
    outputs = serving(images=tf.constant(images))
    expected = keras.ops.softmax(model((images.astype("float32") - 127.5) / 127.5), axis=-1)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    ids = outputs["class_ids"].numpy()
    np.testing.assert_array_equal(ids, np.argmax(expected, axis=-1))
    assert [name.decode() for name in outputs["class_names"].numpy()] == [LABELS[i] for i in ids]


def test_cli_refuses_existing_output_and_bad_checkpoints(tmp_path, tiny_config, capsys):
    model = keras_vit.ViT(num_classes=3, **tiny_config)
    write_checkpoint(tmp_path / "ckpt", model, LABELS)
    assert saved_model.main([str(tmp_path / "ckpt")]) == 0
    assert (tmp_path / "ckpt" / "saved_model" / "saved_model.pb").is_file()
    capsys.readouterr()
    assert saved_model.main([str(tmp_path / "ckpt")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: Output {tmp_path / 'ckpt' / 'saved_model'} already exists; "
        "pass --force to overwrite it"
    )
    assert saved_model.main([str(tmp_path / "ckpt"), "--force"]) == 0
    assert saved_model.main([str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.strip().endswith("does not exist")


def test_features_only_model_is_refused(tmp_path, tiny_config):
    model = keras_vit.ViT(include_top=False, **tiny_config)
    write_checkpoint(tmp_path / "ckpt", model, [])
    with pytest.raises(ValueError, match="has no classification head"):
        saved_model.export_saved_model(tmp_path / "ckpt", tmp_path / "sm")
    assert not (tmp_path / "sm").exists()
