"""The Keras callbacks of a training run and the `history.csv` they write.

- `HistoryWriter`: `history.csv` rewritten atomically after every epoch, continued on resume;
- `StopOnNonFiniteLoss`: stops at the first NaN / infinite loss and remembers where;
- `Throughput`: seconds per epoch spent in training batches;
- `BackupAndRestore`: Keras' backup of the last completed epoch, with one-line errors;
- `DropPreviousRun`: deletes the run `--overwrite` set aside once an epoch has completed.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import shutil
import time
from pathlib import Path

import keras

from keras_vit.atomic import atomic_write_text
from keras_vit.run_dir import BACKUP_DIR
from keras_vit.training.errors import TrainingError

logger = logging.getLogger(__name__)


class HistoryWriter(keras.callbacks.Callback):
    """Writes `history.csv` atomically after every epoch; on a resumed run it keeps the
    rows of the epochs before the one training restarts at."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.rows: list[dict] | None = None
        self.initial_epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        if self.rows is not None:
            return
        self.initial_epoch = epoch
        self.rows = [row for row in read_history(self.path) if int(row["epoch"]) <= epoch]
        if epoch:
            logger.info(
                "Resuming at epoch %d of %d: %d completed epoch%s restored from %s",
                epoch + 1,
                self.params.get("epochs", 0),
                epoch,
                "" if epoch == 1 else "s",
                self.path.parent / BACKUP_DIR,
            )

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1}
        row.update({key: float(value) for key, value in sorted((logs or {}).items())})
        # The learning rate the next step will use (the schedule at the current step).
        row["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.rows.append(row)
        columns = list(self.rows[0])
        columns += [key for row in self.rows for key in row if key not in columns]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, restval="", lineterminator="\n")
        writer.writeheader()
        for item in self.rows:
            writer.writerow(
                {
                    key: repr(value) if isinstance(value, float) else value
                    for key, value in item.items()
                }
            )
        atomic_write_text(self.path, out.getvalue())


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose running loss is NaN or infinite."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.failure: tuple[int, int, float] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.failure = (self.epoch + 1, batch + 1, float(loss))
            self.model.stop_training = True


class Throughput(keras.callbacks.Callback):
    """Seconds spent in each epoch's training batches (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.epoch_seconds: list[float] = []
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self.epoch_seconds.append(0.0)

    def on_test_begin(self, logs=None):
        self._stop()

    def on_epoch_end(self, epoch, logs=None):
        self._stop()

    def _stop(self):
        if self._start is not None:
            self.epoch_seconds[-1] += time.perf_counter() - self._start
            self._start = None

    def images_per_second(self, images_per_epoch: int) -> dict:
        """Over all epochs (the first includes graph tracing), and the median epoch after it."""
        seconds = self.epoch_seconds
        if not seconds or not sum(seconds):
            return {"train_images_per_second": None, "steady_images_per_second": None}
        later = sorted(seconds[1:])
        return {
            "train_images_per_second": round(images_per_epoch * len(seconds) / sum(seconds), 1),
            "steady_images_per_second": round(images_per_epoch / later[len(later) // 2], 1)
            if later
            else None,
        }


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' `BackupAndRestore` (two copies kept, so a kill while saving leaves the older
    one) whose restore failure reads as one line.

    On a non-chief worker (`scratch_dir` set) it restores from `backup_dir` (the chief's,
    read by every worker) but writes each backup into `scratch_dir` and deletes it at once.
    """

    def __init__(self, backup_dir: str, *, scratch_dir: str | None = None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.scratch_dir = scratch_dir

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError, KeyError) as error:
            raise TrainingError(
                f"Cannot restore the backup in {self.backup_dir} ({type(error).__name__}: "
                f"{str(error).splitlines()[0] if str(error) else ''}); "
                "start again with --overwrite"
            ) from None
        if self.scratch_dir is not None:
            self.backup_dir = self.scratch_dir
            self._weights_path = os.path.join(self.scratch_dir, "latest.weights.h5")
            self._training_metadata_path = os.path.join(self.scratch_dir, "training_metadata.json")
            self._prev_weights_path = f"{self._weights_path}.bkp"
            self._prev_training_metadata_path = f"{self._training_metadata_path}.bkp"

    def _save_model(self):
        super()._save_model()
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)


def read_history(path: str | os.PathLike) -> list[dict]:
    """The rows of a `history.csv` (values as floats, `epoch` as int); [] if absent."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        {key: int(value) if key == "epoch" else float(value) for key, value in row.items() if value}
        for row in rows
    ]


class DropPreviousRun(keras.callbacks.Callback):
    """Deletes `previous` (the run `--overwrite` replaces) after the first complete epoch.

    An epoch stopped by a non-finite loss is not complete: the previous run stays.
    """

    def __init__(self, previous: Path):
        super().__init__()
        self.previous = previous

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training or not self.previous.exists():
            return
        shutil.rmtree(self.previous)
        logger.info("Deleted the previous run %s: the new run completed an epoch", self.previous)
