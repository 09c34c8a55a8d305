"""Key mapping between Google's hybrid checkpoints and `keras_vit.resnet.ResNetStem`.

Pure functions over NumPy arrays (no Keras, no TensorFlow). The original hybrid `.npz` files
(`R50+ViT-B_16.npz`, the augreg `R_Ti_16`, `R26_S_32`, `R50_L_32`) hold the ResNet stem
under the Flax scopes of `vit_jax/models_vit.py` and `vit_jax/models_resnet.py`:

    conv_root/kernel                    (7, 7, 3, root)
    gn_root/{scale,bias}                (1, 1, 1, root) in released files, (root,) after
                                        `vit_jax.checkpoint.load`
    block{i}/unit{j}/conv{1,2,3}/kernel (k, k, in, out)
    block{i}/unit{j}/gn{1,2,3}/{scale,bias}
    block{i}/unit{j}/conv_proj/kernel   first unit of a stage only
    block{i}/unit{j}/gn_proj/{scale,bias}

beside the plain ViT keys (`embedding/kernel` then reads the stem's feature map, so its
input channels are the stem's output channels; `cls`, `Transformer/...`, `head/...`).
The stem's weights are named `"<sublayer>/[<sublayer>/]<weight>"`
(`ResNetStem.weights_by_name()`): `conv_root/kernel`, `gn_root/gamma`,
`block1_unit1/gn1/beta`, ... Both directions are all-or-nothing: every problem raises one
`ValueError` line naming the key and shapes before anything is returned.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import numpy as np

# The scopes of the stem in the original parameter tree.
_STEM_KEY = re.compile(r"^(conv_root|gn_root|block\d+)/")
_UNIT_KEY = re.compile(r"^block(\d+)/unit(\d+)/(conv[123]|conv_proj|gn[123]|gn_proj)/(\w+)$")
_UNIT_NAME = re.compile(r"^block(\d+)_unit(\d+)/(conv[123]|conv_proj|gn[123]|gn_proj)/(\w+)$")
_ROOT = re.compile(r"^(conv_root|gn_root)/(\w+)$")
# Flax parameter name -> Keras weight name, for convolutions and GroupNorms.
_CONV_WEIGHTS = {"kernel": "kernel"}
_NORM_WEIGHTS = {"scale": "gamma", "bias": "beta"}
# Root channels at width 1 (`int(64 * width_factor)` in models_vit.py); the same constant as
# `keras_vit.resnet.BASE_WIDTH`, repeated because this module imports no Keras.
_BASE_WIDTH = 64


def is_stem_key(key: str) -> bool:
    """Whether a checkpoint key belongs to the ResNet stem (`conv_root`, `gn_root`, `block*`)."""
    return bool(_STEM_KEY.match(key))


def is_hybrid(keys: Iterable[str]) -> bool:
    """Whether a checkpoint with these keys is a hybrid (has a ResNet stem)."""
    return any(is_stem_key(key) for key in keys)


def split_stem(
    arrays: Mapping[str, np.ndarray],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Splits checkpoint arrays into `(stem, rest)`; `rest` is what the plain ViT loader reads."""
    stem = {k: v for k, v in arrays.items() if is_stem_key(k)}
    rest = {k: v for k, v in arrays.items() if not is_stem_key(k)}
    return stem, rest


def _is_norm(layer: str) -> bool:
    return layer.startswith("gn")


def weight_name(key: str) -> str:
    """The stem weight name of a checkpoint key.

    Example:
    >>> weight_name("block2/unit1/gn_proj/scale")
    'block2_unit1/gn_proj/gamma'
    """
    match = _ROOT.match(key)
    if match:
        scope, prefix, param = match[1], match[1], match[2]
    else:
        match = _UNIT_KEY.match(key)
        if not match:
            raise ValueError(f"Checkpoint key {key!r} is not a ResNet stem parameter")
        scope, prefix, param = match[3], f"block{match[1]}_unit{match[2]}/{match[3]}", match[4]
    table = _NORM_WEIGHTS if _is_norm(scope) else _CONV_WEIGHTS
    if param not in table:
        raise ValueError(
            f"Checkpoint key {key!r}: {scope} has no parameter {param!r} "
            f"(expected one of {sorted(table)})"
        )
    return f"{prefix}/{table[param]}"


def checkpoint_key(name: str) -> str:
    """The checkpoint key of a stem weight name (the inverse of `weight_name`).

    Example:
    >>> checkpoint_key("block2_unit1/gn_proj/gamma")
    'block2/unit1/gn_proj/scale'
    """
    match = _ROOT.match(name)
    if match:
        scope, prefix, weight = match[1], match[1], match[2]
    else:
        match = _UNIT_NAME.match(name)
        if not match:
            raise ValueError(f"Weight {name!r} is not a ResNet stem weight")
        scope, prefix, weight = match[3], f"block{match[1]}/unit{match[2]}/{match[3]}", match[4]
    table = {v: k for k, v in (_NORM_WEIGHTS if _is_norm(scope) else _CONV_WEIGHTS).items()}
    if weight not in table:
        raise ValueError(f"Weight {name!r}: {scope} has no weight {weight!r}")
    return f"{prefix}/{table[weight]}"


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(n)) for n in shape) + ")"


