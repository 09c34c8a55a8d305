import json

import numpy as np
import pytest
from helpers import write_checkpoint

import keras_vit
from keras_vit import artifacts, atomic, run_dir


def test_run_dir_roundtrip(tmp_path, tiny_config):
    model = keras_vit.ViT(num_classes=3, **tiny_config)
    write_checkpoint(tmp_path / "ckpt", model, ["a", "b", "c"])
    ckpt = run_dir.read_run_dir(tmp_path / "ckpt")
    assert ckpt.labels == ("a", "b", "c") and ckpt.image_size == (32, 32)
    restored = ckpt.load_model()
    images = np.zeros((1, 32, 32, 3), "float32")
    np.testing.assert_array_equal(restored(images), model(images))


def test_former_names_still_work(tmp_path, tiny_config):
    write_checkpoint(tmp_path / "ckpt", keras_vit.ViT(num_classes=2, **tiny_config), ["a", "b"])
    with pytest.warns(DeprecationWarning, match="read_run_dir"):
        old = artifacts.read_checkpoint(tmp_path / "ckpt")
    assert isinstance(old, run_dir.RunDir) and artifacts.CheckpointDir is run_dir.RunDir
    assert old == run_dir.read_run_dir(tmp_path / "ckpt")
    for name in artifacts.__all__:
        owner = run_dir if hasattr(run_dir, name) else atomic
        assert getattr(artifacts, name) is getattr(owner, name), name


def test_read_run_dir_errors(tmp_path, tiny_config):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_dir.read_run_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"missing model\.keras, config\.json, labels\.txt"):
        run_dir.read_run_dir(tmp_path / "empty")
    model = keras_vit.ViT(num_classes=3, **tiny_config)
    write_checkpoint(tmp_path / "ckpt", model, ["a", "b"])
    with pytest.raises(ValueError, match="has 2 labels but the model has 3 classes"):
        run_dir.read_run_dir(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a keras-vit run directory config"):
        run_dir.read_run_dir(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "config.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        run_dir.read_run_dir(tmp_path / "ckpt")


def test_atomic_directory_refuses_existing_and_cleans_up(tmp_path):
    out = tmp_path / "out"
    with artifacts.atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(FileExistsError, match="already exists"):
        with artifacts.atomic_directory(out):
            pass
    with pytest.raises(RuntimeError):
        with artifacts.atomic_directory(out, overwrite=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "a.txt").read_text() == "1"
    with artifacts.atomic_directory(out, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_writes_get_default_permissions(tmp_path):
    import os

    mask = os.umask(0o022)
    try:
        artifacts.atomic_write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(mask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
