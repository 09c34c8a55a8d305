"""Google's original ViT checkpoints (`.npz`): load, save, resize and download.

The released checkpoints of google-research/vision_transformer are flat `.npz` files of
float32 arrays keyed by Flax parameter paths (`embedding/kernel`, `Transformer/encoderblock_0/
MultiHeadDotProductAttention_1/query/kernel`, ...). `WEIGHT_MAP` below is the whole
correspondence with this package's weights; every difference between the two layouts is a
reshape, done by the small pure functions next to it.

- `load_npz(model, path)` loads a file into a `VisionTransformer`, all or nothing: every key
  and shape is checked before the first weight is assigned.
- `save_npz(model, path)` writes the original layout, which the original code's
  `vit_jax.checkpoint.load` and timm's `.npz` loader read.
- `resample_posemb(...)` resizes the position embedding to another patch grid.
- `get_weights_file(...)` resolves a published name (`"imagenet21k"`, `"augreg"`, ...) to its
  public URL for a variant and downloads it through `keras.utils.get_file`, with a cache.
- `load_weights(model, weights)` is what `keras_vit.ViT(..., weights=...)` calls.

Example:
>>> model = keras_vit.ViT_B16(num_classes=10, image_size=384, weights="imagenet21k")
>>> keras_vit.checkpoints.save_npz(model, "finetuned.npz")
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import keras
import numpy as np
import scipy.ndimage

from keras_vit import artifacts
from keras_vit.model import VisionTransformer
from keras_vit.variants import VARIANTS

logger = logging.getLogger(__name__)

PosembMethod = Literal["zoom", "bilinear", "bicubic"]
POSEMB_METHODS: tuple[str, ...] = ("zoom", "bilinear", "bicubic")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded into (or from) a model. One-line message."""


# =============================================================================================
# Reshape rules: each original array is one of ours, reshaped (C order, no transposes).
# =============================================================================================


def conv_kernel_to_dense(kernel: np.ndarray) -> np.ndarray:
    """Patch-embedding convolution kernel `(P, P, C, D)` -> Dense kernel `(P*P*C, D)`.

    `keras_vit.layers.Patches` flattens each patch in (row, column, channel) order, the order
    of the kernel's first three axes, so the convolution equals Patches + this Dense.
    """
    kernel = np.asarray(kernel)
    return kernel.reshape(-1, kernel.shape[-1])


def dense_to_conv_kernel(kernel: np.ndarray, patch_size: int, num_channels: int) -> np.ndarray:
    """Dense kernel `(P*P*C, D)` -> convolution kernel `(P, P, C, D)`."""
    kernel = np.asarray(kernel)
    return kernel.reshape(patch_size, patch_size, num_channels, kernel.shape[-1])


def heads_kernel_to_dense(kernel: np.ndarray) -> np.ndarray:
    """Query/key/value kernel `(D, heads, head_dim)` -> Dense kernel `(D, heads*head_dim)`."""
    kernel = np.asarray(kernel)
    return kernel.reshape(kernel.shape[0], -1)


def dense_to_heads_kernel(kernel: np.ndarray, num_heads: int) -> np.ndarray:
    """Dense kernel `(D, D)` -> query/key/value kernel `(D, heads, D // heads)`."""
    kernel = np.asarray(kernel)
    return kernel.reshape(kernel.shape[0], num_heads, -1)


def heads_bias_to_dense(bias: np.ndarray) -> np.ndarray:
    """Query/key/value bias `(heads, head_dim)` -> Dense bias `(heads*head_dim,)`."""
    return np.asarray(bias).reshape(-1)


def dense_to_heads_bias(bias: np.ndarray, num_heads: int) -> np.ndarray:
    """Dense bias `(D,)` -> query/key/value bias `(heads, D // heads)`."""
    return np.asarray(bias).reshape(num_heads, -1)


def out_kernel_to_dense(kernel: np.ndarray) -> np.ndarray:
    """Attention output kernel `(heads, head_dim, D)` -> Dense kernel `(heads*head_dim, D)`."""
    kernel = np.asarray(kernel)
    return kernel.reshape(-1, kernel.shape[-1])


def dense_to_out_kernel(kernel: np.ndarray, num_heads: int) -> np.ndarray:
    """Dense kernel `(D, D)` -> attention output kernel `(heads, D // heads, D)`."""
    kernel = np.asarray(kernel)
    return kernel.reshape(num_heads, -1, kernel.shape[-1])


@dataclass(frozen=True)
class _Arch:
    patch_size: int
    num_channels: int
    num_heads: int


@dataclass(frozen=True)
class _Rule:
    """How one weight converts: original -> ours, and ours -> original."""

    to_ours: Callable[[np.ndarray], np.ndarray]
    to_original: Callable[[np.ndarray, _Arch], np.ndarray]


