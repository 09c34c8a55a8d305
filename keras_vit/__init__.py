"""keras-vit: the Vision Transformer for Keras 3, faithful to Google's checkpoints."""

from keras_vit import checkpoints, layers
from keras_vit.model import VisionTransformer, ViT
from keras_vit.variants import (
    VARIANTS,
    ViT_B8,
    ViT_B16,
    ViT_B32,
    ViT_H14,
    ViT_L16,
    ViT_L32,
    ViT_S16,
    ViT_S32,
    ViT_Ti16,
    variant_config,
)

__version__ = "0.1.0"

__all__ = [
    "VARIANTS",
    "ViT",
    "ViT_B8",
    "ViT_B16",
    "ViT_B32",
    "ViT_H14",
    "ViT_L16",
    "ViT_L32",
    "ViT_S16",
    "ViT_S32",
    "ViT_Ti16",
    "VisionTransformer",
    "checkpoints",
    "layers",
    "variant_config",
]
