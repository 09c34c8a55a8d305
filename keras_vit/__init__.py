"""keras-vit: the Vision Transformer for Keras 3, faithful to Google's checkpoints.

Importing the package is cheap: the names below are loaded on first use (PEP 562), so
TensorFlow-free modules such as `keras_vit.images` and the CLIs' `--help` do not import
Keras. Loading a `.keras` file needs the custom layers registered with Keras: that happens
at `import keras_vit` when Keras is already imported (`import keras` first, as usual), and
otherwise on first use of a model name (`keras_vit.ViT`, ...) or `import keras_vit.model`.
"""

from __future__ import annotations

import importlib
import sys

__version__ = "0.1.0"

# Public name -> the module that defines it; submodules map to themselves.
_EXPORTS = {
    "VARIANTS": "keras_vit.variants",
    "ViT": "keras_vit.variants",
    "ViT_B8": "keras_vit.variants",
    "ViT_B16": "keras_vit.variants",
    "ViT_B32": "keras_vit.variants",
    "ViT_H14": "keras_vit.variants",
    "ViT_L16": "keras_vit.variants",
    "ViT_L32": "keras_vit.variants",
    "ViT_R26_S32": "keras_vit.variants",
    "ViT_R50_B16": "keras_vit.variants",
    "ViT_R50_L32": "keras_vit.variants",
    "ViT_R_Ti16": "keras_vit.variants",
    "ViT_S16": "keras_vit.variants",
    "ViT_S32": "keras_vit.variants",
    "ViT_Ti16": "keras_vit.variants",
    "from_npz": "keras_vit.variants",
    "decode_predictions": "keras_vit.imagenet",
    "variant_config": "keras_vit.variants",
    "VisionTransformer": "keras_vit.model",
    "checkpoints": None,
    "imagenet": None,
    "layers": None,
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_vit' has no attribute {name!r}")
    module = _EXPORTS[name]
    value = (
        importlib.import_module(f"keras_vit.{name}")
        if module is None
        else getattr(importlib.import_module(module), name)
    )
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if sys.modules.get("keras") is not None:  # Keras is loaded: register the layers for load_model
    importlib.import_module("keras_vit.model")
