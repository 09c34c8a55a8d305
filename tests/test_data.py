import re

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import write_image_folder

from keras_vit import data


def test_digits_split_is_fixed_stratified_and_disjoint():
    from sklearn.datasets import load_digits

    labels = load_digits().target
    parts = data.digits_split_indices(labels)
    sizes = {k: len(v) for k, v in parts.items()}
    assert sum(sizes.values()) == 1797
    assert 340 <= sizes["test"] <= 380 and 160 <= sizes["validation"] <= 200
    assert not set(parts["train"]) & set(parts["test"])
    assert not set(parts["validation"]) & set(parts["test"])
    for split in data.SPLITS:
        counts = np.bincount(labels[parts[split]], minlength=10)
        share = counts / counts.sum()
        assert np.abs(share - 0.1).max() < 0.02, split
    again = data.digits_split_indices(labels)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_digits_examples_are_uint8_rgb_at_image_size():
    examples = data.load_examples("digits", "test", (24, 16))
    assert examples.class_names == tuple("0123456789")
    images, labels = next(iter(examples.dataset.batch(examples.num_examples)))
    assert images.shape == (examples.num_examples, 24, 16, 3) and images.dtype == "uint8"
    assert labels.dtype == "int32" and set(labels.numpy()) == set(range(10))
    assert images.numpy().max() > 200
    np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_scale_images_maps_to_minus_one_one():
    out = data.scale_images(np.array([0, 127.5, 255], "float32")).numpy()
    np.testing.assert_allclose(out, [-1.0, 0.0, 1.0])


def test_unknown_source_and_split():
    with pytest.raises(ValueError, match="Unknown split 'dev'"):
        data.load_examples("digits", "dev", 32)
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        data.load_examples("nope", "train", 32)


# --- folders -------------------------------------------------------------------------


def _all(examples):
    images, labels = zip(*[(x.numpy(), int(y)) for x, y in examples.dataset], strict=True)
    return np.stack(images), np.array(labels)


def test_folder_flat_split_is_fixed_stratified_and_complete(tmp_path):
    write_image_folder(tmp_path, classes=("a", "b", "c"), per_class=10)
    parts = {s: data.load_examples(str(tmp_path), s, (8, 6)) for s in data.SPLITS}
    assert {s: p.num_examples for s, p in parts.items()} == {
        "train": 21,
        "validation": 3,
        "test": 6,
    }
    assert parts["train"].class_names == ("a", "b", "c")
    _, files = data.folder_files(tmp_path)
    flat = [path for split in data.SPLITS for path, _ in files[split]]
    assert len(flat) == len(set(flat)) == 30
    assert data.folder_files(tmp_path)[1] == files  # fixed, no training seed involved
    images, labels = _all(parts["test"])
    assert images.shape == (6, 8, 6, 3) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [2, 2, 2]
    # Brightness identifies the class (helpers.write_image_folder), so labels follow folders.
    assert np.all(np.diff([images[labels == k].mean() for k in range(3)]) > 40)


def test_folder_with_split_subfolders(tmp_path):
    write_image_folder(tmp_path / "train", per_class=10)
    write_image_folder(tmp_path / "test", per_class=2)
    sizes = {s: data.load_examples(str(tmp_path), s, 8).num_examples for s in data.SPLITS}
    # No val/: 10 % of train/ (stratified) is held out for validation.
    assert sizes == {"train": 18, "validation": 2, "test": 4}
    write_image_folder(tmp_path / "val", per_class=3)
    sizes = {s: data.load_examples(str(tmp_path), s, 8).num_examples for s in data.SPLITS}
    assert sizes == {"train": 20, "validation": 6, "test": 4}


