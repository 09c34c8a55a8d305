"""Folder sources: a folder of class sub-folders of image files.

Images have the extensions of `keras_vit.images.IMAGE_EXTENSIONS` (any case, searched
recursively in each class folder) and are read by `keras_vit.images.read_image`, the
reader serving uses too. Class names are the sorted sub-folder names. Files that cannot
be read are skipped with one warning that counts them and names the first few; they are
found before training starts, by reading every file of the split once. A class left
without a readable training image is an error. With a `train/` sub-folder, `train/`,
`val/` (or `validation/`) and `test/` are the splits; otherwise the whole folder is split
by the table of `keras_vit.data`, stratified and seeded with `FOLDER_SPLIT_SEED`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_vit.data.base import (
    HOLDOUT_TRAIN_ONLY,
    HOLDOUT_VALIDATION,
    DataError,
    Examples,
    resize_uint8,
    stratified_split,
)
from keras_vit.images import IMAGE_EXTENSIONS, ImageFileError, read_image

logger = logging.getLogger(__name__)

# Folders without split sub-folders: a fixed, training-seed independent split.
FOLDER_SPLIT_SEED = 0
_VALIDATION_DIRS = ("val", "validation")
# A folder scan that takes longer than this logs its progress at this interval.
PROGRESS_SECONDS = 5.0


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def folder_files(root: str | os.PathLike) -> tuple[tuple[str, ...], dict[str, list]]:
    """Lists a folder source: class names and `(path, label)` pairs per split.

    No image is opened here (see `load_examples` for decoding and skipping).

    Returns:
        `(class_names, {"train": [...], "validation": [...], "test": [...]})`.

    Raises:
        DataError: missing or empty folder, fewer than two classes, a class folder
            without images, split folders with classes that train/ lacks.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist")
    sub = {p.name: p for p in _class_dirs(root)}
    split_dirs: dict[str, Path] = {}
    if "train" in sub:
        split_dirs["train"] = sub["train"]
        for name in _VALIDATION_DIRS:
            if name in sub:
                split_dirs.setdefault("validation", sub[name])
        if "test" in sub:
            split_dirs["test"] = sub["test"]
    elif any(name in sub for name in ("test", *_VALIDATION_DIRS)):
        raise DataError(f"Image folder {root} has val/ or test/ sub-folders but no train/")
    train_dir = split_dirs.get("train", root)

    classes = _class_dirs(train_dir)
    if not classes:
        raise DataError(
            f"Image folder {train_dir} has no class sub-folders "
            f"(expected {train_dir}/<class>/<image>{{{','.join(IMAGE_EXTENSIONS)}}})"
        )
    class_names = tuple(p.name for p in classes)
    for name in class_names:
        check_label(name, f"A class folder of {train_dir}")
    files: dict[str, list] = {}
    for split_name in ("train", "validation", "test"):
        folder = train_dir if split_name == "train" else split_dirs.get(split_name)
        if folder is None:
            continue
        pairs = []
        for class_dir in _class_dirs(folder):
            if class_dir.name not in class_names:
                raise DataError(
                    f"Class folder {class_dir} is not a class of {train_dir} "
                    f"(classes: {', '.join(class_names)})"
                )
            images = _image_files(class_dir)
            if not images and split_name == "train":
                raise DataError(
                    f"Class folder {class_dir} has no images ({'/'.join(IMAGE_EXTENSIONS)})"
                )
            label = class_names.index(class_dir.name)
            pairs.extend((str(path), label) for path in images)
        files[split_name] = pairs
    if len(class_names) < 2:
        raise DataError(
            f"Image folder {train_dir} has a single class ({class_names[0]!r}); "
            "a classifier needs at least two class sub-folders"
        )
    return class_names, _fill_missing_splits(files)


def check_label(name: str, what: str = "Class name") -> None:
    """Refuses a class name that `labels.txt` (one name a line) cannot hold.

    Raises:
        DataError: the name is empty, holds a line break (any character
            `str.splitlines` splits at) or has leading / trailing white space.
    """
    if not name or len(name.splitlines()) != 1 or name != name.strip():
        raise DataError(
            f"{what} has the name {name!r}, which labels.txt (one class name a line) cannot "
            "hold: rename it without line breaks or leading / trailing spaces"
        )


