"""The pieces every data source shares: examples, splits, pixel scaling, errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tensorflow as tf

Split = Literal["train", "validation", "test"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")

# The model's input: float32 RGB in [-1, 1], i.e. (pixel - 127.5) / 127.5 for uint8 pixels.
PIXEL_MEAN = 127.5
PIXEL_STD = 127.5

# Held-out fractions when a source lacks a split (see `keras_vit.data`'s table).
HOLDOUT_VALIDATION = 0.1
HOLDOUT_TRAIN_ONLY = {"train": 0.7, "validation": 0.1, "test": 0.2}


class DataError(ValueError):
    """A data source that cannot be used; the message is one line naming the culprit."""


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


def check_split(split: str) -> None:
    """Refuses a split name other than `"train"`, `"validation"`, `"test"`."""
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}. Expected one of: {', '.join(SPLITS)}")


def stratified_split(
    labels: np.ndarray, fractions: dict[str, float], seed: int
) -> dict[str, np.ndarray]:
    """A fixed stratified split: per class, a seeded permutation cut into parts.

    Each class's members are permuted with `seed`; the first `round(n * fractions["test"])`
    go to test, the next `round(n * fractions["validation"])` to validation and the rest
    to train. A missing fraction is 0.

    Args:
        labels: integer labels, one per example.
        fractions: `{"validation": ..., "test": ...}` (a "train" entry is ignored: train
            gets the remainder).
        seed: the permutation seed.

    Returns:
        Sorted example indices per split (`"train"`, `"validation"`, `"test"`).
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = round(len(members) * fractions.get("test", 0.0))
        n_val = round(len(members) * fractions.get("validation", 0.0))
        parts["test"].append(members[:n_test])
        parts["validation"].append(members[n_test : n_test + n_val])
        parts["train"].append(members[n_test + n_val :])
    return {
        split: np.sort(np.concatenate(chunks)).astype("int64") for split, chunks in parts.items()
    }


def resize_uint8(image, size: tuple[int, int]):
    """Any-size uint8 RGB image -> uint8 [H, W, 3] at `size` (bilinear, antialiased)."""
    resized = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def to_rgb(image):
    """uint8 [H, W, C] with C in {1, 3, 4} -> [H, W, 3] (grey repeated, alpha dropped)."""
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels == 1:
        return tf.image.grayscale_to_rgb(image)
    if channels == 4:
        return image[..., :3]
    # Unknown static channel count: decide per image.
    return tf.cond(
        tf.shape(image)[-1] == 1,
        lambda: tf.image.grayscale_to_rgb(image[..., :1]),
        lambda: image[..., :3],
    )
