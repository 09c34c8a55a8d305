"""The checkpoint folder that training writes and evaluation, export and plots read.

A checkpoint folder (`ckpt/`) holds:

- `model.keras`: the trained `VisionTransformer` (logits out, float32 [-1, 1] images in);
- `config.json`: `{"format": "keras-vit-checkpoint", "format_version": 1, "model": the
  model config, "preprocessing": how raw images become model inputs, "dataset": where the
  data came from, "training": the run's settings}`;
- `labels.txt`: one class name a line, line i = class i;
- and, from training: `history.csv`, `metrics.json`, `training_curves.png`,
  `confusion_matrix.png`, `logs/` (TensorBoard).

Reading the config needs only the standard library; loading the model needs Keras.
Every file is written atomically (a temporary file in the same folder, then a rename),
so a crash leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

FORMAT = "keras-vit-checkpoint"
FORMAT_VERSION = 1
MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
LABELS_FILE = "labels.txt"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
REQUIRED_FILES = (MODEL_FILE, CONFIG_FILE, LABELS_FILE)


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


def default_file_mode() -> int:
    """The permission bits `open(path, "w")` gives a new file under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """Opens a temporary file beside `path` for binary writing; renames it onto `path`.

    The file gets the permissions a plain `open(path, "wb")` would give. On an exception
    the temporary file is removed and `path` is left as it was.

    Example:
    >>> with atomic_open("weights.npz") as handle:
    ...     np.savez(handle, x=np.zeros(3))
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes `data` to `path` through a temporary file and a rename."""
    with atomic_open(path) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Writes `text` (UTF-8) to `path` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Writes `obj` as indented JSON to `path` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Builds a directory in a temporary sibling and moves it into place on success.

    Args:
        path: the directory to create.
        overwrite: replace an existing `path`; without it an existing, non-empty `path`
            raises `FileExistsError` before anything is written.

    Yields:
        The temporary directory to write into. On an exception it is removed and `path`
        is left as it was.
    """
    path = Path(path)
    if path.exists() and not overwrite and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"Output {path} already exists; pass --force to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class CheckpointDir:
    """A validated checkpoint folder.

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
        """Loads `model.keras` (safe mode) as a `VisionTransformer`."""
        import keras

        import keras_vit.model  # noqa: F401  (registers the custom layers)

        return keras.saving.load_model(self.model_path, safe_mode=True)


def read_checkpoint(path: str | os.PathLike) -> CheckpointDir:
    """Reads and validates a checkpoint folder.

    Raises:
        FileNotFoundError: the folder or one of its required files is missing.
        ValueError: `config.json` is not a keras-vit checkpoint config, or the labels do not
            match the model's classes. Each message is one line naming the file.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"Checkpoint folder {path} does not exist")
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{path} is not a keras-vit checkpoint folder: missing {', '.join(missing)}"
        )
    config_path = path / CONFIG_FILE
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_path} is not valid JSON: {error}") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(
            f"{config_path} is not a keras-vit checkpoint config (format != {FORMAT!r})"
        )
    if config.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{config_path} has format_version {config.get('format_version')!r}; "
            f"this keras-vit reads {FORMAT_VERSION}"
        )
    for key in ("model", "preprocessing"):
        if not isinstance(config.get(key), dict):
            raise ValueError(f"{config_path} has no {key!r} section")
    labels = tuple(
        line.strip()
        for line in (path / LABELS_FILE).read_text(encoding="utf-8").splitlines()
        if line.strip()
    )
    model = config["model"]
    if model.get("include_top", True) and len(labels) != model.get("num_classes"):
        raise ValueError(
            f"{path / LABELS_FILE} has {len(labels)} labels but the model has "
            f"{model.get('num_classes')} classes"
        )
    return CheckpointDir(path=path, config=config, labels=labels)
