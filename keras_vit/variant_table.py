"""The paper's ViT variants as one constant table.

Sizes are those of Table 1 of Dosovitskiy et al. (2020) and the original code's model
configs (`vit_jax/configs/models.py`); Ti and S come from the follow-up "How to train your
ViT" (Steiner et al., 2021). The hybrids (section 3.1 of the paper, `"R50+B/16"`, ...) add
`resnet_layers` and `resnet_width`: a BiT ResNet stem whose feature map the Transformer cuts
into patches of `patch_size`. This module is data only: the builders (`keras_vit.ViT_B16`,
...) live in `keras_vit.variants`, which re-exports these names, and
`keras_vit.checkpoints` reads the table to resolve a published weights name for a model.
"""

from __future__ import annotations

from types import MappingProxyType

_SIZES = {
    #        hidden_size, num_layers, num_heads, mlp_dim
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}
_VARIANT_NAMES = ("Ti/16", "S/16", "S/32", "B/8", "B/16", "B/32", "L/16", "L/32", "H/14")
# Hybrids: paper name -> (Transformer size, patch size on the feature map, stem stages).
# The stem's own stride (16 for three stages, 32 for four or for the root block with patch 8)
# makes the name's patch size; see `vit_jax/configs/models.py`.
_HYBRIDS = {
    "R+Ti/16": ("Ti", 8, ()),
    "R26+S/32": ("S", 1, (2, 2, 2, 2)),
    "R50+B/16": ("B", 1, (3, 4, 9)),
    "R50+L/32": ("L", 1, (3, 4, 6, 3)),
}
_ARCHITECTURE_KEYS = ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim")


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


def _hybrid_row(variant: str) -> MappingProxyType:
    size, patch, layers = _HYBRIDS[variant]
    row = dict(_row(f"{size}/{patch}"))
    row.update(resnet_layers=layers, resnet_width=1.0)
    return MappingProxyType(row)


VARIANTS: MappingProxyType = MappingProxyType(
    {
        **{name: _row(name) for name in _VARIANT_NAMES},
        **{name: _hybrid_row(name) for name in _HYBRIDS},
    }
)
"""Architecture of each variant, keyed by its paper name ("B/16", "R50+B/16", ...); the
hybrids' rows also hold `resnet_layers` and `resnet_width`."""


def builder_name(variant: str) -> str:
    """`"B/16"` -> `"ViT_B16"`, `"R50+B/16"` -> `"ViT_R50_B16"`, `"R+Ti/16"` -> `"ViT_R_Ti16"`."""
    return "ViT_" + variant.replace("+", "_").replace("/", "")


_BUILDER_NAMES = MappingProxyType({builder_name(name): name for name in VARIANTS})


def variant_config(variant: str) -> dict:
    """Returns the architecture arguments of a variant.

    Args:
        variant: a paper name such as `"B/16"` or `"R50+B/16"`, or a builder name such as
            `"ViT_B16"` or `"ViT_R50_B16"`.

    Returns:
        A new dict with `patch_size`, `hidden_size`, `num_layers`, `num_heads`, `mlp_dim`,
        and for a hybrid `resnet_layers` and `resnet_width`.
    """
    key = _BUILDER_NAMES.get(variant, variant)
    if key not in VARIANTS:
        names = ", ".join(list(VARIANTS) + [builder_name(v) for v in VARIANTS])
        raise ValueError(f"Unknown ViT variant {variant!r}. Expected one of: {names}")
    return dict(VARIANTS[key])


def variant_of(model) -> str | None:
    """The `VARIANTS` name (`"B/16"`, ...) whose architecture `model` has, or None.

    Args:
        model: a `VisionTransformer` (anything with the five architecture attributes, and
            `resnet_layers` / `resnet_width` for a hybrid).
    """
    arch = {key: getattr(model, key) for key in _ARCHITECTURE_KEYS}
    layers = getattr(model, "resnet_layers", None)
    if layers is not None:
        arch.update(resnet_layers=tuple(layers), resnet_width=model.resnet_width)
    for name, row in VARIANTS.items():
        if dict(row) == arch:
            return name
    return None