_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        "same": _Rule(np.asarray, lambda w, arch: np.asarray(w)),
        "conv": _Rule(
            conv_kernel_to_dense,
            lambda w, arch: dense_to_conv_kernel(w, arch.patch_size, arch.num_channels),
        ),
        "heads_kernel": _Rule(
            heads_kernel_to_dense, lambda w, arch: dense_to_heads_kernel(w, arch.num_heads)
        ),
        "heads_bias": _Rule(
            heads_bias_to_dense, lambda w, arch: dense_to_heads_bias(w, arch.num_heads)
        ),
        "out_kernel": _Rule(
            out_kernel_to_dense, lambda w, arch: dense_to_out_kernel(w, arch.num_heads)
        ),
    }
)

_B = "Transformer/encoderblock_{i}"
_MHA = _B + "/MultiHeadDotProductAttention_1"

# fmt: off
WEIGHT_MAP: tuple[tuple[str, str, str], ...] = (
    # ours (Keras weight path)                  original (.npz key)                         rule
    ("patch_encoder/projection/kernel",         "embedding/kernel",                         "conv"),
    ("patch_encoder/projection/bias",           "embedding/bias",                           "same"),
    ("patch_encoder/class_token",               "cls",                                      "same"),
    ("patch_encoder/position_embedding",        "Transformer/posembed_input/pos_embedding", "same"),
    ("encoderblock_{i}/norm1/gamma",            _B + "/LayerNorm_0/scale",                  "same"),
    ("encoderblock_{i}/norm1/beta",             _B + "/LayerNorm_0/bias",                   "same"),
    ("encoderblock_{i}/attention/query/kernel", _MHA + "/query/kernel",             "heads_kernel"),
    ("encoderblock_{i}/attention/query/bias",   _MHA + "/query/bias",                 "heads_bias"),
    ("encoderblock_{i}/attention/key/kernel",   _MHA + "/key/kernel",               "heads_kernel"),
    ("encoderblock_{i}/attention/key/bias",     _MHA + "/key/bias",                   "heads_bias"),
    ("encoderblock_{i}/attention/value/kernel", _MHA + "/value/kernel",             "heads_kernel"),
    ("encoderblock_{i}/attention/value/bias",   _MHA + "/value/bias",                 "heads_bias"),
    ("encoderblock_{i}/attention/out/kernel",   _MHA + "/out/kernel",                 "out_kernel"),
    ("encoderblock_{i}/attention/out/bias",     _MHA + "/out/bias",                         "same"),
    ("encoderblock_{i}/norm2/gamma",            _B + "/LayerNorm_2/scale",                  "same"),
    ("encoderblock_{i}/norm2/beta",             _B + "/LayerNorm_2/bias",                   "same"),
    ("encoderblock_{i}/mlp_dense1/kernel",      _B + "/MlpBlock_3/Dense_0/kernel",          "same"),
    ("encoderblock_{i}/mlp_dense1/bias",        _B + "/MlpBlock_3/Dense_0/bias",            "same"),
    ("encoderblock_{i}/mlp_dense2/kernel",      _B + "/MlpBlock_3/Dense_1/kernel",          "same"),
    ("encoderblock_{i}/mlp_dense2/bias",        _B + "/MlpBlock_3/Dense_1/bias",            "same"),
    ("encoder_norm/gamma",                      "Transformer/encoder_norm/scale",           "same"),
    ("encoder_norm/beta",                       "Transformer/encoder_norm/bias",            "same"),
    ("pre_logits/kernel",                       "pre_logits/kernel",                        "same"),
    ("pre_logits/bias",                         "pre_logits/bias",                          "same"),
    ("head/kernel",                             "head/kernel",                              "same"),
    ("head/bias",                               "head/bias",                                "same"),
)
"""Our weight paths, the original `.npz` keys (pre-Linen Flax names, as released) and the
reshape rule between them. `{i}` is the encoder block index. Kernels are `(in, out)` on both
sides; the rules are reshapes only (see the `*_to_*` functions above)."""
# fmt: on

# Flax Linen numbers submodules per class (LayerNorm_0, LayerNorm_1, ...); the released files
# number them per parent (pre-Linen). `vit_jax.checkpoint.load` accepts both, and so do we.
_LINEN_BLOCK_NAMES = MappingProxyType(
    {
        "MultiHeadDotProductAttention_0": "MultiHeadDotProductAttention_1",
        "LayerNorm_1": "LayerNorm_2",
        "MlpBlock_0": "MlpBlock_3",
    }
)
_PREFIXES = ("opt/target/", "params/")
_POSEMB = "Transformer/posembed_input/pos_embedding"
_BLOCK_KEY = re.compile(r"^Transformer/encoderblock_(\d+)/([^/]+)/(.*)$")


