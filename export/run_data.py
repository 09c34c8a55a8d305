"""The images of a checkpoint's own dataset that an export needs: calibration and test split."""

from __future__ import annotations

import logging

import numpy as np

from export.errors import ExportError
from keras_vit.run_dir import CONFIG_FILE, RunDir

logger = logging.getLogger(__name__)

DEFAULT_CALIBRATION_SAMPLES = 256


def normalised(images: np.ndarray, preprocessing: dict) -> np.ndarray:
    """uint8 images as a checkpoint's model takes them: `(pixels - mean) / std`, float32."""
    mean = np.asarray(preprocessing["mean"], np.float32)
    std = np.asarray(preprocessing["std"], np.float32)
    return (images.astype(np.float32) - mean) / std


def split_examples(checkpoint: RunDir, split: str):
    """The `keras_vit.data` examples of a split of the dataset the checkpoint was trained on.

    Raises:
        ExportError: the checkpoint names no dataset, or it cannot be loaded.
    """
    from keras_vit import data

    dataset = checkpoint.config.get("dataset")
    if not isinstance(dataset, dict) or not dataset.get("source"):
        raise ExportError(
            f"{checkpoint.path / CONFIG_FILE} names no dataset source, so there is no {split} data"
        )
    kwargs = {"data_dir": dataset["data_dir"]} if dataset.get("data_dir") else {}
    try:
        return data.load_examples(dataset["source"], split, checkpoint.image_size, **kwargs)
    except (ValueError, FileNotFoundError, OSError, TypeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ExportError(
            f"Cannot load the {split} split of dataset {dataset['source']!r}: {message}"
        ) from None


def as_arrays(dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(uint8 images, int32 labels)` of an unbatched `(image, label)` dataset."""
    if limit is not None:
        dataset = dataset.take(limit)
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    if not images:
        return np.zeros((0,), np.uint8), np.zeros((0,), np.int32)
    return np.stack(images).astype(np.uint8), np.asarray(labels, np.int32)


def calibration_images(checkpoint: RunDir, num_samples: int, seed: int = 0) -> np.ndarray:
    """`num_samples` uint8 images of the checkpoint's training split, shuffled with `seed`.

    Raises:
        ExportError: the checkpoint names no dataset, it cannot be loaded, or it is empty.
    """
    if num_samples < 1:
        raise ExportError(f"--calibration-samples must be at least 1, got {num_samples}")
    logger.info("Reading %d calibration images from the train split", num_samples)
    examples = split_examples(checkpoint, "train")
    shuffled = examples.dataset.shuffle(
        min(examples.num_examples, 10_000) or 1, seed=seed, reshuffle_each_iteration=False
    )
    images, _ = as_arrays(shuffled, num_samples)
    if len(images) == 0:
        raise ExportError(
            f"The train split of dataset {checkpoint.config['dataset']['source']!r} is empty: "
            "no calibration data"
        )
    return images