def test_folder_formats_and_colour_modes_become_rgb(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (9, 7), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((9, 7), 100, np.uint8)])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(rgb).save(tmp_path / "a" / "rgb.PNG")
    Image.fromarray(grey).save(tmp_path / "a" / "grey.bmp")
    Image.fromarray(rgba).save(tmp_path / "a" / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "b" / "palette.gif")
    Image.fromarray(rgb).save(tmp_path / "b" / "photo.jpeg", quality=95)
    Image.fromarray(grey).convert("P").save(tmp_path / "b" / "palette.bmp")
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    np.testing.assert_array_equal(data.read_rgb(tmp_path / "a" / "grey.bmp"), np.dstack([grey] * 3))
    np.testing.assert_array_equal(data.read_rgb(tmp_path / "a" / "rgba.png"), rgb)
    assert data.read_rgb(tmp_path / "b" / "palette.bmp").shape == (9, 7, 3)
    _, files = data.folder_files(tmp_path)
    assert sum(len(v) for v in files.values()) == 6  # notes.txt ignored
    examples = data.load_examples(str(tmp_path), "train", (9, 7))
    images, _ = _all(examples)
    assert images.shape[1:] == (9, 7, 3)
    # Same size: the resize is the identity, so decoded pixels come through unchanged.
    decoded = {tuple(data.read_rgb(p).ravel()[:20]) for p, _ in files["train"]}
    assert {tuple(image.ravel()[:20]) for image in images} == decoded


def test_folder_skips_corrupt_files_with_a_counted_warning(tmp_path, caplog):
    write_image_folder(tmp_path, per_class=9)
    bad = [tmp_path / "cat" / "broken.jpg", tmp_path / "dog" / "empty.png"]
    bad[0].write_bytes(b"\xff\xd8\xff\xe0 truncated")
    bad[1].write_bytes(b"")
    _, files = data.folder_files(tmp_path)
    with caplog.at_level("WARNING", logger="keras_vit.data"):
        counts = {s: data.load_examples(str(tmp_path), s, 8).num_examples for s in data.SPLITS}
    assert sum(counts.values()) == 18  # 20 files listed, 2 skipped
    for split in data.SPLITS:
        listed = len(files[split])
        skipped = sum(str(path) in {p for p, _ in files[split]} for path in bad)
        assert counts[split] == listed - skipped
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert (
        messages.count("Skipped 1 unreadable image file")
        + 2 * messages.count("Skipped 2 unreadable image files")
        == 2
    )
    assert all(str(path) in messages for path in bad)


@pytest.mark.parametrize(
    "layout, message",
    [
        ({}, "has no class sub-folders"),
        ({"only": 3}, "has a single class ('only')"),
        ({"a": 2, "b": 0}, "has no images"),
    ],
)
def test_folder_errors_are_one_line(tmp_path, layout, message):
    for name, count in layout.items():
        write_image_folder(tmp_path, classes=(name,), per_class=count)
        (tmp_path / name).mkdir(exist_ok=True)
    with pytest.raises(data.DataError, match=re.escape(message)) as info:
        data.load_examples(str(tmp_path), "train", 8)
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_folder_scan_logs_progress(tmp_path, monkeypatch, caplog):
    from keras_vit.data import folders

    write_image_folder(tmp_path, per_class=4)
    monkeypatch.setattr(folders, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level("INFO", logger="keras_vit.data"):
        examples = data.load_examples(str(tmp_path), "train", 8)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("Checking images of the train split") for m in messages)
    assert f"Checked {examples.num_examples} images of the train split of {tmp_path}" in messages


def test_class_without_readable_training_images_is_refused(tmp_path):
    write_image_folder(tmp_path, classes=("cat", "dog"), per_class=6)
    for path in (tmp_path / "dog").iterdir():
        path.write_bytes(b"not an image")
    with pytest.raises(data.DataError, match="has no readable training images") as info:
        data.load_examples(str(tmp_path), "train", 8)
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "dog") in message


@pytest.mark.parametrize("name", ["two\nlines", "carriage\rreturn", " padded", "sep\u2028x"])
def test_class_names_labels_txt_cannot_hold_are_refused(tmp_path, name):
    write_image_folder(tmp_path, classes=("cat", name), per_class=2)
    with pytest.raises(data.DataError, match=r"labels\.txt") as info:
        data.folder_files(tmp_path)
    assert len(str(info.value).splitlines()) == 1 and repr(name) in str(info.value)


def test_missing_folder_and_misplaced_splits(tmp_path):
    with pytest.raises(data.DataError, match=r"Image folder .*nope does not exist"):
        data.load_examples(str(tmp_path / "nope"), "train", 8)
    write_image_folder(tmp_path / "val", per_class=2)
    with pytest.raises(data.DataError, match="no train/"):
        data.load_examples(str(tmp_path), "train", 8)
    write_image_folder(tmp_path / "train", per_class=2)
    write_image_folder(tmp_path / "test", classes=("cat", "cow"), per_class=1)
    with pytest.raises(data.DataError, match="cow is not a class of"):
        data.load_examples(str(tmp_path), "test", 8)


