import numpy as np
import pytest

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