def _expand_map(num_layers: int) -> list[tuple[str, str, str]]:
    rows = []
    for ours, original, rule in WEIGHT_MAP:
        if "{i}" in ours:
            rows.extend((ours.format(i=i), original.format(i=i), rule) for i in range(num_layers))
        else:
            rows.append((ours, original, rule))
    return rows


def _model_weights(model: VisionTransformer) -> dict[str, tuple[keras.Variable, str, str]]:
    """Original key -> (our variable, our path, rule), for the weights this model has."""
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"Expected a keras_vit VisionTransformer. Received: {type(model).__name__}")
    ours = {weight.path: weight for weight in model.weights}
    mapping = {}
    for path, original, rule in _expand_map(model.num_layers):
        if path in ours:
            mapping[original] = (ours.pop(path), path, rule)
    if ours:  # a layer added to the model without a row in WEIGHT_MAP
        raise RuntimeError(f"WEIGHT_MAP has no row for {sorted(ours)}")
    return mapping


def _arch(model: VisionTransformer) -> _Arch:
    return _Arch(model.patch_size, model.num_channels, model.num_heads)


# =============================================================================================
# Position-embedding resampling
# =============================================================================================


def _grid(value, name: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        and all(v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(
        f"Expected `{name}` to be a positive int or a (rows, columns) pair. "
        f"Received: {name}={value!r}"
    )


def _interpolation_matrix(size_in: int, size_out: int, method: str) -> np.ndarray:
    """`(size_out, size_in)` weights of half-pixel linear or cubic resampling along one axis.

    As PyTorch's `F.interpolate(..., align_corners=False)` without antialiasing: source
    coordinate `(o + 0.5) * size_in / size_out - 0.5`; linear clamps it at 0; cubic uses the
    Keys kernel with a = -0.75 and repeats the border pixels.
    """
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in))
    for o in range(size_out):
        src = (o + 0.5) * scale - 0.5
        if method == "bilinear":
            src = max(src, 0.0)
            i0 = min(int(np.floor(src)), size_in - 1)
            i1 = min(i0 + 1, size_in - 1)
            t = src - i0
            weights[o, i0] += 1.0 - t
            weights[o, i1] += t
        else:
            i0 = int(np.floor(src))
            t = src - i0
            a = -0.75
            near = [t, 1.0 - t]  # distances to i0 and i0 + 1
            far = [t + 1.0, 2.0 - t]  # distances to i0 - 1 and i0 + 2
            coeffs = [
                ((a * far[0] - 5 * a) * far[0] + 8 * a) * far[0] - 4 * a,
                ((a + 2) * near[0] - (a + 3)) * near[0] * near[0] + 1,
                ((a + 2) * near[1] - (a + 3)) * near[1] * near[1] + 1,
                ((a * far[1] - 5 * a) * far[1] + 8 * a) * far[1] - 4 * a,
            ]
            for k, coeff in zip(range(i0 - 1, i0 + 3), coeffs, strict=True):
                weights[o, min(max(k, 0), size_in - 1)] += coeff
    return weights


