"""What a training run does with its run directory before and after `model.fit`.

- `check_output`: the state of the folder (new, resume, finished, overwrite), changing
  nothing; a foreign folder is never overwritten.
- The overwrite rule: `--overwrite` never deletes the old run before the new one has
  completed an epoch. `set_aside_previous` renames it to `<name>.previous` beside the run
  directory; `DropPreviousRun` (a callback) deletes it after the first complete epoch;
  `restore_previous` puts it back when the new run fails before that (an error, a
  non-finite loss, Ctrl-C). After a kill in between, the old run is in
  `<name>.previous`: move it back by hand, or delete it; `--overwrite` refuses to run
  while it exists.
- `save_float_model`: the float32, optimizer-free `model.keras`, written atomically.
- `run_config`: the `config.json` of the run directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from keras_vit import data
from keras_vit.atomic import default_file_mode
from keras_vit.model import VisionTransformer
from keras_vit.run_dir import (
    BACKUP_DIR,
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    MODEL_FILE,
    preprocessing_spec,
)
from keras_vit.training.config import TrainConfig
from keras_vit.training.errors import TrainingError

logger = logging.getLogger(__name__)

OutputState = Literal["new", "overwrite", "resume", "finished"]
PREVIOUS_SUFFIX = ".previous"


def config_differences(old: dict, new: dict) -> list[str]:
    """The settings that differ between a stored `config.json["training"]` and `new`.

    A key an older run directory lacks was added since, with its default then in force.

    Returns:
        `"key (old in run directory, new now)"` per differing key, sorted.
    """
    defaults = TrainConfig().to_json()
    old = {**{k: defaults[k] for k in new if k not in old and k in defaults}, **old}
    keys = sorted(set(old) | set(new))
    return [
        f"{k} ({old.get(k)!r} in run directory, {new.get(k)!r} now)"
        for k in keys
        if old.get(k) != new.get(k)
    ]


def previous_path(output: Path) -> Path:
    """Where `--overwrite` keeps the old run until the new one completes an epoch."""
    return output.with_name(output.name + PREVIOUS_SUFFIX)


def _stored_config(output: Path) -> dict | None:
    """The run directory's `config.json` if it is ours, else None."""
    try:
        stored = json.loads((output / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) and stored.get("format") == FORMAT else None


def _check_overwrite(output: Path, stored: dict | None) -> OutputState:
    if stored is None:
        raise TrainingError(
            f"Output {output} is not empty and not a keras-vit run directory; "
            "refusing to overwrite it"
        )
    previous = previous_path(output)
    if previous.exists():
        raise TrainingError(
            f"{previous} holds the run an interrupted --overwrite set aside; move it back "
            f"to {output} or delete it first"
        )
    return "overwrite"


def _check_resume(output: Path, stored: dict | None, config: TrainConfig) -> OutputState:
    if stored is None:
        raise TrainingError(
            f"Cannot resume: {output / CONFIG_FILE} is missing or not a keras-vit config"
        )
    differences = config_differences(stored.get("training") or {}, config.to_json())
    if differences:
        raise TrainingError(
            f"Cannot resume {output}: the config differs in " + "; ".join(differences)
        )
    if (output / MODEL_FILE).is_file() and not (output / BACKUP_DIR).exists():
        return "finished"
    return "resume"


def check_output(output: Path, config: TrainConfig, resume: bool, overwrite: bool) -> OutputState:
    """Checks the run directory, changing nothing.

    Returns:
        `"new"` (absent or empty), `"overwrite"` (a keras-vit run directory to replace),
        `"resume"` (a matching unfinished run) or `"finished"` (a matching finished run).

    Raises:
        TrainingError: the folder's state does not allow the run (one line).
    """
    if resume and overwrite:
        raise TrainingError("Pass either --resume or --overwrite, not both")
    if output.exists() and not output.is_dir():
        raise TrainingError(f"Output {output} is a file, not a folder")
    if not output.exists() or not any(output.iterdir()):
        return "new"
    stored = _stored_config(output)
    if overwrite:
        return _check_overwrite(output, stored)
    if not resume:
        raise TrainingError(
            f"Output {output} is not empty; pass --resume to continue the run in it "
            "or --overwrite to replace it"
        )
    return _check_resume(output, stored, config)


def set_aside_previous(output: Path) -> Path:
    """Renames the run in `output` to `previous_path(output)`; returns that path."""
    previous = previous_path(output)
    os.replace(output, previous)
    logger.info(
        "Overwriting %s: the previous run is kept in %s until the new run completes an epoch",
        output,
        previous,
    )
    return previous


def restore_previous(output: Path, previous: Path | None) -> None:
    """Puts the set-aside run back into `output` if it is still there (no-op otherwise)."""
    if previous is None or not previous.exists():
        return
    shutil.rmtree(output, ignore_errors=True)
    os.replace(previous, output)
    logger.warning(
        "The new run stopped before completing an epoch; the previous run is back in %s", output
    )


def save_float_model(model: VisionTransformer, path: Path) -> VisionTransformer:
    """Saves a float32, optimizer-free copy of `model` atomically; returns the copy."""
    config = dict(model.get_config(), dtype=None)
    clean = VisionTransformer.from_config(config)
    clean.set_weights([np.asarray(w, dtype="float32") for w in model.get_weights()])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".keras")
    os.close(fd)
    try:
        clean.save(tmp)
        os.chmod(tmp, default_file_mode())  # mkstemp made it 0600
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return clean


def run_config(model_config: dict, config: TrainConfig, class_count: int) -> dict:
    """The run directory's `config.json`: format, model, preprocessing, dataset, training."""
    image_size = model_config["image_size"]
    spec = data.dataset_spec(config.dataset, config.data_dir)
    spec["num_classes"] = class_count
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_config,
        "preprocessing": preprocessing_spec(image_size),
        "dataset": spec,
        "training": config.to_json(),
    }
