"""Data sources and input pipelines.

A source gives raw examples: an unbatched `tf.data.Dataset` of `(uint8 image
[H, W, 3], int32 label)` at the model's image size, plus the class names. Training code
turns those into batches scaled to [-1, 1] (`scale_images`), as the original ViT code
feeds its models; export code calibrates integer models on the same raw uint8 examples.

Sources (`load_examples(source, split, image_size, data_dir=None)`):

- `"digits"`: scikit-learn's digits (1,797 8x8 grey images, 10 classes), the embedded
  real default; upscaled to RGB at the requested size, with a fixed stratified
  70 / 10 / 20 % train / validation / test split.
- a folder of class sub-folders (any path that exists as a directory): images with the
  extensions jpg, jpeg, png, webp, tif, tiff, bmp, gif (any case, searched recursively in
  each class folder); class names are the sorted sub-folder names. Files are read by
  `keras_vit.images.read_image` (EXIF orientation applied, 16-bit scaled, alpha dropped),
  the same reader serving uses.
  Files that cannot be decoded are skipped with one warning that counts them and names
  the first few; they are found before training starts, by decoding every file of the
  split once. Splits: if the folder has a `train/` sub-folder, its `train/`, `val/` (or
  `validation/`) and `test/` sub-folders are the splits (each holding class folders);
  otherwise the whole folder is split by the rule below.
- any tensorflow-datasets name, with an optional config and version
  (`"cifar10"`, `"oxford_flowers102"`, `"mnist:3.*.*"`): read from `data_dir` (tfds'
  default `~/tensorflow_datasets` if None) and downloaded there first when missing.

Split rule, the same for tfds data sets and folders (held-out parts are fixed: folders
use a stratified split seeded with `FOLDER_SPLIT_SEED`, tfds uses its deterministic
percent slicing of the train split):

| the source has           | train            | validation       | test             |
|--------------------------|------------------|------------------|------------------|
| train, validation, test  | train            | validation       | test             |
| train, test              | first 90 % train | last 10 % train  | test             |
| train, validation        | first 90 % train | last 10 % train  | validation       |
| train only               | first 70 % train | next 10 % train  | last 20 % train  |

Every image is resized to the model's size (bilinear, antialiased, aspect ratio not kept,
as the original code's evaluation pipeline) and rounded to uint8.

Pipelines (`training_batches`, `eval_batches`): cache the uint8 examples, shuffle with a
seed, augment, batch, scale to [-1, 1], prefetch. Augmentation lives in the input
pipeline, never in the model, so exported models hold no augmentation layers:

- random resized crop + horizontal flip: written here with stateless TF ops (the
  Inception-style crop of the original code's training pipeline,
  `tf.image.stateless_sample_distorted_bounding_box`), one seed per example, so the map
  runs in parallel and stays deterministic;
- rotation, RandAugment, MixUp, CutMix: Keras 3's own layers (`keras.layers.RandomRotation`,
  `RandAugment`, `MixUp`, `CutMix`), applied per batch. They keep their random state in a
  variable, so the map that calls them runs sequentially (a parallel map would hand out
  that state in a nondeterministic order; measured: two runs differ). Keras' RandAugment draws its
  operations once per call, so the images of one batch share their two operations (the
  magnitudes differ per image). keras-cv 0.9's RandAugment was measured too: it is not
  reproducible (two pipelines with `seed=1` gave different images) and keras-cv is no
  longer developed, so it is not used.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import tensorflow as tf

from keras_vit.images import IMAGE_EXTENSIONS, ImageFileError, read_image

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

# Folders without split sub-folders: the same fixed, training-seed independent rule.
FOLDER_SPLIT_SEED = 0
# Held-out fractions when a source lacks a split (see the module docstring's table).
HOLDOUT_VALIDATION = 0.1
HOLDOUT_TRAIN_ONLY = {"train": 0.7, "validation": 0.1, "test": 0.2}

_TFDS_NAME = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_.+-]+)?(:[0-9*]+\.[0-9*]+\.[0-9*]+)?$")
_VALIDATION_DIRS = ("val", "validation")


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


def _check_split(split: str) -> None:
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

    _check_split(split)
    digits = load_digits()
    index = digits_split_indices(digits.target)[split]
    small = digits.images[index].astype("float32") * (255.0 / 16.0)
    height, width = image_hw(image_size)
    resized = tf.image.resize(small[..., None], (height, width), method="bilinear")
    images = np.clip(np.round(resized.numpy()), 0, 255).astype("uint8")
    return np.repeat(images, 3, axis=-1), digits.target[index].astype("int32")


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
    if _TFDS_NAME.match(source):
        import tensorflow_datasets as tfds

        name = source.split(":")[0].split("/")[0]
        if name in tfds.list_builders(with_community_datasets=False):
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
            (see the module docstring for the rules).
        split: `"train"`, `"validation"` or `"test"`; mapped onto the source's own
            splits by the table in the module docstring.
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
    _check_split(split)
    size = image_hw(image_size)
    kind = source_kind(source)
    if kind == "digits":
        images, labels = digits_arrays(split, size)
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
        return Examples(dataset, tuple(str(d) for d in range(10)), len(labels))
    if kind == "folder":
        return _folder_examples(Path(source).expanduser(), split, size)
    return _tfds_examples(source, split, size, data_dir)


def _resize_uint8(image, size: tuple[int, int]):
    """Any-size uint8 RGB image -> uint8 [H, W, 3] at `size` (bilinear, antialiased)."""
    resized = tf.image.resize(image, size, method="bilinear", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _to_rgb(image):
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


# --- tensorflow-datasets -------------------------------------------------------------


def tfds_split_specs(available: Sequence[str]) -> dict[str, str]:
    """Maps our three splits onto a tfds data set's splits (the module docstring's table).

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