def _fill_missing_splits(files: dict[str, list]) -> dict[str, list]:
    """Applies the split table to folders: held-out parts come from train, stratified."""
    train = files["train"]
    labels = np.array([label for _, label in train])
    has_val, has_test = "validation" in files, "test" in files
    if has_val and has_test:
        return files
    if has_val or has_test:
        parts = stratified_split(labels, {"validation": HOLDOUT_VALIDATION}, FOLDER_SPLIT_SEED)
        result = {
            "train": [train[i] for i in parts["train"]],
            "validation": [train[i] for i in parts["validation"]],
        }
        result["test"] = files["test"] if has_test else files["validation"]
        return result
    parts = stratified_split(labels, HOLDOUT_TRAIN_ONLY, FOLDER_SPLIT_SEED)
    return {split: [train[i] for i in index] for split, index in parts.items()}


# The folder reader is the package's one image reader (`keras_vit.images.read_image`).
read_rgb = read_image


def _readable(path: str) -> bool:
    try:
        read_image(path)
    except ImageFileError:
        return False
    return True


def _check_every_class_readable(
    root: Path, class_names: Sequence[str], readable: list, unreadable: list[str]
) -> None:
    """Refuses a training split in which a class has no readable image."""
    present = {label for _, label in readable}
    for label, name in enumerate(class_names):
        if label not in present:
            folder = (root / "train" if (root / "train").is_dir() else root) / name
            broken = [path for path in unreadable if Path(path).is_relative_to(folder)]
            raise DataError(
                f"Class folder {folder} has no readable training images "
                f"({len(broken)} unreadable, e.g. {broken[0] if broken else 'none'})"
            )


def _check_readable(paths: list[str], what: str) -> list[bool]:
    """Reads every file once (in threads); logs progress every `PROGRESS_SECONDS`."""
    workers = min(8, os.cpu_count() or 1)
    ok: list[bool] = []
    start = last = time.monotonic()
    with ThreadPoolExecutor(workers) as pool:
        for good in pool.map(_readable, paths):
            ok.append(good)
            now = time.monotonic()
            if now - last >= PROGRESS_SECONDS:
                logger.info("Checking images of the %s: %d / %d", what, len(ok), len(paths))
                last = now
    if last != start:
        logger.info("Checked %d images of the %s", len(paths), what)
    return ok


def folder_examples(root: Path, split: str, size: tuple[int, int]) -> Examples:
    """One split of a folder source as `Examples` (unreadable files skipped, counted).

    Raises:
        DataError: a folder layout `folder_files` refuses, a class without a readable
            training image, or a split without readable images (one line each).
    """
    class_names, files = folder_files(root)
    pairs = files[split]
    ok = _check_readable([path for path, _ in pairs], f"{split} split of {root}")
    bad = [path for (path, _), good in zip(pairs, ok, strict=True) if not good]
    if bad:
        logger.warning(
            "Skipped %d unreadable image file%s in %s (%s split): %s%s",
            len(bad),
            "" if len(bad) == 1 else "s",
            root,
            split,
            ", ".join(bad[:3]),
            ", ..." if len(bad) > 3 else "",
        )
        for path in bad:
            logger.debug("Unreadable image: %s", path)
    pairs = [pair for pair, good in zip(pairs, ok, strict=True) if good]
    if split == "train":
        _check_every_class_readable(root, class_names, pairs, bad)
    if not pairs:
        raise DataError(f"Split {split!r} of image folder {root} has no readable images")
    paths = tf.constant([path for path, _ in pairs])
    labels = tf.constant([label for _, label in pairs], tf.int32)

    def decode(path, label):
        image = tf.numpy_function(lambda p: read_image(p.decode()), [path], tf.uint8)
        image.set_shape([None, None, 3])
        return resize_uint8(image, size), label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return Examples(dataset, class_names, len(pairs))
