"""Reading and writing Google's `.npz` checkpoints.

- `save_npz(model, path)` writes the original layout, which the original code's
  `vit_jax.checkpoint.load` and timm's `.npz` loader read. It also records the position
  embedding's patch grid in the zip comment (invisible to those readers), so a non-square
  grid loads back as what it is.
- `read_npz(path)` returns a file's arrays, `read_architecture(path)` the model arguments they
  imply.

Loading a file into a model is `keras_vit.checkpoints.loading.load_npz`; the key mapping
lives in `keras_vit.checkpoints.mapping`, the position-embedding resize in
`keras_vit.checkpoints.posemb`.

Example:
>>> model = keras_vit.ViT_B16(num_classes=10, image_size=384, weights="imagenet21k")
>>> keras_vit.checkpoints.save_npz(model, "finetuned.npz")
"""

from __future__ import annotations

import logging
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

from keras_vit import atomic, hybrid_keys
from keras_vit.checkpoints.mapping import (
    ReshapeSizes,
    architecture_from_arrays,
    canonical_key,
    expand_weight_map,
    strip_prefix,
    to_original,
)
from keras_vit.model import VisionTransformer

logger = logging.getLogger(__name__)

# Errors a damaged zip or `.npy` member raises while it is read.
_READ_ERRORS = (
    ValueError,
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    KeyError,
    NotImplementedError,
    RuntimeError,
)
_GRID_COMMENT = re.compile(rb"keras_vit:posemb_grid=(\d+)x(\d+)")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded into (or from) a model. One-line message."""


# =============================================================================================
# Reading and writing files
# =============================================================================================


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All arrays of an `.npz` file, checked to be floating-point `.npy` arrays.

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: not a readable `.npz` (not a zip, a corrupt or compressed-and-
            damaged member, a member that is not a `.npy` array, no arrays at all), an
            object (pickled) array, or a non-float array. One line naming the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Checkpoint file {path} does not exist")
    if path.is_dir() or not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not an .npz file")
    arrays = {}
    key = None
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                arrays[key] = npz[key]
    except _READ_ERRORS as error:
        if isinstance(error, ValueError) and "allow_pickle" in str(error):
            raise CheckpointError(
                f"{path}: key {key!r} holds an object array (pickled data), which is refused"
            ) from None
        reason = " ".join(str(error).split()) or type(error).__name__
        raise CheckpointError(f"{path} is not a readable .npz file: {reason}") from None
    if not arrays:
        raise CheckpointError(f"{path} is an empty .npz file (no arrays)")
    for key, array in arrays.items():
        if not isinstance(array, np.ndarray):
            raise CheckpointError(
                f"{path}: member {key!r} is not a NumPy .npy array; not an .npz checkpoint"
            )
        if not np.issubdtype(array.dtype, np.floating):
            raise CheckpointError(
                f"{path}: key {key!r} has dtype {array.dtype}; expected floating-point weights"
            )
    return arrays


def read_posemb_grid(path: str | os.PathLike) -> tuple[int, int] | None:
    """The patch grid `save_npz` recorded in the file's zip comment, or None."""
    try:
        with zipfile.ZipFile(path) as archive:
            match = _GRID_COMMENT.search(archive.comment)
    except (zipfile.BadZipFile, OSError):
        return None
    if match is None or int(match.group(1)) == 0 or int(match.group(2)) == 0:
        return None
    return int(match.group(1)), int(match.group(2))


