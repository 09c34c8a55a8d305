"""Training: recipes, the run config, and a fault-tolerant training run over `model.fit`.

A run (`train(config, output)`) reads a data source (`keras_vit.data`), builds a ViT,
trains it with one of two recipes and writes a run directory (`keras_vit.run_dir`).

Modules: `recipes` (the `scratch` and `finetune` recipes, the default small model),
`config` (`TrainConfig`, `make_config`, adapting defaults to a small data set), `build`
(model, optimizer, loss, metrics), `callbacks`, `output` (the run directory's state and
the `--overwrite` rule), `run` (`train`). Every public name is importable from
`keras_vit.training`.

`build_training_model` creates the model, optimizer, loss and metrics in one function, and
`train(..., strategy=...)` calls it inside the `tf.distribute` strategy's scope
(`keras_vit.distribute`: one device, several GPUs, several machines, a TPU); batch sizes
are global batch sizes throughout, and in a multi-worker run only the chief writes files.

Fault tolerance: `keras.callbacks.BackupAndRestore` keeps the last completed epoch (weights,
optimizer state, epoch) in `<output>/backup/`, which is removed when the run finishes; a
killed run restarted with `resume=True` continues after that epoch. A resumed run sees
freshly seeded data order and augmentations from its restart on, so it is close to but
not bitwise equal to an uninterrupted run. A non-finite loss stops the run with
`NonFiniteLossError` naming the epoch and batch. `overwrite=True` keeps the old run in
`<output>.previous` until the new run has completed an epoch (`keras_vit.training.output`).
"""

from keras_vit.run_dir import BACKUP_DIR, LOGS_DIR
from keras_vit.training.build import (
    build_model,
    build_optimizer,
    build_training_model,
    learning_rate_schedule,
    load_run_weights,
)
from keras_vit.training.callbacks import (
    BackupAndRestore,
    DropPreviousRun,
    HistoryWriter,
    StopOnNonFiniteLoss,
    Throughput,
    read_history,
)
from keras_vit.training.config import (
    MIN_STEPS_PER_EPOCH,
    MIXING_MIN_IMAGES,
    TrainConfig,
    adapt_to_size,
    make_config,
)
from keras_vit.training.errors import NonFiniteLossError, TrainingError
from keras_vit.training.output import (
    check_output,
    config_differences,
    previous_path,
    restore_previous,
    run_config,
    save_float_model,
    set_aside_previous,
)
from keras_vit.training.recipes import (
    ARCHITECTURE_KEYS,
    DIGITS_SCRATCH,
    RECIPES,
    SMALL_MODEL,
    Recipe,
    RecipeName,
    recipe_for,
)
from keras_vit.training.run import CACHE_LIMIT_BYTES, TrainResult, resolve_strategy, train

__all__ = [
    "ARCHITECTURE_KEYS",
    "BACKUP_DIR",
    "CACHE_LIMIT_BYTES",
    "DIGITS_SCRATCH",
    "LOGS_DIR",
    "MIN_STEPS_PER_EPOCH",
    "MIXING_MIN_IMAGES",
    "RECIPES",
    "SMALL_MODEL",
    "BackupAndRestore",
    "DropPreviousRun",
    "HistoryWriter",
    "NonFiniteLossError",
    "Recipe",
    "RecipeName",
    "StopOnNonFiniteLoss",
    "Throughput",
    "TrainConfig",
    "TrainResult",
    "TrainingError",
    "adapt_to_size",
    "build_model",
    "build_optimizer",
    "build_training_model",
    "check_output",
    "config_differences",
    "learning_rate_schedule",
    "load_run_weights",
    "make_config",
    "previous_path",
    "read_history",
    "recipe_for",
    "resolve_strategy",
    "restore_previous",
    "run_config",
    "save_float_model",
    "set_aside_previous",
    "train",
]
