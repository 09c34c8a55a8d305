"""Loads the Keras model of a run directory for export, evaluation and prediction.

Every way `model.keras` can be unusable (truncated or not a Keras archive, weights cut
short inside a valid archive, a class keras-vit does not know, a model that is not a
keras-vit `VisionTransformer`) becomes one `RunModelError` naming the file and the cause.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path


class RunModelError(ValueError):
    """A run directory's `model.keras` cannot be used (one line naming the file)."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _cause(path: Path, error: BaseException) -> str:
    """A short cause for a `keras.saving.load_model` failure."""
    text = str(error)
    match = re.search(r"(?:Could not locate class|Unknown (?:layer|object):?) '([^']+)'", text)
    if match:
        return f"it uses the class {match.group(1)!r}, which keras-vit does not register"
    if isinstance(error, OSError) and ("synchronously open" in text or "truncated" in text):
        return "its weights are truncated or corrupt"
    if isinstance(error, (zipfile.BadZipFile, EOFError)):
        return "it is truncated or not a Keras archive"
    return _first_line(error)


def load_model_file(path: str | Path):
    """Loads a keras-vit `model.keras` in safe mode.

    Returns:
        The `keras_vit.VisionTransformer`.

    Raises:
        RunModelError: the file is missing, truncated, not a Keras archive, has corrupt
            weights, uses an unregistered class, or holds another kind of model.
    """
    import keras

    import keras_vit

    path = Path(path)
    if not path.is_file():
        raise RunModelError(f"Model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise RunModelError(
            f"Cannot load {path}: it is truncated or not a Keras archive (.keras zip file)"
        )
    model_class = keras_vit.VisionTransformer  # imports (registers) the model's classes
    try:
        model = keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # Keras raises many types for a bad archive
        raise RunModelError(f"Cannot load {path}: {_cause(path, error)}") from None
    if not isinstance(model, model_class):
        raise RunModelError(
            f"Cannot load {path}: it holds a {type(model).__name__} model, not a keras-vit "
            "VisionTransformer"
        )
    return model


def load_run_model(run_dir):
    """The model of a run directory (`keras_vit.artifacts.CheckpointDir`), see `load_model_file`."""
    return load_model_file(run_dir.model_path)
