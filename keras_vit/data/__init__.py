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

Pipelines (`keras_vit.data.pipelines`: `training_batches`, `eval_batches`): cache the
uint8 examples, shuffle with a seed, augment, batch, scale to [-1, 1], prefetch.

Modules: `base` (examples, splits, scaling), `digits`, `folders`, `tfds_source`,
`sources` (`source_kind`, `load_examples`), `pipelines` (augmentation, batches). Every
public name is importable from `keras_vit.data`.
"""

from keras_vit.data.base import (
    HOLDOUT_TRAIN_ONLY,
    HOLDOUT_VALIDATION,
    PIXEL_MEAN,
    PIXEL_STD,
    SPLITS,
    DataError,
    Examples,
    Split,
    check_split,
    image_hw,
    resize_uint8,
    scale_images,
    stratified_split,
    to_rgb,
)
from keras_vit.data.digits import (
    DIGITS_FRACTIONS,
    DIGITS_SPLIT_SEED,
    digits_arrays,
    digits_examples,
    digits_split_indices,
)
from keras_vit.data.folders import (
    FOLDER_SPLIT_SEED,
    check_label,
    folder_examples,
    folder_files,
    read_rgb,
)
from keras_vit.data.pipelines import (
    Augmentation,
    eval_batches,
    random_resized_crop,
    training_batches,
)
from keras_vit.data.sources import dataset_spec, load_examples, source_kind
from keras_vit.data.tfds_source import (
    is_tfds_name,
    tfds_examples,
    tfds_split_specs,
    tfds_train_size,
)
from keras_vit.images import IMAGE_EXTENSIONS

__all__ = [
    "DIGITS_FRACTIONS",
    "DIGITS_SPLIT_SEED",
    "FOLDER_SPLIT_SEED",
    "HOLDOUT_TRAIN_ONLY",
    "HOLDOUT_VALIDATION",
    "IMAGE_EXTENSIONS",
    "PIXEL_MEAN",
    "PIXEL_STD",
    "SPLITS",
    "Augmentation",
    "DataError",
    "Examples",
    "Split",
    "check_label",
    "check_split",
    "dataset_spec",
    "digits_arrays",
    "digits_examples",
    "digits_split_indices",
    "eval_batches",
    "folder_examples",
    "folder_files",
    "image_hw",
    "is_tfds_name",
    "load_examples",
    "random_resized_crop",
    "read_rgb",
    "resize_uint8",
    "scale_images",
    "source_kind",
    "stratified_split",
    "tfds_examples",
    "tfds_split_specs",
    "tfds_train_size",
    "to_rgb",
    "training_batches",
]
