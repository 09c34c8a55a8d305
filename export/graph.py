"""Deprecated: the export graph moved to `export.classifier`; this alias goes in a release."""

from __future__ import annotations

import warnings

from export.classifier import PixelClassifier, check_classifier, fold_normalisation, rebuild

warnings.warn("export.graph is deprecated; use export.classifier", DeprecationWarning, stacklevel=2)

__all__ = [
    "PixelClassifier",
    "block_forward",
    "check_classifier",
    "fold_normalisation",
    "layer_norm",
    "rebuild",
]


def layer_norm(norm, x):
    """Deprecated: `norm(x, form="tflite")`."""
    return norm(x, form="tflite")


def block_forward(block, x, normed=None, class_token_only=False):
    """Deprecated: `block(x, training=False, class_token_only=..., form="tflite")`."""
    if normed is not None:
        raise ValueError(
            "block_forward(normed=...) is no longer supported; call the block with "
            "class_row_norm= (keras_vit.layers.TransformerBlock)"
        )
    return block(x, training=False, class_token_only=class_token_only, form="tflite")