# --- tensorflow-datasets -------------------------------------------------------------


class KerasVitTinyTfds(tfds.core.GeneratorBasedBuilder):
    """A tiny tfds data set with grey images of varying size, built offline in tmp_path."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [  # noqa: RUF012
        tfds.core.BuilderConfig(name=name) for name in ("all", "train_test", "train_val", "train")
    ]

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 1)),
                    "label": tfds.features.ClassLabel(names=["zero", "one", "two"]),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        splits = {"train": 40, "validation": 10, "test": 12}
        wanted = {
            "all": ("train", "validation", "test"),
            "train_test": ("train", "test"),
            "train_val": ("train", "validation"),
            "train": ("train",),
        }[self.builder_config.name]
        return {s: self._generate_examples(s, splits[s]) for s in wanted}

    def _generate_examples(self, split, count):
        rng = np.random.default_rng(len(split))
        for i in range(count):
            shape = (10 + i % 3, 12, 1)
            yield i, {"image": rng.integers(0, 256, shape, dtype=np.uint8), "label": i % 3}


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tfds")
    for config in ("all", "train_test", "train_val", "train"):
        tfds.builder(f"keras_vit_tiny_tfds/{config}", data_dir=str(root)).download_and_prepare()
    return root


@pytest.mark.parametrize(
    "config, sizes",
    [
        ("all", {"train": 40, "validation": 10, "test": 12}),
        ("train_test", {"train": 36, "validation": 4, "test": 12}),
        ("train_val", {"train": 36, "validation": 4, "test": 10}),
        ("train", {"train": 28, "validation": 4, "test": 8}),
    ],
)
def test_tfds_split_rule(tfds_dir, config, sizes):
    name = f"keras_vit_tiny_tfds/{config}"
    got = {}
    for split in data.SPLITS:
        examples = data.load_examples(name, split, (8, 6), data_dir=tfds_dir)
        images, _ = _all(examples)
        assert images.shape[1:] == (8, 6, 3) and images.dtype == np.uint8
        np.testing.assert_array_equal(images[..., 0], images[..., 1])  # grey -> RGB
        assert examples.class_names == ("zero", "one", "two")
        assert len(images) == examples.num_examples
        got[split] = examples.num_examples
    assert got == sizes


def test_tfds_train_size_and_adapted_defaults(tfds_dir, tmp_path):
    from keras_vit import training

    name = "keras_vit_tiny_tfds/train_test"
    size = data.tfds_train_size(name, tfds_dir)
    assert size == data.load_examples(name, "train", 8, data_dir=tfds_dir).num_examples
    assert data.tfds_train_size(name, tmp_path) is None  # not downloaded: unknown, no download
    assert not any(tmp_path.iterdir())
    adapted = training.make_config(name, data_dir=tfds_dir)
    assert adapted.batch_size == size // training.MIN_STEPS_PER_EPOCH
    assert adapted.augmentation["mixup_alpha"] == 0
    unknown = training.make_config(name, data_dir=tmp_path)
    assert unknown.batch_size == training.RECIPES["scratch"].batch_size


def test_tfds_split_specs_table():
    assert data.tfds_split_specs(["train", "test"]) == {
        "train": "train[:90%]",
        "validation": "train[90%:]",
        "test": "test",
    }
    with pytest.raises(data.DataError, match="no 'train' split"):
        data.tfds_split_specs(["test"])


def test_tfds_download_failure_is_one_line(tmp_path, monkeypatch):
    def offline(self, *args, **kwargs):
        raise ConnectionError("Could not resolve host: example\nmore detail")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline)
    with pytest.raises(data.DataError, match="Could not download tensorflow-datasets") as info:
        data.load_examples("keras_vit_tiny_tfds/all", "train", 8, data_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_tfds_unknown_version_or_config_is_one_line(tmp_path):
    for name, cause in (
        ("mnist:9.9.9", "cannot be loaded at version 9.9.9"),
        ("mnist/nope", "BuilderConfig nope not found"),
    ):
        with pytest.raises(
            data.DataError, match=re.escape(f"tensorflow-datasets {name!r}")
        ) as info:
            data.load_examples(name, "train", 8, data_dir=tmp_path)
        assert cause in str(info.value) and "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())  # refused before any download


def test_source_kinds():
    assert data.source_kind("digits") == "digits"
    assert data.source_kind("cifar10") == "tfds"
    assert data.source_kind("oxford_flowers102:2.*.*") == "tfds"
    with pytest.raises(data.DataError, match="Unknown dataset 'cifar11'"):
        data.source_kind("cifar11")
    with pytest.raises(data.DataError, match=re.escape("Image folder ./missing/ does not exist")):
        data.source_kind("./missing/")


# --- pipelines -----------------------------------------------------------------------


def _batches(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


@pytest.mark.parametrize(
    "augmentation",
    [
        None,
        data.Augmentation(crop_area=(0.5, 1.0), flip=True, rotation_degrees=20),
        data.Augmentation(crop_area=None, flip=False, randaugment_ops=2),
        data.Augmentation(crop_area=None, flip=False, mixup_alpha=0.8, cutmix_alpha=1.0),
    ],
    ids=["none", "crop_flip_rotation", "randaugment", "mixup_cutmix"],
)
def test_training_batches_are_scaled_seeded_and_reproducible(augmentation):
    examples = data.load_examples("digits", "validation", 16)
    make = lambda seed: data.training_batches(  # noqa: E731
        examples, 64, seed=seed, augmentation=augmentation
    )
    pipeline = make(3)
    first = _batches(pipeline)
    assert [x.shape for x, _ in first] == [(64, 16, 16, 3), (64, 16, 16, 3), (51, 16, 16, 3)]
    images = np.concatenate([x for x, _ in first])
    labels = np.concatenate([y for _, y in first])
    assert images.dtype == np.float32 and -1.0 <= images.min() and images.max() <= 1.0
    assert labels.shape == (179, 10)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-5)
    again = _batches(make(3))
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    # The next epoch of the same pipeline is reshuffled and re-augmented.
    assert not np.array_equal(first[0][0], _batches(pipeline)[0][0])
    other = np.concatenate([x for x, _ in _batches(make(4))])
    assert not np.array_equal(images, other)
    if augmentation is None:
        # Shuffling only: the same images, scaled, in another order.
        plain, _ = _all(examples)
        expected = np.sort(((plain.astype("float32") - 127.5) / 127.5).reshape(179, -1), axis=0)
        np.testing.assert_allclose(np.sort(images.reshape(179, -1), axis=0), expected)
    if augmentation is not None and augmentation.mixup_alpha:
        assert (labels.max(axis=1) < 0.999).mean() > 0.5  # soft labels


def test_eval_batches_keep_order():
    examples = data.load_examples("digits", "test", 8)
    images, labels = zip(*_batches(data.eval_batches(examples, 100)), strict=True)
    plain, plain_labels = _all(examples)
    np.testing.assert_array_equal(np.concatenate(labels), plain_labels)
    np.testing.assert_allclose(np.concatenate(images), data.scale_images(plain).numpy())
    _, one_hot = next(iter(data.eval_batches(examples, 4, one_hot=True)))
    np.testing.assert_array_equal(one_hot.numpy().argmax(1), plain_labels[:4])


def test_random_resized_crop_stays_inside_the_image():
    image = np.arange(16 * 16 * 3, dtype="float32").reshape(16, 16, 3)
    for seed in range(5):
        out = data.random_resized_crop(image, [seed, 0], (0.25, 0.5), (0.75, 1.33)).numpy()
        assert out.shape == (16, 16, 3)
        assert image.min() <= out.min() and out.max() <= image.max()
        assert not np.array_equal(out, image)


def test_augmentation_validation():
    for key in ("mixup_alpha", "cutmix_alpha", "rotation_degrees", "randaugment_magnitude"):
        for value in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match=f"Expected `{key}` to be a finite number"):
                data.Augmentation(**{key: value})
    with pytest.raises(ValueError, match="crop_area"):
        data.Augmentation(crop_area=(0.5, 1.5))
    with pytest.raises(ValueError, match="mixup_alpha"):
        data.Augmentation(mixup_alpha=-1)
