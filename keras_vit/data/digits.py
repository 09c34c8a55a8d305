"""scikit-learn's digits: the embedded default data set (1,797 8x8 grey images, 10 classes).

Upscaled to RGB at the requested size, with a fixed stratified 70 / 10 / 20 % train /
validation / test split that no training seed changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from keras_vit.data.base import Examples, Split, check_split, image_hw, stratified_split

# Fixed split of the digits data set: independent of any training seed, so every run,
# evaluation and export sees the same test images.
DIGITS_SPLIT_SEED = 0
DIGITS_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
DIGITS_CLASS_NAMES = tuple(str(d) for d in range(10))


def digits_split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed stratified train/validation/test split of the digits data set.

    Args:
        labels: the 1,797 digit labels.

    Returns:
        Sorted example indices per split: 70 % / 10 % / 20 % of each class.
    """
    return stratified_split(labels, DIGITS_FRACTIONS, DIGITS_SPLIT_SEED)


def digits_arrays(split: Split, image_size: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One split of scikit-learn's digits as uint8 RGB images at `image_size`.

    The 8x8 images (values 0..16) are scaled to 0..255 and resized bilinearly.

    Returns:
        `(images uint8 [N, H, W, 3], labels int32 [N])`.
    """
    from sklearn.datasets import load_digits

    check_split(split)
    digits = load_digits()
    index = digits_split_indices(digits.target)[split]
    small = digits.images[index].astype("float32") * (255.0 / 16.0)
    height, width = image_hw(image_size)
    resized = tf.image.resize(small[..., None], (height, width), method="bilinear")
    images = np.clip(np.round(resized.numpy()), 0, 255).astype("uint8")
    return np.repeat(images, 3, axis=-1), digits.target[index].astype("int32")


def digits_examples(split: Split, size: tuple[int, int]) -> Examples:
    """One split of digits as `Examples` (see `digits_arrays`)."""
    images, labels = digits_arrays(split, size)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return Examples(dataset, DIGITS_CLASS_NAMES, len(labels))
