"""Deprecated: the Edge TPU graph is `export.classifier.PixelClassifier(profile="edgetpu")`.

This alias goes in a release.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from export.classifier import PixelClassifier

warnings.warn(
    'export.edge is deprecated; use export.classifier.PixelClassifier(profile="edgetpu")',
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["EdgeTPUClassifier"]


class EdgeTPUClassifier(PixelClassifier):
    """Deprecated: `PixelClassifier(model, mean, std, profile="edgetpu")`."""

    def __init__(self, model, mean: Sequence[float], std: Sequence[float], **kwargs):
        super().__init__(model, mean, std, profile="edgetpu", **kwargs)
