"""The paper's ViT variants as one table, and a named builder for each.

Sizes are those of Table 1 of Dosovitskiy et al. (2020) and the original code's model
configs (`vit_jax/configs/models.py`); Ti and S come from the follow-up "How to train your
ViT" (Steiner et al., 2021). Each builder merges its table row with the caller's overrides,
so `ViT_B16(num_classes=10, image_size=384, dropout=0.1)` is
`ViT(**VARIANTS["B/16"], num_classes=10, image_size=384, dropout=0.1)`. Every builder takes
`weights=` as `ViT` does: a checkpoint path or URL, or a published name resolved for that
variant (`ViT_B16(num_classes=10, image_size=384, weights="imagenet21k")`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import MappingProxyType

from keras_vit.model import VisionTransformer, ViT

_SIZES = {
    #        hidden_size, num_layers, num_heads, mlp_dim
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}
_VARIANT_NAMES = ("Ti/16", "S/16", "S/32", "B/8", "B/16", "B/32", "L/16", "L/32", "H/14")


def _row(variant: str) -> MappingProxyType:
    size, patch = variant.split("/")
    hidden_size, num_layers, num_heads, mlp_dim = _SIZES[size]
    return MappingProxyType(
        {
            "patch_size": int(patch),
            "hidden_size": hidden_size,
            "num_layers": num_layers,
            "num_heads": num_heads,
            "mlp_dim": mlp_dim,
        }
    )


VARIANTS: MappingProxyType = MappingProxyType({name: _row(name) for name in _VARIANT_NAMES})
"""Architecture of each variant, keyed by its paper name ("B/16", ...)."""


def variant_config(variant: str) -> dict:
    """Returns the architecture arguments of a variant.

    Args:
        variant: a paper name such as `"B/16"`, or a builder name such as `"ViT_B16"`.

    Returns:
        A new dict with `patch_size`, `hidden_size`, `num_layers`, `num_heads`, `mlp_dim`.
    """
    key = variant
    if key not in VARIANTS and key.startswith("ViT_"):
        body = key[len("ViT_") :]
        split = len(body.rstrip("0123456789"))
        key = f"{body[:split]}/{body[split:]}"
    if key not in VARIANTS:
        names = ", ".join(list(VARIANTS) + [builder_name(v) for v in VARIANTS])
        raise ValueError(f"Unknown ViT variant {variant!r}. Expected one of: {names}")
    return dict(VARIANTS[key])


def builder_name(variant: str) -> str:
    """`"B/16"` -> `"ViT_B16"`."""
    return "ViT_" + variant.replace("/", "")


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
