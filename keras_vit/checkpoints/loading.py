"""Loading a Google `.npz` checkpoint into a `VisionTransformer`, all or nothing.

`load_npz(model, path)` reads the file, checks that its architecture, keys and shapes fit the
model, decides what to do with the head, the representation layer and the position
embedding, and only then assigns the weights. Each of those is a named step below.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import keras
import numpy as np

from keras_vit import hybrid_keys
from keras_vit.checkpoints.mapping import (
    HEAD_KEYS,
    POSEMB_KEY,
    PRE_LOGITS_KEYS,
    QUERY_KEY,
    block_index,
    original_shape,
    to_ours,
)
from keras_vit.checkpoints.npz import (
    CheckpointError,
    model_weights,
    read_checkpoint_arrays,
    read_posemb_grid,
    reshape_sizes,
)
from keras_vit.checkpoints.posemb import POSEMB_METHODS, PosembMethod, parse_grid, resample_posemb
from keras_vit.model import VisionTransformer

logger = logging.getLogger(__name__)


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


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _key_list(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f" ... and {len(keys) - limit} more" if len(keys) > limit else "")


def _check_architecture(model: VisionTransformer, arrays: dict[str, np.ndarray], path) -> None:
    """Clear messages for the mismatches that would otherwise show as many wrong shapes."""
    if "pos_embedding" in arrays and POSEMB_KEY not in arrays:
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
    if kernel.shape[2] != model.embedding_channels:
        what = "num_channels" if model.stem is None else "a stem feature map of"
        raise CheckpointError(
            f"{path} has {kernel.shape[2]} input channels in 'embedding/kernel' but the model "
            f"has {what}={model.embedding_channels}"
        )
    blocks = {i for key in arrays if (i := block_index(key)) is not None}
    if blocks and len(blocks) != model.num_layers:
        raise CheckpointError(
            f"{path} has {len(blocks)} encoder blocks but the model has "
            f"num_layers={model.num_layers}"
        )
    query = arrays.get(QUERY_KEY.format(i=0))
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


def _stem_assignments(
    model: VisionTransformer, stem_arrays: dict[str, np.ndarray], path
) -> list[tuple[keras.Variable, np.ndarray]]:
    """The ResNet stem's (variable, value) pairs, every key and shape checked.

    Raises:
        CheckpointError: a hybrid file for a plain model or the reverse, another stem depth
            or width, or a missing, unexpected or misshapen stem key (one line).
    """
    if model.stem is None and not stem_arrays:
        return []
    try:
        found = hybrid_keys.stem_config(stem_arrays) if stem_arrays else None
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    if found is not None:
        found = f"resnet_layers={found[0]}, resnet_width={found[1]}"
    if model.stem is None:
        raise CheckpointError(
            f"{path} is a hybrid checkpoint (a ResNet stem with {found}) but the model has "
            "resnet_layers=None; build it with those or use keras_vit.from_npz"
        )
    ours = f"resnet_layers={model.resnet_layers}, resnet_width={model.resnet_width}"
    if found is None:
        raise CheckpointError(
            f"{path} is a plain ViT checkpoint (no ResNet stem) but the model is a hybrid ({ours})"
        )
    if found != ours:
        raise CheckpointError(f"{path} has a ResNet stem with {found} but the model has {ours}")
    named = model.stem.weights_by_name()
    try:
        values = hybrid_keys.stem_from_checkpoint(
            stem_arrays, {name: tuple(v.shape) for name, v in named.items()}
        )
    except ValueError as error:
        raise CheckpointError(f"{path}: {error}") from None
    return [(named[name], value.astype(named[name].dtype)) for name, value in values.items()]


@dataclass
class _Plan:
    """What a load will do, decided before any weight is assigned."""

    expected: dict[str, tuple[keras.Variable, str, str]]
    dropped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    head_loaded: bool = False


def _plan_pre_logits(plan: _Plan, arrays: Mapping[str, np.ndarray]) -> None:
    """Drops the file's representation layer when the model has none."""
    if any(k in arrays for k in PRE_LOGITS_KEYS) and "pre_logits/kernel" not in plan.expected:
        for key in PRE_LOGITS_KEYS:
            if key in arrays:
                plan.dropped[key] = "the model has no representation layer"
        plan.notes.append("dropped pre_logits (the model has representation_size=None)")