def read_checkpoint_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A file's arrays with any `opt/target/` or `params/` prefix removed, keys canonical.

    Raises:
        FileNotFoundError, CheckpointError: as `read_npz`.
    """
    path = Path(path)
    everything = read_npz(path)
    arrays, prefix = strip_prefix(everything)
    if len(arrays) < len(everything):
        logger.info(
            "%s: using the %d arrays under %r; ignoring %d others (optimizer state)",
            path,
            len(arrays),
            prefix,
            len(everything) - len(arrays),
        )
    return {canonical_key(key): value for key, value in arrays.items()}


def _write_npz(handle, arrays: Mapping[str, np.ndarray], comment: bytes) -> None:
    """`numpy.savez` (uncompressed `.npy` members) with a zip comment."""
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, array in arrays.items():
            with archive.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
        archive.comment = comment


def read_architecture(path: str | os.PathLike) -> dict:
    """The `VisionTransformer` arguments of an original ViT `.npz` checkpoint.

    The patch size, width, depth, heads, MLP width, channels, pooling (a class token or not),
    representation layer and head width are read from the array shapes; the image size is
    the position embedding's patch grid times the patch size (the grid `save_npz` records,
    else a square one, as Google's files have; None when neither is known).

    Args:
        path: the `.npz` file.

    Returns:
        A dict of `VisionTransformer` arguments: `image_size` (None for a file with a
        non-square number of positions and no recorded grid), `patch_size`,
        `hidden_size`, `num_layers`, `num_heads`, `mlp_dim`, `num_channels`, `pooling`,
        `representation_size` and `num_classes` (None when the file has no head).

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: not a readable ViT checkpoint (one line naming the file).

    Example:
    >>> keras_vit.checkpoints.read_architecture("ViT-B_16.npz")["hidden_size"]
    768
    """
    path = Path(path)
    arrays = read_checkpoint_arrays(path)
    try:
        return architecture_from_arrays(arrays, read_posemb_grid(path))
    except ValueError as error:
        raise CheckpointError(
            f"{path} is not a ViT checkpoint in the original layout: {error}"
        ) from None


def model_weights(model: VisionTransformer) -> dict[str, tuple[keras.Variable, str, str]]:
    """Original key -> (our variable, our path, rule), for the weights `model` has.

    A hybrid's ResNet stem is left out: its keys are `keras_vit.hybrid_keys`'.

    Raises:
        TypeError: `model` is not a `VisionTransformer`.
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"Expected a keras_vit VisionTransformer. Received: {type(model).__name__}")
    stem = () if model.stem is None else {id(weight) for weight in model.stem.weights}
    ours = {weight.path: weight for weight in model.weights if id(weight) not in stem}
    mapping = {}
    for path, original, rule in expand_weight_map(model.num_layers):
        if path in ours:
            mapping[original] = (ours.pop(path), path, rule)
    if ours:  # a layer added to the model without a row in WEIGHT_MAP
        raise RuntimeError(f"WEIGHT_MAP has no row for {sorted(ours)}")
    return mapping


def reshape_sizes(model: VisionTransformer) -> ReshapeSizes:
    """The sizes the `WEIGHT_MAP` reshapes of `model` need."""
    return ReshapeSizes(model.patch_size, model.embedding_channels, model.num_heads)


def save_npz(model: VisionTransformer, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Writes `model`'s weights as an original ViT `.npz` checkpoint.

    The keys and shapes are those of Google's released files (see `WEIGHT_MAP`, and
    `keras_vit.hybrid_keys` for a hybrid's ResNet stem), float32,
    without a prefix, so the file loads with `load_npz`, with the original
    `vit_jax.checkpoint.load` and with timm's `.npz` loader. The model's patch grid is
    recorded in the zip comment, which those readers ignore. The file is written atomically.

    Args:
        model: a `VisionTransformer`.
        path: the output file; `.npz` is appended when missing, as `numpy.savez` does.
        overwrite: replace an existing file; without it an existing `path` raises.

    Returns:
        The path written.
    """
    expected = model_weights(model)
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if path.exists() and not overwrite:
        raise FileExistsError(f"Output {path} already exists; pass overwrite=True to replace it")
    sizes = reshape_sizes(model)
    arrays = {
        key: to_original(rule, keras.ops.convert_to_numpy(variable), sizes).astype(np.float32)
        for key, (variable, _, rule) in sorted(expected.items())
    }
    if model.stem is not None:
        stem = {n: keras.ops.convert_to_numpy(v) for n, v in model.stem.weights_by_name().items()}
        arrays.update(hybrid_keys.stem_to_checkpoint(stem))
    rows, columns = model.grid_size
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_open(path) as handle:
        _write_npz(handle, arrays, f"keras_vit:posemb_grid={rows}x{columns}".encode())
    logger.info("Wrote %d arrays of %s to %s", len(arrays), model.name, path)
    return path
