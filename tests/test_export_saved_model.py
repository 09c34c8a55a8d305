"""SavedModel export: uint8 images in, probabilities / class ids / names out, labels asset."""

import io
import os
import re
import stat
import tempfile
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import write_checkpoint

import keras_vit
from export import output_folder, saved_model
from keras_vit.run_dir import RunModelError, read_run_dir

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


@pytest.fixture
def run_dir(tmp_path, tiny_config):
    model = keras_vit.ViT(num_classes=3, **tiny_config)
    write_checkpoint(tmp_path / "ckpt", model, LABELS)
    return tmp_path / "ckpt"


def test_wrong_image_size_is_a_clear_error(run_dir, tmp_path):
    out = saved_model.export_saved_model(run_dir, tmp_path / "sm")
    serving = tf.saved_model.load(str(out)).signatures["serving_default"]
    # 64x64 holds exactly four 32x32 images' pixels: it must not become four rows.
    for size in (64, 48):
        with pytest.raises(tf.errors.InvalidArgumentError, match="not compatible with expected"):
            serving(images=tf.zeros((1, size, size, 3), tf.uint8))


def _contents(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def test_force_replaces_only_an_export_folder(run_dir, tmp_path, capsys):
    before = _contents(run_dir)
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("three years of work")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("notes")
    for output, expected in [
        (run_dir, "is the run directory being exported or a folder containing it"),
        (tmp_path, "is the run directory being exported or a folder containing it"),
        (foreign, "--force replaces only a folder written by a keras-vit export"),
        (a_file, "exists and is not a folder"),
    ]:
        assert saved_model.main([str(run_dir), "--output", str(output), "--force"]) == 1
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err
    assert _contents(run_dir) == before
    assert (foreign / "thesis.txt").read_text() == "three years of work"
    assert a_file.read_text() == "notes"
    # Its own export folder is replaced, keeping the marker that says so.
    out = tmp_path / "sm"
    assert saved_model.main([str(run_dir), "--output", str(out)]) == 0
    assert saved_model.main([str(run_dir), "--output", str(out), "--force"]) == 0
    assert output_folder.is_export_folder(out) and (out / "saved_model.pb").is_file()
    assert not (out / ".labels").exists()


def test_export_folder_mode_and_stale_temporaries(run_dir, tmp_path, monkeypatch):
    system_tmp = tmp_path / "system_tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    out = tmp_path / "sm"
    # What a killed export leaves beside its output; a foreign folder of the same shape stays.
    stale = tmp_path / ".sm.abcd1234.tmp"
    stale.mkdir()
    (stale / output_folder.MARKER_FILE).write_text("{}")
    (stale / "saved_model.pb").write_bytes(b"half")
    empty = tmp_path / ".sm.zz_z9876.tmp"
    empty.mkdir()
    foreign = tmp_path / ".sm.qwertyui.tmp"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("not ours")
    saved_model.export_saved_model(run_dir, out)
    assert not stale.exists() and not empty.exists()
    assert (foreign / "keep.txt").is_file()
    assert list(system_tmp.iterdir()) == []  # no temporary work outside the output's folder
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask


def _bad_model_files(run_dir, tmp_path):
    """`model.keras` variants that cannot be exported, each with the cause expected."""
    good = (run_dir / "model.keras").read_bytes()
    variants = {
        "truncated": (good[:2000], "truncated or not a Keras archive"),
        "text": (b"hello", "truncated or not a Keras archive"),
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(good)) as src, zipfile.ZipFile(buffer, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data[: len(data) // 2] if name.endswith(".h5") else data)
    variants["weights"] = (buffer.getvalue(), "its weights are truncated or corrupt")
    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "plain.keras")
    variants["plain"] = ((tmp_path / "plain.keras").read_bytes(), "holds a Functional model")

    @keras.saving.register_keras_serializable(package="keras_vit_tests")
    class Unregistered(keras.layers.Layer):
        def call(self, x):
            return x

    keras.Model(inputs, Unregistered()(inputs)).save(tmp_path / "custom.keras")
    keras.saving.get_custom_objects().pop("keras_vit_tests>Unregistered")
    variants["custom"] = ((tmp_path / "custom.keras").read_bytes(), "'Unregistered'")
    return variants


def test_bad_model_keras_is_one_line_naming_the_file(run_dir, tmp_path, capsys):
    for name, (content, cause) in _bad_model_files(run_dir, tmp_path).items():
        (run_dir / "model.keras").write_bytes(content)
        with pytest.raises(RunModelError, match=re.escape(cause)):
            read_run_dir(run_dir).load_model()
        assert saved_model.main([str(run_dir), "--output", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: Cannot load {run_dir / 'model.keras'}: "), err
        assert cause in err and "\n" not in err
        assert not (tmp_path / name).exists()