def stem_from_checkpoint(
    arrays: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """The stem's weights from checkpoint arrays, checked against the stem's own shapes.

    Args:
        arrays: checkpoint arrays keyed as the original files (`conv_root/kernel`, ...); keys
            outside the stem are ignored (see `split_stem`). GroupNorm parameters may be
            `(C,)` or the released `(1, 1, 1, C)`.
        shapes: every weight of the stem and its shape, e.g.
            `{n: tuple(v.shape) for n, v in stem.weights_by_name().items()}`.

    Returns:
        float32 arrays keyed by weight name, shaped as `shapes`.

    Raises:
        ValueError: a stem weight without its key, a stem key without its weight (another
            stem depth or width), or a shape that differs; one line naming the key.
    """
    stem, _ = split_stem(arrays)
    expected = {checkpoint_key(name): name for name in shapes}
    missing = sorted(set(expected) - set(stem))
    if missing:
        raise ValueError(
            f"Checkpoint is missing ResNet stem key {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    unexpected = sorted(set(stem) - set(expected))
    if unexpected:
        raise ValueError(
            f"Checkpoint has ResNet stem key {unexpected[0]!r} that the model lacks"
            + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
            + "; it was written for another stem depth"
        )
    out = {}
    for key, name in expected.items():
        value = np.asarray(stem[key])
        target = tuple(shapes[name])
        if _is_norm(key.split("/")[-2]) and value.shape == (1, 1, 1, *target):
            value = value.reshape(target)
        if value.shape != target:
            raise ValueError(
                f"Checkpoint key {key!r} has shape {_shape(value.shape)}, "
                f"the model expects {_shape(target)}"
            )
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"Checkpoint key {key!r} has dtype {value.dtype}, expected floats")
        out[name] = value.astype(np.float32)
    return out


def stem_to_checkpoint(weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Checkpoint arrays of the stem's weights, in the layout of the released files.

    Args:
        weights: arrays keyed by weight name (`ResNetStem.weights_by_name()`); kernels
            `(k, k, in, out)`, GroupNorm weights `(C,)`.

    Returns:
        float32 arrays keyed as the original files, GroupNorm parameters `(1, 1, 1, C)`.

    Raises:
        ValueError: a name that is not a stem weight or a shape of the wrong rank; one line.
    """
    out = {}
    for name, value in weights.items():
        key = checkpoint_key(name)
        value = np.asarray(value, dtype=np.float32)
        rank = 1 if _is_norm(key.split("/")[-2]) else 4
        if value.ndim != rank:
            raise ValueError(
                f"Weight {name!r} has shape {_shape(value.shape)}, expected rank {rank}"
            )
        out[key] = value.reshape(1, 1, 1, -1) if rank == 1 else value
    return out


def feature_stride(layers: tuple[int, ...]) -> int:
    """How many pixels of the image one position of the stem's feature map spans.

    4 for the root block (stride-2 convolution, stride-2 max-pooling), times 2 for every
    stage after the first. With 'SAME' padding a side of `n` pixels gives
    `ceil(n / feature_stride)` positions.

    Example:
    >>> feature_stride((3, 4, 9))
    16
    """
    return 4 * 2 ** max(len(layers) - 1, 0)


def stem_config(arrays: Mapping[str, np.ndarray]) -> tuple[tuple[int, ...], float]:
    """The stem architecture a checkpoint was written for: `(layers, width)`.

    `layers` counts the units of `block1`, `block2`, ... (`()` for a root-only stem);
    `width` is the root convolution's channels over 64.

    Example:
    >>> stem_config({"conv_root/kernel": np.zeros((7, 7, 3, 32))})
    ((), 0.5)
    """
    kernel = arrays.get("conv_root/kernel")
    if kernel is None:
        raise ValueError("Checkpoint has no ResNet stem: key 'conv_root/kernel' is missing")
    if np.ndim(kernel) != 4:
        raise ValueError(
            f"Checkpoint key 'conv_root/kernel' has shape {_shape(np.shape(kernel))}, "
            "expected (7, 7, channels, root)"
        )
    units: dict[int, set[int]] = {}
    for key in arrays:
        match = _UNIT_KEY.match(key)
        if match:
            units.setdefault(int(match[1]), set()).add(int(match[2]))
        elif is_stem_key(key) and not _ROOT.match(key):
            raise ValueError(f"Checkpoint key {key!r} is not a ResNet stem parameter")
    layers = []
    for stage in range(1, len(units) + 1):
        found = units.get(stage)
        if not found or found != set(range(1, len(found) + 1)):
            raise ValueError(
                f"Checkpoint ResNet stages are not numbered block1..block{len(units)} with "
                f"units unit1..unitN: block{stage} has units {sorted(found or ())}"
            )
        layers.append(len(found))
    return tuple(layers), np.shape(kernel)[-1] / _BASE_WIDTH
