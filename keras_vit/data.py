"""Data sources and input pipelines.

A source gives raw examples: an unbatched `tf.data.Dataset` of `(uint8 image
[H, W, 3], int32 label)` at the model's image size, plus the class names. Training code
turns those into batches scaled to [-1, 1] (`scale_images`), as the original ViT code
feeds its models; export code calibrates integer models on the same raw uint8 examples.

Sources:
- `"digits"`: scikit-learn's digits (1,797 8x8 grey images, 10 classes), the embedded
  real default; upscaled to RGB at the requested size, with a fixed stratified split.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tensorflow as tf

logger = logging.getLogger(__name__)

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")

# The model's input: float32 RGB in [-1, 1], i.e. (pixel - 127.5) / 127.5 for uint8 pixels.
PIXEL_MEAN = 127.5
PIXEL_STD = 127.5

# Fixed split of the digits data set: independent of any training seed, so every run,
# evaluation and export sees the same test images.
DIGITS_SPLIT_SEED = 0
DIGITS_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}


@dataclass(frozen=True)
class Examples:
    """Raw examples of one split.

    Attributes:
        dataset: unbatched `tf.data.Dataset` of `(uint8 [H, W, 3] image, int32 label)`.
        class_names: the class names, index = label.
        num_examples: number of examples in `dataset`.
    """

    dataset: tf.data.Dataset
    class_names: tuple[str, ...]
    num_examples: int


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """`224` or `(224, 224)` -> `(224, 224)`."""
    if isinstance(image_size, int):
        return image_size, image_size
    height, width = image_size
    return int(height), int(width)


def scale_images(images):
    """uint8 (or float 0..255) images -> float32 in [-1, 1], as the original ViT code."""
    return (tf.cast(images, tf.float32) - PIXEL_MEAN) / PIXEL_STD


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}. Expected one of: {', '.join(SPLITS)}")


def digits_split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed stratified train/validation/test split of the digits data set.

    Args:
        labels: the 1,797 digit labels.

    Returns:
        Sorted example indices per split: 70 % / 10 % / 20 % of each class.
    """
    rng = np.random.default_rng(DIGITS_SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(members) * DIGITS_FRACTIONS["test"])
        n_val = round(len(members) * DIGITS_FRACTIONS["validation"])
        parts["test"].append(members[:n_test])
        parts["validation"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    return {split: np.sort(np.concatenate(chunks)) for split, chunks in parts.items()}


def digits_arrays(split: Split, image_size: int | Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """One split of scikit-learn's digits as uint8 RGB images at `image_size`.

    The 8x8 images (values 0..16) are scaled to 0..255 and resized bilinearly.

    Returns:
        `(images uint8 [N, H, W, 3], labels int32 [N])`.
    """
    from sklearn.datasets import load_digits

    _check_split(split)
    digits = load_digits()
    index = digits_split_indices(digits.target)[split]
    small = digits.images[index].astype("float32") * (255.0 / 16.0)
    height, width = image_hw(image_size)
    resized = tf.image.resize(small[..., None], (height, width), method="bilinear")
    images = np.clip(np.round(resized.numpy()), 0, 255).astype("uint8")
    return np.repeat(images, 3, axis=-1), digits.target[index].astype("int32")


def load_examples(
    source: str,
    split: Split,
    image_size: int | Sequence[int],
) -> Examples:
    """Raw uint8 examples of one split of a data source, at the model's image size.

    Args:
        source: `"digits"`.
        split: `"train"`, `"validation"` or `"test"`.
        image_size: an int or `(height, width)`.

    Returns:
        `Examples`.
    """
    _check_split(split)
    if source == "digits":
        images, labels = digits_arrays(split, image_size)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        return Examples(dataset, tuple(str(d) for d in range(10)), len(labels))
    raise ValueError(f"Unknown dataset {source!r}. Expected 'digits'")
