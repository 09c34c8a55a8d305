"""Key mapping between Google's `.npz` checkpoints and this package's weights (pure functions).

The released checkpoints of google-research/vision_transformer are flat `.npz` files of
float32 arrays keyed by Flax parameter paths (`embedding/kernel`, `Transformer/encoderblock_0/
MultiHeadDotProductAttention_1/query/kernel`, ...). `WEIGHT_MAP` below is the whole
correspondence with this package's weights; every difference between the two layouts is a
reshape, done by the small functions next to it. Nothing here reads files or touches Keras.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from keras_vit import hybrid_keys

POSEMB_KEY = "Transformer/posembed_input/pos_embedding"
HEAD_KEYS = ("head/kernel", "head/bias")
PRE_LOGITS_KEYS = ("pre_logits/kernel", "pre_logits/bias")
QUERY_KEY = "Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/query/kernel"
MLP_KEY = "Transformer/encoderblock_{i}/MlpBlock_3/Dense_0/kernel"

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
class ReshapeSizes:
    """The architecture sizes the reshapes back to the original layout need."""

    patch_size: int
    num_channels: int
    num_heads: int


@dataclass(frozen=True)
class _Rule:
    """How one weight converts: original -> ours, and ours -> original."""

    to_ours: Callable[[np.ndarray], np.ndarray]
    to_original: Callable[[np.ndarray, ReshapeSizes], np.ndarray]


_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        "same": _Rule(np.asarray, lambda w, sizes: np.asarray(w)),
        "conv": _Rule(
            conv_kernel_to_dense,
            lambda w, sizes: dense_to_conv_kernel(w, sizes.patch_size, sizes.num_channels),
        ),
        "heads_kernel": _Rule(
            heads_kernel_to_dense, lambda w, sizes: dense_to_heads_kernel(w, sizes.num_heads)
        ),
        "heads_bias": _Rule(
            heads_bias_to_dense, lambda w, sizes: dense_to_heads_bias(w, sizes.num_heads)
        ),
        "out_kernel": _Rule(
            out_kernel_to_dense, lambda w, sizes: dense_to_out_kernel(w, sizes.num_heads)
        ),
    }
)


def to_ours(rule: str, array: np.ndarray) -> np.ndarray:
    """An original array in our layout, by the `WEIGHT_MAP` rule named `rule`."""
    return _RULES[rule].to_ours(array)


def to_original(rule: str, array: np.ndarray, sizes: ReshapeSizes) -> np.ndarray:
    """One of our arrays in the original layout, by the `WEIGHT_MAP` rule named `rule`."""
    return _RULES[rule].to_original(array, sizes)


def original_shape(rule: str, shape: tuple[int, ...], sizes: ReshapeSizes) -> tuple[int, ...]:
    """The original shape of one of our weights of `shape`."""
    return tuple(to_original(rule, np.empty(shape, np.uint8), sizes).shape)


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
PREFIXES = ("opt/target/", "params/")
_BLOCK_KEY = re.compile(r"^Transformer/encoderblock_(\d+)/([^/]+)/(.*)$")


def expand_weight_map(num_layers: int) -> list[tuple[str, str, str]]:
    """`WEIGHT_MAP` with `{i}` rows repeated for blocks `0 .. num_layers - 1`."""
    rows = []
    for ours, original, rule in WEIGHT_MAP:
        if "{i}" in ours:
            rows.extend((ours.format(i=i), original.format(i=i), rule) for i in range(num_layers))
        else:
            rows.append((ours, original, rule))
    return rows


def canonical_key(key: str) -> str:
    """An original key with Flax Linen block submodule names turned into the released ones."""
    match = _BLOCK_KEY.match(key)
    if match and match.group(2) in _LINEN_BLOCK_NAMES:
        index, module, rest = match.groups()
        return f"Transformer/encoderblock_{index}/{_LINEN_BLOCK_NAMES[module]}/{rest}"
    return key


def block_index(key: str) -> int | None:
    """The encoder block index of an original key, or None for keys outside the blocks."""
    match = _BLOCK_KEY.match(key)
    return int(match.group(1)) if match else None


def strip_prefix(arrays: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str | None]:
    """The arrays under an `opt/target/` or `params/` prefix (without it), and the prefix.

    Arrays outside the prefix (optimizer state) are left out. Without a prefix, all arrays
    are returned and the prefix is None.
    """
    for prefix in PREFIXES:
        if prefix + "embedding/kernel" in arrays:
            kept = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
            return kept, prefix
    return dict(arrays), None


def architecture_from_arrays(
    arrays: Mapping[str, np.ndarray], grid: tuple[int, int] | None = None
) -> dict:
    """The `VisionTransformer` arguments that a checkpoint's arrays (original keys) imply.

    Args:
        arrays: canonical original keys (see `canonical_key`, `strip_prefix`) -> arrays.
        grid: the position embedding's patch grid `(rows, columns)`; None infers a square
            one from the number of positions (Google's files are square).

    Returns:
        A dict with `image_size` (None when `grid` is None and the number of positions is
        not a square, so the grid cannot be known), `patch_size`, `hidden_size`,
        `num_layers`, `num_heads`, `mlp_dim`, `num_channels`, `pooling`,
        `representation_size` and `num_classes` (None when the file has no head); for a
        hybrid (ResNet stem keys, see `keras_vit.hybrid_keys`) also `resnet_layers` and
        `resnet_width`, with `image_size` the grid times the patch size times the stem's
        stride and `num_channels` the image channels of `conv_root`.

    Raises:
        ValueError: a key the architecture needs is missing or has an unexpected shape.
    """
    kernel = _required(arrays, "embedding/kernel", 4)
    patch_size, _, num_channels, hidden_size = (int(s) for s in kernel.shape)
    blocks = {i for key in arrays if (i := block_index(key)) is not None}
    if not blocks or blocks != set(range(len(blocks))):
        raise ValueError(f"expected encoder blocks numbered from 0; found {sorted(blocks)}")
    query = _required(arrays, QUERY_KEY.format(i=0), 3)
    mlp = _required(arrays, MLP_KEY.format(i=0), 2)
    posemb = _required(arrays, POSEMB_KEY, 3)
    pooling = "token" if "cls" in arrays else "gap"
    positions = int(posemb.shape[1]) - (1 if pooling == "token" else 0)
    if grid is None:
        side = round(float(np.sqrt(max(positions, 0))))
        if positions > 0 and side * side == positions:
            grid = (side, side)
    elif grid[0] * grid[1] != positions:
        raise ValueError(f"the patch grid {grid[0]}x{grid[1]} does not hold {positions} positions")
    pre_logits = arrays.get("pre_logits/kernel")
    head = arrays.get("head/kernel")
    stem = {}
    pixels = patch_size
    if hybrid_keys.is_hybrid(arrays):
        layers, width = hybrid_keys.stem_config(arrays)
        num_channels = int(np.shape(arrays["conv_root/kernel"])[2])
        pixels *= hybrid_keys.feature_stride(layers)
        stem = {"resnet_layers": layers, "resnet_width": width}
    return {
        "image_size": None if grid is None else (grid[0] * pixels, grid[1] * pixels),
        "patch_size": patch_size,
        "hidden_size": hidden_size,
        "num_layers": len(blocks),
        "num_heads": int(query.shape[1]),
        "mlp_dim": int(mlp.shape[1]),
        "num_channels": num_channels,
        "pooling": pooling,
        "representation_size": None if pre_logits is None else int(pre_logits.shape[-1]),
        "num_classes": None if head is None else int(head.shape[-1]),
        **stem,
    }


def _required(arrays: Mapping[str, np.ndarray], key: str, ndim: int) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"no {key!r} array")
    array = arrays[key]
    if array.ndim != ndim:
        raise ValueError(f"{key!r} has {array.ndim} dimensions; expected {ndim}")
    return array