def resample_posemb(
    posemb: np.ndarray,
    new_grid: int | Sequence[int],
    old_grid: int | Sequence[int] | None = None,
    method: PosembMethod = "zoom",
    num_prefix_tokens: int = 1,
) -> np.ndarray:
    """Resizes a position embedding to another patch grid, keeping prefix tokens apart.

    Args:
        posemb: `(1, num_prefix_tokens + rows * columns, D)`, patch positions row-major.
        new_grid: the target grid, an int (square) or `(rows, columns)`.
        old_grid: the grid of `posemb`. When None it is inferred, which is possible only
            when the number of patch positions is a perfect square.
        method: `"zoom"` (default): `scipy.ndimage.zoom(..., order=1)` exactly as the
            original `vit_jax/checkpoint.py`, linear with the corner positions aligned;
            `"bilinear"`: linear with half-pixel centres, as timm's `.npz` loader
            (`F.interpolate(mode="bilinear", align_corners=False)`); `"bicubic"`: the same
            with PyTorch's bicubic kernel (a = -0.75).
        num_prefix_tokens: leading positions that are not on the grid (1 for the class
            token, 0 for models pooled by global average). They are kept unchanged.

    Returns:
        `(1, num_prefix_tokens + new_rows * new_columns, D)`, in the dtype of `posemb`.

    Example:
    >>> posemb = np.random.rand(1, 1 + 14 * 14, 384).astype("float32")
    >>> resample_posemb(posemb, 24).shape
    (1, 577, 384)
    """
    posemb = np.asarray(posemb)
    if posemb.ndim != 3 or posemb.shape[0] != 1:
        raise ValueError(
            f"Expected `posemb` of shape (1, tokens, width). Received: shape={posemb.shape}"
        )
    if method not in POSEMB_METHODS:
        raise ValueError(f"Expected `method` to be one of {POSEMB_METHODS}. Received: {method!r}")
    if not isinstance(num_prefix_tokens, int) or not 0 <= num_prefix_tokens < posemb.shape[1]:
        raise ValueError(
            "Expected `num_prefix_tokens` in [0, tokens). "
            f"Received: num_prefix_tokens={num_prefix_tokens!r} for shape {posemb.shape}"
        )
    new_h, new_w = _grid(new_grid, "new_grid")
    prefix, patches = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    count = patches.shape[0]
    if old_grid is None:
        side = round(float(np.sqrt(count)))
        if side * side != count:
            raise ValueError(
                f"Cannot infer the grid of {count} patch positions (not a perfect square); "
                "pass old_grid=(rows, columns)"
            )
        old_h, old_w = side, side
    else:
        old_h, old_w = _grid(old_grid, "old_grid")
        if old_h * old_w != count:
            raise ValueError(
                f"old_grid={old_h}x{old_w} has {old_h * old_w} positions but posemb has "
                f"{count} patch positions"
            )
    grid = patches.reshape(old_h, old_w, -1)
    if (old_h, old_w) == (new_h, new_w):
        resized = grid.copy()
    elif method == "zoom":
        zoom = (new_h / old_h, new_w / old_w, 1)
        resized = scipy.ndimage.zoom(grid, zoom, order=1)
    else:
        rows = _interpolation_matrix(old_h, new_h, method)
        cols = _interpolation_matrix(old_w, new_w, method)
        resized = np.einsum("ai,ijd,bj->abd", rows, grid.astype(np.float64), cols)
    resized = resized.reshape(1, new_h * new_w, -1).astype(posemb.dtype)
    return np.concatenate([prefix, resized], axis=1)


# =============================================================================================
# Reading and writing .npz files
# =============================================================================================


def _read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
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
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as error:
        if isinstance(error, ValueError) and "allow_pickle" in str(error):
            raise CheckpointError(
                f"{path}: key {key!r} holds an object array (pickled data), which is refused"
            ) from None
        reason = " ".join(str(error).split())
        raise CheckpointError(f"{path} is not a readable .npz file: {reason}") from None
    for key, array in arrays.items():
        if not np.issubdtype(array.dtype, np.floating):
            raise CheckpointError(
                f"{path}: key {key!r} has dtype {array.dtype}; expected floating-point weights"
            )
    return arrays


def _strip_prefix(arrays: dict[str, np.ndarray], path) -> dict[str, np.ndarray]:
    for prefix in _PREFIXES:
        if prefix + "embedding/kernel" in arrays:
            kept = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            if len(kept) < len(arrays):
                logger.info(
                    "%s: using the %d arrays under %r; ignoring %d others (optimizer state)",
                    path,
                    len(kept),
                    prefix,
                    len(arrays) - len(kept),
                )
            return kept
    return arrays


def _canonical_key(key: str) -> str:
    match = _BLOCK_KEY.match(key)
    if match and match.group(2) in _LINEN_BLOCK_NAMES:
        index, module, rest = match.groups()
        return f"Transformer/encoderblock_{index}/{_LINEN_BLOCK_NAMES[module]}/{rest}"
    return key


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _key_list(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


@dataclass(frozen=True)
class LoadSummary:
    """What `load_npz` did.

    Attributes:
        path: the file.
        loaded: original keys whose arrays were assigned.
        dropped: original keys in the file that were not loaded, each with the reason.
        head_loaded: whether the classification head came from the file.
        posemb_resized: `(old_grid, new_grid)` when the position embedding was resampled.
    """

    path: Path
    loaded: tuple[str, ...]
    dropped: Mapping[str, str] = field(default_factory=dict)
    head_loaded: bool = False
    posemb_resized: tuple[tuple[int, int], tuple[int, int]] | None = None


def _check_architecture(model: VisionTransformer, arrays: dict[str, np.ndarray], path) -> None:
    """Clear messages for the mismatches that would otherwise show as many wrong shapes."""
    if "pos_embedding" in arrays and _POSEMB not in arrays:
        raise CheckpointError(
            f"{path} looks like a big_vision checkpoint (a top-level 'pos_embedding'); only "
            "the vision_transformer layout is supported"
        )
    if "embedding/kernel" not in arrays:
        raise CheckpointError(
            f"{path} has no 'embedding/kernel': not a ViT checkpoint in the original layout "
            f"(keys: {_key_list(arrays)})"
        )
    kernel = arrays["embedding/kernel"]
    if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1]:
        raise CheckpointError(
            f"{path}: 'embedding/kernel' has shape {_shape(kernel.shape)}; "
            "expected (patch, patch, channels, hidden)"
        )
    if kernel.shape[0] != model.patch_size:
        raise CheckpointError(
            f"{path} has patch size {kernel.shape[0]} but the model has "
            f"patch_size={model.patch_size}"
        )
    if kernel.shape[3] != model.hidden_size:
        raise CheckpointError(
            f"{path} has hidden size {kernel.shape[3]} but the model has "
            f"hidden_size={model.hidden_size}"
        )
    if kernel.shape[2] != model.num_channels:
        raise CheckpointError(
            f"{path} has {kernel.shape[2]} input channels but the model has "
            f"num_channels={model.num_channels}"
        )
    blocks = {int(m.group(1)) for k in arrays if (m := _BLOCK_KEY.match(k))}
    if blocks and len(blocks) != model.num_layers:
        raise CheckpointError(
            f"{path} has {len(blocks)} encoder blocks but the model has "
            f"num_layers={model.num_layers}"
        )
    query = arrays.get("Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel")
    if query is not None and query.ndim == 3 and query.shape[1] != model.num_heads:
        raise CheckpointError(
            f"{path} has {query.shape[1]} attention heads but the model has "
            f"num_heads={model.num_heads}"
        )
    has_cls = "cls" in arrays
    if has_cls != (model.pooling == "token"):
        found = "a class token" if has_cls else "no class token"
        raise CheckpointError(
            f"{path} has {found} but the model has pooling={model.pooling!r}; build it with "
            f"pooling={'token' if has_cls else 'gap'!r}"
        )