def _plan_head(plan: _Plan, model: VisionTransformer, arrays: Mapping[str, np.ndarray]) -> None:
    """Loads the head when it fits the model; otherwise the model keeps its own."""
    if "head/kernel" not in plan.expected:
        if any(k in arrays for k in HEAD_KEYS):
            for key in HEAD_KEYS:
                if key in arrays:
                    plan.dropped[key] = "the model has no head (include_top=False)"
            plan.notes.append("dropped the head (the model has include_top=False)")
        return
    ours = tuple(plan.expected["head/kernel"][0].shape)
    theirs = arrays.get("head/kernel")
    file_pre_logits = any(k in arrays for k in PRE_LOGITS_KEYS)
    if theirs is None:
        reason = "the file has no head"
    elif file_pre_logits and "pre_logits/kernel" not in plan.expected:
        reason = "the file's head was trained on top of the dropped pre_logits layer"
    elif tuple(theirs.shape) != ours or "head/bias" not in arrays:
        reason = (
            f"the file's head has {theirs.shape[-1]} classes (kernel {_shape(theirs.shape)})"
            f" and the model's has num_classes={model.num_classes} (kernel {_shape(ours)})"
        )
    else:
        plan.head_loaded = True
        return
    plan.notes.append(f"head not loaded ({reason}); the model keeps its freshly initialised head")
    for key in HEAD_KEYS:
        if key in arrays:
            plan.dropped[key] = reason
        plan.expected.pop(key)


def _check_keys(plan: _Plan, arrays: Mapping[str, np.ndarray], path: Path) -> dict:
    """The arrays to load; raises when the file misses keys or has unexpected ones."""
    available = {k: v for k, v in arrays.items() if k not in plan.dropped}
    missing = sorted(set(plan.expected) - set(available))
    unexpected = sorted(set(available) - set(plan.expected))
    if missing and unexpected:
        raise CheckpointError(
            f"{path} does not match the model: missing keys {_key_list(missing)}; "
            f"unexpected keys {_key_list(unexpected)}"
        )
    if missing:
        hint = ""
        if set(missing) <= set(PRE_LOGITS_KEYS):
            hint = " (the file has no representation layer: build with representation_size=None)"
        raise CheckpointError(f"{path} is missing keys {_key_list(missing)}{hint}")
    if unexpected:
        raise CheckpointError(f"{path} has unexpected keys {_key_list(unexpected)}")
    return available


def _source_grid(path: Path, source_grid) -> tuple[int, int] | None:
    """The file's patch grid: the caller's, else the one recorded in the file, else None."""
    if source_grid is not None:
        return parse_grid(source_grid, "source_grid")
    return read_posemb_grid(path)


def _fit_posemb(model, posemb, target_shape, method, old, path):
    """The file's position embedding, resampled to the model's grid when that differs.

    `old` is the file's grid when known; otherwise a square grid is assumed when the
    number of positions is a square (Google's files are square), and a file of the model's
    own size with a non-square number of positions is taken as the model's grid.
    """
    prefix = 1 if model.pooling == "token" else 0
    if posemb.ndim != 3 or posemb.shape[0] != 1 or posemb.shape[2] != target_shape[2]:
        return posemb, None  # the shape check names the key and both shapes
    count = posemb.shape[1] - prefix
    if old is not None:
        if old[0] * old[1] != count:
            raise CheckpointError(
                f"{path}: source_grid={old[0]}x{old[1]} has {old[0] * old[1]} positions but "
                f"the file's position embedding has {count}"
            )
    else:
        side = round(float(np.sqrt(max(count, 0))))
        if count > 0 and side * side == count:
            old = (side, side)
        elif tuple(posemb.shape) == target_shape:
            return posemb, None
        else:
            raise CheckpointError(
                f"{path}: cannot infer the patch grid of {count} positions (not a square); "
                "pass source_grid=(rows, columns)"
            )
    new = tuple(model.grid_size)
    if old == new:
        return posemb, None
    resized = resample_posemb(posemb, new, old, method=method, num_prefix_tokens=prefix)
    return resized, (old, new)


