"""tensorflow-datasets sources: any tfds image classification data set, by name.

A name may carry a config and a version (`"cifar10"`, `"oxford_flowers102"`,
`"mnist:3.*.*"`); the data is read from `data_dir` (tfds' default `~/tensorflow_datasets`
if None) and downloaded there first when missing. Splits follow the table of
`keras_vit.data`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from keras_vit.data.base import (
    HOLDOUT_TRAIN_ONLY,
    HOLDOUT_VALIDATION,
    DataError,
    Examples,
    resize_uint8,
    to_rgb,
)
from keras_vit.validation import first_line

logger = logging.getLogger(__name__)

TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.+-]+)?(:[0-9*]+\.[0-9*]+\.[0-9*]+)?$")


def is_tfds_name(source: str) -> bool:
    """Whether `source` names a data set tensorflow-datasets knows (no download)."""
    if not TFDS_NAME.match(source):
        return False
    import tensorflow_datasets as tfds

    name = source.split(":")[0].split("/")[0]
    return name in tfds.list_builders(with_community_datasets=False)


def tfds_split_specs(available: Sequence[str]) -> dict[str, str]:
    """Maps our three splits onto a tfds data set's splits (the table of `keras_vit.data`).

    Args:
        available: the data set's split names.

    Returns:
        `{"train": spec, "validation": spec, "test": spec}` in tfds' split syntax.

    Raises:
        DataError: the data set has no train split.
    """
    if "train" not in available:
        raise DataError(f"The data set has no 'train' split (it has: {', '.join(available)})")
    has_val, has_test = "validation" in available, "test" in available
    keep = round(100 * (1 - HOLDOUT_VALIDATION))
    if has_val and has_test:
        return {"train": "train", "validation": "validation", "test": "test"}
    if has_test:
        return {"train": f"train[:{keep}%]", "validation": f"train[{keep}%:]", "test": "test"}
    if has_val:
        return {"train": f"train[:{keep}%]", "validation": f"train[{keep}%:]", "test": "validation"}
    n_train = round(100 * HOLDOUT_TRAIN_ONLY["train"])
    n_val = n_train + round(100 * HOLDOUT_TRAIN_ONLY["validation"])
    return {
        "train": f"train[:{n_train}%]",
        "validation": f"train[{n_train}%:{n_val}%]",
        "test": f"train[{n_val}%:]",
    }


def _builder(name: str, data_dir):
    """`tfds.builder`, with its errors (an unknown version or config) as one line."""
    import tensorflow_datasets as tfds

    data_dir = None if data_dir is None else os.fspath(Path(data_dir).expanduser())
    try:
        return tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises AssertionError for an unknown version
        text = first_line(error)
        # tfds prefixes the cause with the builder's arguments: keep the cause.
        cause = text.rsplit('}": ', 1)[-1]
        raise DataError(f"Cannot use tensorflow-datasets {name!r}: {cause}") from None


def tfds_train_size(name: str, data_dir=None) -> int | None:
    """Examples in our train split of a tfds data set already in `data_dir`, else None.

    Nothing is downloaded: a data set not prepared yet has no known size here.
    """
    builder = _builder(name, data_dir)
    if not builder.is_prepared():
        return None
    splits = builder.info.splits
    return splits[tfds_split_specs(list(splits.keys()))["train"]].num_examples


def tfds_examples(name: str, split: str, size: tuple[int, int], data_dir) -> Examples:
    """One split of a tfds data set as `Examples` (downloads it first when missing).

    Raises:
        DataError: unknown version or config, failed download, not an image
            classification data set, or an empty split (one line each).
    """
    import tensorflow_datasets as tfds

    builder = _builder(name, data_dir)
    if not builder.is_prepared():
        logger.info("Preparing tensorflow-datasets %r in %s (downloads it)", name, builder.data_dir)
        try:
            builder.download_and_prepare()
        except Exception as error:  # network, disk, manual-download data sets, ...
            cause_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise DataError(
                f"Could not download tensorflow-datasets {name!r} into {builder.data_dir}: "
                f"{type(error).__name__}: {cause_line}"
            ) from None
    info = builder.info
    image_key, label_key = info.supervised_keys or ("image", "label")
    features = info.features
    if not (
        isinstance(image_key, str)
        and image_key in features
        and isinstance(features[image_key], tfds.features.Image)
        and label_key in features
        and isinstance(features[label_key], tfds.features.ClassLabel)
    ):
        raise DataError(
            f"tensorflow-datasets {name!r} is not an image classification data set "
            "(no image feature with a class label)"
        )
    class_names = tuple(features[label_key].names)
    spec = tfds_split_specs(list(info.splits.keys()))[split]
    num_examples = info.splits[spec].num_examples
    if num_examples == 0:
        raise DataError(f"Split {split!r} ({spec}) of tensorflow-datasets {name!r} is empty")
    dataset = builder.as_dataset(split=spec, shuffle_files=False, as_supervised=False)

    def convert(example):
        image = resize_uint8(to_rgb(example[image_key]), size)
        return image, tf.cast(example[label_key], tf.int32)

    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return Examples(
        dataset.apply(tf.data.experimental.assert_cardinality(num_examples)),
        class_names,
        num_examples,
    )
