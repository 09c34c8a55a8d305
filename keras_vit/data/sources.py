"""Which source a name denotes, and one split of it as raw examples."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from keras_vit.data.base import DataError, Examples, Split, check_split, image_hw
from keras_vit.data.digits import digits_examples
from keras_vit.data.folders import folder_examples
from keras_vit.data.tfds_source import is_tfds_name, tfds_examples


def source_kind(source: str) -> Literal["digits", "folder", "tfds"]:
    """What kind of source a name is: `"digits"`, an existing folder, or a tfds name.

    `"digits"` wins over a folder of that name; an existing folder wins over a tfds name.

    Raises:
        DataError: a path that does not exist, a file, or a name that is neither.
    """
    if source == "digits":
        return "digits"
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder"
    if path.exists():
        raise DataError(f"Dataset {source} is a file; expected a folder of class sub-folders")
    if is_tfds_name(source):
        return "tfds"
    if "/" in source or os.sep in source or source.startswith((".", "~")):
        raise DataError(f"Image folder {source} does not exist")
    raise DataError(
        f"Unknown dataset {source!r}. Expected 'digits', a tensorflow-datasets name "
        "(e.g. 'cifar10') or an existing folder of class sub-folders"
    )


def dataset_spec(source: str, data_dir: str | os.PathLike | None = None) -> dict:
    """The `"dataset"` section of a checkpoint config: where the examples came from.

    Folders and `data_dir` are stored as absolute paths, so export and evaluation find
    them from any working directory.
    """
    kind = source_kind(source)
    stored = str(Path(source).expanduser().resolve()) if kind == "folder" else source
    return {
        "source": stored,
        "kind": kind,
        "data_dir": None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
    }


def load_examples(
    source: str,
    split: Split,
    image_size: int | Sequence[int],
    *,
    data_dir: str | os.PathLike | None = None,
) -> Examples:
    """Raw uint8 examples of one split of a data source, at the model's image size.

    Args:
        source: `"digits"`, a tensorflow-datasets name, or a folder of class sub-folders
            (see `keras_vit.data` for the rules).
        split: `"train"`, `"validation"` or `"test"`; mapped onto the source's own
            splits by the table in `keras_vit.data`.
        image_size: an int or `(height, width)`.
        data_dir: where tensorflow-datasets keeps (and downloads) its data; None for
            tfds' default. Unused by the other sources.

    Returns:
        `Examples`: an unbatched dataset of `(uint8 [H, W, 3], int32 label)`.

    Raises:
        DataError: unknown data set, missing or empty folder, a single class, a split
            with no examples; one line each.

    Example:
    >>> examples = keras_vit.data.load_examples("digits", "test", 32)
    >>> examples.num_examples, examples.class_names[:3]
    (360, ('0', '1', '2'))
    """
    check_split(split)
    size = image_hw(image_size)
    kind = source_kind(source)
    if kind == "digits":
        return digits_examples(split, size)
    if kind == "folder":
        return folder_examples(Path(source).expanduser(), split, size)
    return tfds_examples(source, split, size, data_dir)
