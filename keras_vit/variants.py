"""Building a Vision Transformer: `ViT()`, the named variants and `from_npz()`.

The variant table (`VARIANTS`, `variant_config`, from `keras_vit.variant_table`) is
re-exported here with a builder for each row. Each builder merges its table row with the
caller's overrides, so `ViT_B16(num_classes=10, image_size=384, dropout=0.1)` is
`ViT(**VARIANTS["B/16"], num_classes=10, image_size=384, dropout=0.1)`. Every builder takes
`weights=` as `ViT` does: a checkpoint path or URL, or a published name resolved for that
variant (`ViT_B16(num_classes=10, image_size=384, weights="imagenet21k")`). `from_npz(path)`
reads the architecture from the checkpoint itself.

This module sits above the model and the checkpoint loaders and is the only one that
joins them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence

from keras_vit import checkpoints, hybrid_keys
from keras_vit.checkpoints.posemb import PosembMethod, parse_grid
from keras_vit.model import VisionTransformer
from keras_vit.variant_table import VARIANTS, builder_name, variant_config, variant_of

__all__ = [
    "VARIANTS",
    "ViT",
    "ViT_B8",
    "ViT_B16",
    "ViT_B32",
    "ViT_H14",
    "ViT_L16",
    "ViT_L32",
    "ViT_R26_S32",
    "ViT_R50_B16",
    "ViT_R50_L32",
    "ViT_R_Ti16",
    "ViT_S16",
    "ViT_S32",
    "ViT_Ti16",
    "builder_name",
    "from_npz",
    "variant_config",
    "variant_of",
]


def ViT(*args, weights: str | os.PathLike | None = None, **kwargs) -> VisionTransformer:
    """Builds a Vision Transformer, optionally with pretrained weights.

    Takes the arguments of `VisionTransformer` (documented there, in the same order), plus
    `weights`. Defaults are ViT-B/16 at 224x224 with a 1000-class head.

    Args:
        *args, **kwargs: the architecture arguments of `keras_vit.VisionTransformer`.
        weights: None (random initialisation), the path or URL of an original ViT `.npz`
            checkpoint, or a published name such as `"imagenet21k"`,
            `"imagenet21k+imagenet2012"` or `"augreg"`, resolved for the model's variant
            (see `keras_vit.checkpoints.PRETRAINED`) and downloaded once into the Keras
            cache. The head is loaded when `num_classes` matches the file's, the position
            embedding is resized when the patch grid differs; see
            `keras_vit.checkpoints.load_npz`. To take the architecture from the file
            itself, use `keras_vit.from_npz`.

    Returns:
        A `VisionTransformer`, a functional `keras.Model`.

    Example:
    >>> model = keras_vit.ViT(image_size=32, patch_size=8, hidden_size=32, num_layers=2,
    ...                       num_heads=2, mlp_dim=64, num_classes=10)
    >>> model(np.zeros((1, 32, 32, 3))).shape
    TensorShape([1, 10])
    """
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ValueError(
            "Expected `weights` to be None, a path, a URL or a published name. "
            f"Received: weights={weights!r}"
        )
    model = VisionTransformer(*args, **kwargs)
    if weights is not None:
        checkpoints.load_weights(model, weights, variant=variant_of(model))
    return model


def _vit_signature() -> inspect.Signature:
    """`VisionTransformer`'s parameters (without `self` and `**kwargs`) plus `weights`."""
    params = [
        p
        for name, p in inspect.signature(VisionTransformer.__init__).parameters.items()
        if name != "self" and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    weights = inspect.Parameter(
        "weights", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | None"
    )
    return inspect.Signature([*params, weights], return_annotation=VisionTransformer)


ViT.__signature__ = _vit_signature()


def from_npz(
    path: str | os.PathLike,
    posemb_method: PosembMethod = "zoom",
    source_grid: int | Sequence[int] | None = None,
    **overrides,
) -> VisionTransformer:
    """Builds a model with the architecture of an original ViT `.npz` and loads it.

    The architecture comes from `keras_vit.checkpoints.read_architecture`; `overrides`
    replace any of its arguments or add others. A different `num_classes` gives a new,
    zero-initialised head; a different `image_size` resamples the position embedding.
    A file without a head builds a model with `include_top=False` unless `num_classes`
    is given.

    Args:
        path: the `.npz` file (a local path).
        posemb_method: how the position embedding is resized; see `load_npz`.
        source_grid: the file's patch grid `(rows, columns)` when the file neither records
            it nor is square; see `load_npz`.
        **overrides: `VisionTransformer` arguments, e.g. `num_classes=10`,
            `image_size=384`, `dropout=0.1`.

    Returns:
        A `VisionTransformer` holding the file's weights.

    Example:
    >>> model = keras_vit.from_npz("ViT-B_16.npz", num_classes=10, image_size=384)
    """
    config = checkpoints.read_architecture(path)
    if config["num_classes"] is None:
        config.pop("num_classes")
        config["include_top"] = "num_classes" in overrides
    if config["image_size"] is None and source_grid is not None:
        rows, columns = parse_grid(source_grid, "source_grid")
        pixels = config["patch_size"]
        if config.get("resnet_layers") is not None:
            pixels *= hybrid_keys.feature_stride(config["resnet_layers"])
        config["image_size"] = (rows * pixels, columns * pixels)
    elif config["image_size"] is None and "image_size" not in overrides:
        raise checkpoints.CheckpointError(
            f"{path}: the patch grid of its position embedding is not square and not "
            "recorded; pass image_size=(height, width) or source_grid=(rows, columns)"
        )
    config.update(overrides)
    model = VisionTransformer(**config)
    checkpoints.load_npz(model, path, posemb_method=posemb_method, source_grid=source_grid)
    return model


def _build(
    variant: str,
    num_classes: int,
    image_size: int | Sequence[int],
    weights: str | os.PathLike | None,
    overrides: dict,
) -> VisionTransformer:
    config = variant_config(variant)
    config.update(overrides)
    config.setdefault("name", builder_name(variant).lower())
    return ViT(num_classes=num_classes, image_size=image_size, weights=weights, **config)


def ViT_Ti16(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """ViT-Ti/16: width 192, 12 layers, 3 heads, MLP 768, 16x16 patches."""
    return _build("Ti/16", num_classes, image_size, weights, overrides)


def ViT_S16(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """ViT-S/16: width 384, 12 layers, 6 heads, MLP 1536, 16x16 patches."""
    return _build("S/16", num_classes, image_size, weights, overrides)


def ViT_S32(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """ViT-S/32: width 384, 12 layers, 6 heads, MLP 1536, 32x32 patches."""
    return _build("S/32", num_classes, image_size, weights, overrides)


def ViT_B8(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """ViT-B/8: width 768, 12 layers, 12 heads, MLP 3072, 8x8 patches."""
    return _build("B/8", num_classes, image_size, weights, overrides)


def ViT_B16(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """ViT-B/16: width 768, 12 layers, 12 heads, MLP 3072, 16x16 patches.

    Example:
    >>> model = keras_vit.ViT_B16(num_classes=10)
    >>> model.count_params()
    85806346
    """
    return _build("B/16", num_classes, image_size, weights, overrides)


def ViT_B32(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """ViT-B/32: width 768, 12 layers, 12 heads, MLP 3072, 32x32 patches."""
    return _build("B/32", num_classes, image_size, weights, overrides)


def ViT_L16(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """ViT-L/16: width 1024, 24 layers, 16 heads, MLP 4096, 16x16 patches."""
    return _build("L/16", num_classes, image_size, weights, overrides)


def ViT_L32(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """ViT-L/32: width 1024, 24 layers, 16 heads, MLP 4096, 32x32 patches."""
    return _build("L/32", num_classes, image_size, weights, overrides)


def ViT_H14(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """ViT-H/14: width 1280, 32 layers, 16 heads, MLP 5120, 14x14 patches."""
    return _build("H/14", num_classes, image_size, weights, overrides)


def ViT_R_Ti16(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """R+ViT-Ti/16: ResNet root block (stride 4), then Ti on 8x8 patches of its feature map.

    Example:
    >>> keras_vit.ViT_R_Ti16().count_params()
    6337704
    """
    return _build("R+Ti/16", num_classes, image_size, weights, overrides)


def ViT_R26_S32(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """R26+ViT-S/32: ResNet-26 stem (stages (2, 2, 2, 2), stride 32), then S on its pixels."""
    return _build("R26+S/32", num_classes, image_size, weights, overrides)


def ViT_R50_B16(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """R50+ViT-B/16: ResNet-50 stem (stages (3, 4, 9), stride 16), then B on its pixels."""
    return _build("R50+B/16", num_classes, image_size, weights, overrides)


def ViT_R50_L32(num_classes=1000, image_size=224, weights=None, **overrides) -> VisionTransformer:
    """R50+ViT-L/32: ResNet-50 stem (stages (3, 4, 6, 3), stride 32), then L on its pixels."""
    return _build("R50+L/32", num_classes, image_size, weights, overrides)