def load_npz(
    model: VisionTransformer,
    path: str | os.PathLike,
    posemb_method: PosembMethod = "zoom",
    source_grid: int | Sequence[int] | None = None,
) -> LoadSummary:
    """Loads an original ViT `.npz` checkpoint into `model`, all or nothing.

    Every key and shape is checked before the first weight is assigned, so on any error the
    model is left as it was. Keys may carry an `opt/target/` or `params/` prefix (other
    arrays, such as optimizer state, are then ignored), and encoder blocks may use Flax Linen
    submodule names (`LayerNorm_1`, ...) as well as the released pre-Linen ones.

    - The head is loaded when its shape matches the model's (same `num_classes`); otherwise
      the model keeps its own, freshly initialised head and a log line says so.
    - `pre_logits` is loaded when the model has a representation layer; otherwise it is
      dropped with a log line, and so is the head trained on top of it.
    - When the model's patch grid differs from the file's, the position embedding is
      resampled on the 2-D grid with `resample_posemb` (the class-token position is kept).

    Args:
        model: a `VisionTransformer` (patch size, hidden size, depth, heads, MLP width and
            pooling must match the file).
        path: the `.npz` file.
        posemb_method: `"zoom"` (as the original code), `"bilinear"` (half-pixel, as timm)
            or `"bicubic"`; see `resample_posemb`.
        source_grid: the file's patch grid `(rows, columns)`. Needed only when it is not
            square, since a non-square grid cannot be inferred from the number of positions.

    Returns:
        A `LoadSummary`.

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: the file is not an `.npz` of float arrays, holds object arrays,
            does not match the model (patch size, hidden size, depth, heads, pooling),
            misses keys, has unexpected keys, or has a key with the wrong shape. The message
            is one line naming the keys and shapes.
    """
    if posemb_method not in POSEMB_METHODS:
        raise ValueError(
            f"Expected `posemb_method` to be one of {POSEMB_METHODS}. "
            f"Received: posemb_method={posemb_method!r}"
        )
    path = Path(path)
    expected = _model_weights(model)
    arrays = _strip_prefix(_read_npz(path), path)
    arrays = {_canonical_key(k): v for k, v in arrays.items()}
    _check_architecture(model, arrays, path)

    dropped: dict[str, str] = {}
    notes: list[str] = []  # logged once everything is validated, so only for a real load
    head_keys = ("head/kernel", "head/bias")
    pre_logits_keys = ("pre_logits/kernel", "pre_logits/bias")
    file_pre_logits = any(k in arrays for k in pre_logits_keys)
    if file_pre_logits and "pre_logits/kernel" not in expected:
        for key in pre_logits_keys:
            if key in arrays:
                dropped[key] = "the model has no representation layer"
        notes.append("dropped pre_logits (the model has representation_size=None)")
    head_loaded = False
    if "head/kernel" in expected:
        ours = tuple(expected["head/kernel"][0].shape)
        theirs = arrays.get("head/kernel")
        if theirs is None:
            reason = "the file has no head"
        elif file_pre_logits and "pre_logits/kernel" not in expected:
            reason = "the file's head was trained on top of the dropped pre_logits layer"
        elif tuple(theirs.shape) != ours or "head/bias" not in arrays:
            reason = (
                f"the file's head has {theirs.shape[-1]} classes (kernel {_shape(theirs.shape)})"
                f" and the model's has num_classes={model.num_classes} (kernel {_shape(ours)})"
            )
        else:
            reason = None
            head_loaded = True
        if reason is not None:
            notes.append(
                f"head not loaded ({reason}); the model keeps its freshly initialised head"
            )
            for key in head_keys:
                if key in arrays:
                    dropped[key] = reason
            for key in head_keys:
                expected.pop(key)
    elif any(k in arrays for k in head_keys):
        for key in head_keys:
            if key in arrays:
                dropped[key] = "the model has no head (include_top=False)"
        notes.append("dropped the head (the model has include_top=False)")

    available = {k: v for k, v in arrays.items() if k not in dropped}
    missing = sorted(set(expected) - set(available))
    unexpected = sorted(set(available) - set(expected))
    if missing and unexpected:
        raise CheckpointError(
            f"{path} does not match the model: missing keys {_key_list(missing)}; "
            f"unexpected keys {_key_list(unexpected)}"
        )
    if missing:
        hint = ""
        if set(missing) <= set(pre_logits_keys):
            hint = " (the file has no representation layer: build with representation_size=None)"
        raise CheckpointError(f"{path} is missing keys {_key_list(missing)}{hint}")
    if unexpected:
        raise CheckpointError(f"{path} has unexpected keys {_key_list(unexpected)}")

    arch = _arch(model)
    posemb_resized = None
    plan: list[tuple[keras.Variable, np.ndarray]] = []
    for key in sorted(expected):
        variable, _, rule = expected[key]
        array = available[key]
        target_shape = tuple(variable.shape)
        if key == _POSEMB:
            array, posemb_resized = _fit_posemb(
                model, array, target_shape, posemb_method, source_grid, path
            )
        wanted = tuple(_RULES[rule].to_original(np.empty(target_shape, np.uint8), arch).shape)
        if tuple(array.shape) != wanted:
            raise CheckpointError(
                f"{path}: key {key!r} has shape {_shape(array.shape)} but the model expects "
                f"{_shape(wanted)}"
            )
        value = _RULES[rule].to_ours(array).astype(variable.dtype)
        plan.append((variable, value))

    if posemb_resized is not None:
        (old_h, old_w), (new_h, new_w) = posemb_resized
        notes.append(
            f"resampled the position embedding from grid {old_h}x{old_w} to {new_h}x{new_w} "
            f"({posemb_method})"
        )
    for note in notes:
        logger.info("%s: %s", path.name, note)
    for variable, value in plan:
        variable.assign(value)
    logger.info("Loaded %d arrays from %s into %s", len(plan), path, model.name)
    return LoadSummary(
        path=path,
        loaded=tuple(sorted(expected)),
        dropped=MappingProxyType(dropped),
        head_loaded=head_loaded,
        posemb_resized=posemb_resized,
    )


