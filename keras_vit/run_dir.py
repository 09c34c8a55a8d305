"""The run directory: the folder `python -m keras_vit.train --output` writes.

Evaluation, export and plots read it. A run directory (`run/`) holds:

- `model.keras`: the trained `VisionTransformer` (logits out, float32 [-1, 1] images in);
- `config.json`: `{"format": "keras-vit-checkpoint", "format_version": 1, "model": the
  model config, "preprocessing": how raw images become model inputs, "dataset": where the
  data came from, "training": the run's settings}` (the format string keeps its original
  value so older run directories stay readable);
- `labels.txt`: one class name a line, line i = class i;
- and, from training: `history.csv`, `metrics.json`, `training_curves.png`,
  `confusion_matrix.png`, `logs/` (TensorBoard).

Reading the config needs only the standard library; loading the model needs Keras.
Files are written with `keras_vit.atomic`.

`CheckpointDir` and `read_checkpoint` are the former names of `RunDir` and
`read_run_dir`, kept for one release.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from keras_vit.validation import first_line

FORMAT = "keras-vit-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.txt"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, LABELS_FILE)
# Training writes these while it runs: the last completed epoch, TensorBoard logs.
BACKUP_DIR = "backup"
LOGS_DIR = "logs"


def preprocessing_spec(image_size: Sequence[int], channels: int = 3) -> dict:
    """How raw images become model inputs: RGB uint8 -> (pixel - mean) / std in [-1, 1]."""
    return {
        "image_size": [int(image_size[0]), int(image_size[1])],
        "channels": channels,
        "channel_order": "RGB",
        "input_dtype": "uint8",
        "mean": [127.5] * channels,
        "std": [127.5] * channels,
        "range": [-1.0, 1.0],
    }


@dataclass(frozen=True)
class RunDir:
    """A validated run directory.

    Attributes:
        path: the folder.
        config: the parsed `config.json`.
        labels: the class names from `labels.txt`.
    """

    path: Path
    config: dict
    labels: tuple[str, ...]

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def image_size(self) -> tuple[int, int]:
        height, width = self.config["preprocessing"]["image_size"]
        return int(height), int(width)

    def load_model(self):
        """Loads `model.keras` (safe mode) as a `VisionTransformer`; see `load_model_file`."""
        return load_model_file(self.model_path)


def read_run_dir(path: str | os.PathLike) -> RunDir:
    """Reads and validates a run directory.

    Raises:
        FileNotFoundError: the folder or one of its required files is missing.
        ValueError: `config.json` is not a keras-vit run directory config, or the labels do not
            match the model's classes. Each message is one line naming the file.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"Run directory {path} does not exist")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a keras-vit run directory: missing {', '.join(missing)}"
        )
    config_path = path / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(
            f"{config_path} is not a keras-vit run directory config (format != {FORMAT!r})"
        )
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{config_path} has format_version {config.get('format_version')!r}; "
            f"this keras-vit reads {FORMAT_VERSION}"
        )
    for key in ("model", "preprocessing"):
        if not isinstance(config.get(key), dict):
            raise ValueError(f"{config_path} has no {key!r} section")
    try:
        text = (path / LABELS_FILE).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path / LABELS_FILE} is not UTF-8 text: {error.reason}") from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    model = config["model"]
    if model.get("include_top", True) and len(labels) != model.get("num_classes"):
        raise ValueError(
            f"{path / LABELS_FILE} has {len(labels)} labels but the model has "
            f"{model.get('num_classes')} classes"
        )
    return RunDir(path=path, config=config, labels=labels)


# Former names, kept for one release.
CheckpointDir = RunDir


def read_checkpoint(path: str | os.PathLike) -> RunDir:
    """Deprecated name of `read_run_dir`."""
    warnings.warn(
        "keras_vit.artifacts.read_checkpoint is deprecated; use keras_vit.run_dir.read_run_dir",
        DeprecationWarning,
        stacklevel=2,
    )
    return read_run_dir(path)


class RunModelError(ValueError):
    """A run directory's `model.keras` cannot be used (one line naming the file)."""


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
    return first_line(error)


def load_model_file(path: str | Path):
    """Loads a keras-vit `model.keras` in safe mode.

    Returns:
        The `keras_vit.VisionTransformer`.

    Raises:
        RunModelError: the file is missing, truncated, not a Keras archive, has corrupt
            weights, uses an unregistered class, or holds another kind of model.
    """
    import keras

    import keras_vit.model

    path = Path(path)
    if not path.is_file():
        raise RunModelError(f"Model file {path} does not exist")
    if not zipfile.is_zipfile(path):
        raise RunModelError(
            f"Cannot load {path}: it is truncated or not a Keras archive (.keras zip file)"
        )
    model_class = keras_vit.model.VisionTransformer  # importing it registers the classes
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