def _assignments(plan, model, available, path, posemb_method, grid):
    """(variable, value) pairs in our layout, every shape checked; and the posemb resize."""
    sizes = reshape_sizes(model)
    posemb_resized = None
    assignments: list[tuple[keras.Variable, np.ndarray]] = []
    for key in sorted(plan.expected):
        variable, _, rule = plan.expected[key]
        array = available[key]
        target_shape = tuple(variable.shape)
        if key == POSEMB_KEY:
            array, posemb_resized = _fit_posemb(
                model, array, target_shape, posemb_method, grid, path
            )
        wanted = original_shape(rule, target_shape, sizes)
        if tuple(array.shape) != wanted:
            raise CheckpointError(
                f"{path}: key {key!r} has shape {_shape(array.shape)} but the model expects "
                f"{_shape(wanted)}"
            )
        assignments.append((variable, to_ours(rule, array).astype(variable.dtype)))
    if posemb_resized is not None:
        (old_h, old_w), (new_h, new_w) = posemb_resized
        plan.notes.append(
            f"resampled the position embedding from grid {old_h}x{old_w} to {new_h}x{new_w} "
            f"({posemb_method})"
        )
    return assignments, posemb_resized


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
    - A hybrid's ResNet stem (`conv_root`, `gn_root`, `block{i}/unit{j}/...`) loads
      through `keras_vit.hybrid_keys`; the file's stem must be the model's (same
      `resnet_layers` and `resnet_width`), and a hybrid file does not load into a plain
      model or the reverse.

    Args:
        model: a `VisionTransformer` (patch size, hidden size, depth, heads, MLP width and
            pooling must match the file).
        path: the `.npz` file.
        posemb_method: `"zoom"` (as the original code), `"bilinear"` (half-pixel, as timm)
            or `"bicubic"`; see `resample_posemb`.
        source_grid: the file's patch grid `(rows, columns)`, overriding the one the file
            records. Files written by `save_npz` record their grid; files without a record
            (Google's) are taken as square when their number of positions is a square.

    Returns:
        A `LoadSummary`.

    Raises:
        FileNotFoundError: `path` does not exist.
        CheckpointError: the file is not an `.npz` of float arrays (a corrupt or
            non-`.npy` member included), holds object arrays,
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
    plan = _Plan(expected=model_weights(model))
    stem_arrays, arrays = hybrid_keys.split_stem(read_checkpoint_arrays(path))
    stem_assignments = _stem_assignments(model, stem_arrays, path)
    _check_architecture(model, arrays, path)
    grid = _source_grid(path, source_grid)
    _plan_pre_logits(plan, arrays)
    _plan_head(plan, model, arrays)
    available = _check_keys(plan, arrays, path)
    assignments, posemb_resized = _assignments(plan, model, available, path, posemb_method, grid)
    for note in plan.notes:  # logged once everything is validated, so only for a real load
        logger.info("%s: %s", path.name, note)
    assignments += stem_assignments
    for variable, value in assignments:
        variable.assign(value)
    logger.info("Loaded %d arrays from %s into %s", len(assignments), path, model.name)
    return LoadSummary(
        path=path,
        loaded=tuple(sorted([*plan.expected, *stem_arrays])),
        dropped=MappingProxyType(plan.dropped),
        head_loaded=plan.head_loaded,
        posemb_resized=posemb_resized,
    )