def _fit_posemb(model, posemb, target_shape, method, source_grid, path):
    """The file's position embedding, resampled to the model's grid when that differs."""
    prefix = 1 if model.pooling == "token" else 0
    if posemb.ndim != 3 or posemb.shape[0] != 1 or posemb.shape[2] != target_shape[2]:
        return posemb, None  # the shape check names the key and both shapes
    count = posemb.shape[1] - prefix
    if source_grid is not None:
        old = _grid(source_grid, "source_grid")
        if old[0] * old[1] != count:
            raise CheckpointError(
                f"{path}: source_grid={old[0]}x{old[1]} has {old[0] * old[1]} positions but "
                f"the file's position embedding has {count}"
            )
    elif tuple(posemb.shape) == target_shape:
        return posemb, None
    else:
        side = round(float(np.sqrt(count)))
        if count == 0 or side * side != count:
            raise CheckpointError(
                f"{path}: cannot infer the patch grid of {count} positions (not a square); "
                "pass source_grid=(rows, columns)"
            )
        old = (side, side)
    new = tuple(model.grid_size)
    if old == new:
        return posemb, None
    resized = resample_posemb(posemb, new, old, method=method, num_prefix_tokens=prefix)
    return resized, (old, new)


def save_npz(model: VisionTransformer, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Writes `model`'s weights as an original ViT `.npz` checkpoint.

    The keys and shapes are those of Google's released files (see `WEIGHT_MAP`), float32,
    without a prefix, so the file loads with `load_npz`, with the original
    `vit_jax.checkpoint.load` and with timm's `.npz` loader. The file is written atomically.

    Args:
        model: a `VisionTransformer`.
        path: the output file; `.npz` is appended when missing, as `numpy.savez` does.
        overwrite: replace an existing file; without it an existing `path` raises.

    Returns:
        The path written.
    """
    expected = _model_weights(model)
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if path.exists() and not overwrite:
        raise FileExistsError(f"Output {path} already exists; pass overwrite=True to replace it")
    arch = _arch(model)
    arrays = {
        key: _RULES[rule].to_original(keras.ops.convert_to_numpy(variable), arch).astype(np.float32)
        for key, (variable, _, rule) in sorted(expected.items())
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with artifacts.atomic_open(path) as handle:
        np.savez(handle, **arrays)
    logger.info("Wrote %d arrays of %s to %s", len(arrays), model.name, path)
    return path


# =============================================================================================
# Published checkpoints
# =============================================================================================

PUBLIC_BASE_URL = "https://storage.googleapis.com/vit_models/"


def _files(folder: str, names: Mapping[str, str]) -> MappingProxyType:
    return MappingProxyType({variant: f"{folder}/{name}.npz" for variant, name in names.items()})


_AUGREG = MappingProxyType(
    {
        "Ti/16": "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
        "S/16": "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
        "S/32": "S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0",
        "B/16": "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0",
        "B/32": "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
        "L/16": "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0",
    }
)
_AUGREG_IMAGENET2012 = MappingProxyType(
    {
        "Ti/16": "--imagenet2012-steps_20k-lr_0.03-res_384",
        "S/16": "--imagenet2012-steps_20k-lr_0.03-res_384",
        "S/32": "--imagenet2012-steps_20k-lr_0.01-res_384",
        "B/16": "--imagenet2012-steps_20k-lr_0.03-res_384",
        "B/32": "--imagenet2012-steps_20k-lr_0.01-res_384",
        "L/16": "--imagenet2012-steps_20k-lr_0.01-res_384",
    }
)

PRETRAINED: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        # ImageNet-21k pre-training (21,843 classes, with a pre_logits layer), 224 px.
        "imagenet21k": _files(
            "imagenet21k",
            {
                "B/8": "ViT-B_8",
                "B/16": "ViT-B_16",
                "B/32": "ViT-B_32",
                "L/16": "ViT-L_16",
                "L/32": "ViT-L_32",
                "H/14": "ViT-H_14",
            },
        ),
        # ImageNet-21k pre-training, ImageNet-1k fine-tuning (1,000 classes), 384 px.
        "imagenet21k+imagenet2012": _files(
            "imagenet21k+imagenet2012",
            {
                "B/8": "ViT-B_8",
                "B/16": "ViT-B_16",
                "B/32": "ViT-B_32",
                "L/16": "ViT-L_16",
                "L/32": "ViT-L_32",
            },
        ),
        # The same, fine-tuned at 224 px.
        "imagenet21k+imagenet2012-224": _files(
            "imagenet21k+imagenet2012", {"B/16": "ViT-B_16-224", "L/16": "ViT-L_16-224"}
        ),
        # ImageNet-1k with the SAM optimizer, 224 px.
        "sam": _files(
            "sam",
            {
                "S/16": "ViT-S_16",
                "B/16": "ViT-B_16",
                "B/32": "ViT-B_32",
                "L/16": "ViT-L_16",
                "L/32": "ViT-L_32",
            },
        ),
        # "How to train your ViT" (AugReg): the recommended ImageNet-21k checkpoints, 224 px.
        "augreg": _files("augreg", _AUGREG),
        # ... and their ImageNet-1k fine-tunings at 384 px.
        "augreg+imagenet2012": _files(
            "augreg", {v: _AUGREG[v] + suffix for v, suffix in _AUGREG_IMAGENET2012.items()}
        ),
    }
)
"""Published checkpoint names -> {variant: file under `PUBLIC_BASE_URL`}.

File names are those listed by the vision_transformer README (AugReg table) and by its
`vit_jax.ipynb` bucket listing. No SHA-256 of these files is recorded here: they could not be
downloaded where this package was written. Pass `file_hash=` to `get_weights_file` to have a
download verified."""


def variant_of(model: VisionTransformer) -> str | None:
    """The `VARIANTS` name (`"B/16"`, ...) whose architecture `model` has, or None."""
    arch = {
        "patch_size": model.patch_size,
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
        "num_heads": model.num_heads,
        "mlp_dim": model.mlp_dim,
    }
    for name, row in VARIANTS.items():
        if dict(row) == arch:
            return name
    return None


def weights_url(name: str, variant: str, base_url: str | None = None) -> str:
    """The URL of a published checkpoint.

    Args:
        name: a key of `PRETRAINED`, e.g. `"imagenet21k"`.
        variant: a `VARIANTS` key, e.g. `"B/16"`.
        base_url: where the files live; defaults to `PUBLIC_BASE_URL`.

    Raises:
        ValueError: an unknown name, or no file of that name for the variant (one line
            listing the choices).
    """
    if name not in PRETRAINED:
        raise ValueError(
            f"Unknown weights {name!r}. Expected a path to an .npz file, a URL, or one of: "
            f"{', '.join(PRETRAINED)}"
        )
    files = PRETRAINED[name]
    if variant not in files:
        raise ValueError(f"No {name!r} weights for ViT {variant}; {name!r} has: {', '.join(files)}")
    return (base_url or PUBLIC_BASE_URL).rstrip("/") + "/" + files[variant]


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "file://"))


def get_weights_file(
    weights: str | os.PathLike,
    variant: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    file_hash: str | None = None,
    base_url: str | None = None,
) -> Path:
    """Resolves `weights` to a local `.npz` file, downloading it when needed.

    Args:
        weights: a local path, a URL (`https://`, `http://`, `file://`), or a published name
            (a key of `PRETRAINED`, resolved for `variant`).
        variant: the ViT variant (`"B/16"`, ...), needed for a published name.
        cache_dir: the download cache; defaults to Keras' (`~/.keras`). Files go to its
            `keras_vit/` subfolder and are reused on later calls.
        file_hash: the file's expected SHA-256 (or MD5) hex digest. Downloads are verified
            against it; a mismatching file is deleted and an error raised.
        base_url: overrides `PUBLIC_BASE_URL` for published names (a mirror).

    Returns:
        The local path.

    Example:
    >>> path = get_weights_file("augreg", "S/16", file_hash="<sha256 you trust>")
    >>> model = keras_vit.ViT_S16(weights=path)
    """
    text = os.fspath(weights)
    if text in PRETRAINED:
        if variant is None:
            raise ValueError(
                f"Published weights {text!r} exist per variant: pass a variant such as "
                "'B/16' (a model whose architecture matches keras_vit.VARIANTS has one)"
            )
        url = weights_url(text, variant, base_url)
    elif _is_url(text):
        url = text
    elif Path(text).exists() or text.endswith(".npz") or os.sep in text:
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"Checkpoint file {path} does not exist")
        if file_hash is not None and _file_digest(path, file_hash) != file_hash.lower():
            raise ValueError(f"{path} does not match file_hash={file_hash}")
        return path
    else:
        weights_url(text, variant or "", base_url)  # raises: unknown name, with the choices
    parsed = url.split("?", 1)[0].rstrip("/")
    fname = parsed.rsplit("/", 1)[-1]
    folder = parsed.rsplit("/", 2)[-2] if parsed.count("/") >= 3 else "files"
    subdir = os.path.join("keras_vit", re.sub(r"[^A-Za-z0-9_.+-]", "_", folder))

    if cache_dir is not None:
        # get_file falls back to /tmp/.keras when the folder is missing (not writable).
        Path(cache_dir).mkdir(parents=True, exist_ok=True)

    def download(force: bool) -> Path:
        try:
            local = keras.utils.get_file(
                fname=fname,
                origin=url,
                cache_subdir=subdir,
                cache_dir=None if cache_dir is None else os.fspath(cache_dir),
                force_download=force,
            )
        except Exception as error:  # get_file raises a bare Exception on URL failures
            raise OSError(f"Could not download {url}: {error}") from None
        return Path(local)

    local = download(force=False)
    if file_hash is not None and _file_digest(local, file_hash) != file_hash.lower():
        logger.info("%s does not match file_hash; downloading it again", local)
        local = download(force=True)
        if _file_digest(local, file_hash) != file_hash.lower():
            local.unlink(missing_ok=True)
            raise ValueError(
                f"Downloaded {url} does not match file_hash={file_hash}; the file was deleted"
            )
    return local


def _file_digest(path: Path, file_hash: str) -> str:
    """SHA-256 hex digest of `path`, or MD5 when `file_hash` is an MD5 (32 hex digits)."""
    hasher = hashlib.md5() if len(file_hash) == 32 else hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def load_weights(
    model: VisionTransformer,
    weights: str | os.PathLike,
    posemb_method: PosembMethod = "zoom",
    source_grid: int | Sequence[int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    file_hash: str | None = None,
) -> LoadSummary:
    """Loads a local file, a URL or a published checkpoint into `model`.

    A published name (`"imagenet21k"`, ...) resolves from the model's variant, so
    `ViT_B16(weights="imagenet21k")` downloads `imagenet21k/ViT-B_16.npz`. See
    `get_weights_file` for the arguments about files and `load_npz` for the loading rules.
    """
    path = get_weights_file(weights, variant_of(model), cache_dir=cache_dir, file_hash=file_hash)
    return load_npz(model, path, posemb_method=posemb_method, source_grid=source_grid)