def _tfds_examples(name: str, split: str, size: tuple[int, int], data_dir) -> Examples:
    import tensorflow_datasets as tfds

    data_dir = None if data_dir is None else os.fspath(Path(data_dir).expanduser())
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        logger.info("Preparing tensorflow-datasets %r in %s (downloads it)", name, builder.data_dir)
        try:
            builder.download_and_prepare()
        except Exception as error:  # network, disk, manual-download data sets, ...
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise DataError(
                f"Could not download tensorflow-datasets {name!r} into {builder.data_dir}: "
                f"{type(error).__name__}: {first_line}"
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
        image = _resize_uint8(_to_rgb(example[image_key]), size)
        return image, tf.cast(example[label_key], tf.int32)

    dataset = dataset.map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return Examples(
        dataset.apply(tf.data.experimental.assert_cardinality(num_examples)),
        class_names,
        num_examples,
    )


# --- folders of class sub-folders ----------------------------------------------------


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


def _folder_examples(root: Path, split: str, size: tuple[int, int]) -> Examples:
    class_names, files = folder_files(root)
    pairs = files[split]
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        ok = list(pool.map(_readable, [path for path, _ in pairs]))
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
    if not pairs:
        raise DataError(f"Split {split!r} of image folder {root} has no readable images")
    paths = tf.constant([path for path, _ in pairs])
    labels = tf.constant([label for _, label in pairs], tf.int32)

    def decode(path, label):
        image = tf.numpy_function(lambda p: read_image(p.decode()), [path], tf.uint8)
        image.set_shape([None, None, 3])
        return _resize_uint8(image, size), label

    dataset = tf.data.Dataset.from_tensor_slices((paths, labels))
    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return Examples(dataset, class_names, len(pairs))


# --- pipelines -----------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation, applied in the input pipeline.

    Attributes:
        crop_area: area range `(min, max)` of the random resized crop, as a fraction of
            the image (Inception crop: `(0.08, 1.0)`; the original ViT code uses
            `(0.05, 1.0)`), or None for no crop.
        crop_aspect: aspect-ratio range of the crop.
        flip: random horizontal flips (wrong for digits and text).
        rotation_degrees: random rotations by up to this many degrees either way
            (`keras.layers.RandomRotation`, edges filled with the nearest pixel), 0 for none.
        randaugment_ops: operations per image of `keras.layers.RandAugment`, 0 for none.
        randaugment_magnitude: its `factor` in [0, 1].
        mixup_alpha: `keras.layers.MixUp(alpha)`, 0 for none.
        cutmix_alpha: `keras.layers.CutMix(factor)`, 0 for none. With both MixUp and
            CutMix, each batch gets one of them, chosen with equal chance.
    """

    crop_area: tuple[float, float] | None = (0.08, 1.0)
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    rotation_degrees: float = 0.0
    randaugment_ops: int = 0
    randaugment_magnitude: float = 0.5
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self):
        if self.crop_area is not None and not 0 < self.crop_area[0] <= self.crop_area[1] <= 1:
            raise ValueError(
                f"Expected 0 < crop_area[0] <= crop_area[1] <= 1. Received: {self.crop_area}"
            )
        if not 0 < self.crop_aspect[0] <= self.crop_aspect[1]:
            raise ValueError(f"Expected 0 < crop_aspect[0] <= [1]. Received: {self.crop_aspect}")
        if not 0 <= self.rotation_degrees <= 180:
            raise ValueError(
                f"Expected rotation_degrees in [0, 180]. Received: {self.rotation_degrees}"
            )
        if self.randaugment_ops < 0 or not 0 <= self.randaugment_magnitude <= 1:
            raise ValueError(
                "Expected randaugment_ops >= 0 and randaugment_magnitude in [0, 1]. "
                f"Received: {self.randaugment_ops}, {self.randaugment_magnitude}"
            )
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(
                "Expected mixup_alpha, cutmix_alpha >= 0. "
                f"Received: {self.mixup_alpha}, {self.cutmix_alpha}"
            )


def random_resized_crop(image, seed, area, aspect):
    """Inception-style crop of a uint8 image, resized back to its size, as float32.

    Args:
        image: `[H, W, 3]` image.
        seed: a stateless seed, int `[2]`.
        area: `(min, max)` area fraction of the crop.
        aspect: `(min, max)` width / height ratio of the crop.

    Returns:
        float32 `[H, W, 3]` in the input's value range.
    """
    shape = tf.shape(image)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect,
        area_range=area,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return tf.image.resize(crop, shape[:2], method="bilinear")


def training_batches(
    examples: Examples,
    batch_size: int,
    *,
    seed: int,
    augmentation: Augmentation | None = None,
    cache: bool = True,
    shuffle_buffer: int = 8192,
) -> tf.data.Dataset:
    """The training input pipeline: `(float32 images in [-1, 1], float32 one-hot labels)`.

    cache (uint8) -> shuffle (seeded, reshuffled each epoch) -> per-example crop + flip
    -> batch -> rotation -> RandAugment -> MixUp / CutMix -> scale to [-1, 1] -> prefetch. The same
    `seed` gives the same batches in every run.

    Args:
        examples: the training split, from `load_examples`.
        batch_size: the global batch size (the last batch may be smaller).
        seed: seeds the shuffle and every augmentation.
        augmentation: what to apply; None for none (shuffle and scaling only).
        cache: keep the decoded uint8 examples in memory after the first epoch.
        shuffle_buffer: at most this many examples in the shuffle buffer.

    Returns:
        A `tf.data.Dataset` of batches.
    """
    import keras

    num_classes = len(examples.class_names)
    aug = augmentation or Augmentation(crop_area=None, flip=False)
    dataset = examples.dataset.cache() if cache else examples.dataset
    dataset = dataset.shuffle(
        min(shuffle_buffer, max(examples.num_examples, 1)), seed=seed, reshuffle_each_iteration=True
    )
    # One stateless seed per example and epoch: parallel map, deterministic results.
    noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    dataset = tf.data.Dataset.zip(dataset, noise)

    image_shape = examples.dataset.element_spec[0].shape

    def per_example(example, rand):
        image, label = example
        image = tf.cast(image, tf.float32)
        if aug.crop_area is not None:
            image = random_resized_crop(image, tf.stack([rand, 1]), aug.crop_area, aug.crop_aspect)
            image = tf.ensure_shape(image, image_shape)
        if aug.flip:
            image = tf.image.stateless_random_flip_left_right(image, tf.stack([rand, 2]))
        return image, tf.one_hot(label, num_classes, dtype=tf.float32)

    dataset = dataset.map(per_example, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size)

    # Keras' random layers keep state in a variable: sequential maps keep them reproducible.
    if aug.rotation_degrees:
        rotation = keras.layers.RandomRotation(
            aug.rotation_degrees / 360.0, fill_mode="nearest", seed=seed + 4
        )
        dataset = dataset.map(lambda x, y: (rotation(x), y))
    if aug.randaugment_ops:
        randaugment = keras.layers.RandAugment(
            value_range=(0, 255),
            num_ops=aug.randaugment_ops,
            factor=aug.randaugment_magnitude,
            seed=seed,
        )
        dataset = dataset.map(lambda x, y: (randaugment(x), y))
    mixers = []
    if aug.mixup_alpha:
        mixers.append(keras.layers.MixUp(alpha=aug.mixup_alpha, seed=seed + 1))
    if aug.cutmix_alpha:
        mixers.append(keras.layers.CutMix(factor=aug.cutmix_alpha, seed=seed + 2))
    if mixers:

        def mix(images, labels, choice):
            data = {"images": images, "labels": labels}
            if len(mixers) == 1:
                out = mixers[0](data)
            else:
                out = tf.cond(choice < 0.5, lambda: mixers[0](data), lambda: mixers[1](data))
            return out["images"], out["labels"]

        choices = tf.data.Dataset.random(seed=seed + 3, rerandomize_each_iteration=True).map(
            lambda r: tf.cast(r % 2, tf.float32)
        )
        dataset = tf.data.Dataset.zip(dataset, choices).map(lambda xy, c: mix(xy[0], xy[1], c))
    dataset = dataset.map(lambda x, y: (scale_images(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_batches(
    examples: Examples,
    batch_size: int,
    *,
    one_hot: bool = False,
    cache: bool = True,
) -> tf.data.Dataset:
    """The evaluation pipeline: `(float32 images in [-1, 1], labels)`, in a fixed order.

    Args:
        examples: a split, from `load_examples`.
        batch_size: examples per batch.
        one_hot: float32 one-hot labels (for Keras' categorical losses) instead of int32.
        cache: keep the decoded uint8 examples in memory after the first pass.

    Returns:
        A `tf.data.Dataset` of batches.
    """
    num_classes = len(examples.class_names)
    dataset = examples.dataset.cache() if cache else examples.dataset

    def prepare(image, label):
        if one_hot:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return scale_images(image), label

    dataset = dataset.batch(batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
