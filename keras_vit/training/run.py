"""`train`: one fault-tolerant training run over `model.fit`, written into a run directory.

The steps, each a function below: check the run directory (`output.check_output`), set
up the `tf.distribute` strategy, load the data and build the model inside the strategy's
scope (`_start`), set the old run aside (`--overwrite`), write `config.json` and
`labels.txt` (`_write_start`), fit (`_fit`), and finish on the chief (`_finish`:
`model.keras`, the test evaluation, `metrics.json`, plots).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras

from keras_vit import data, distribute
from keras_vit.atomic import atomic_write_json, atomic_write_text
from keras_vit.evaluate import CURVES_FILE, evaluate_model, plot_history, write_evaluation
from keras_vit.model import VisionTransformer
from keras_vit.run_dir import (
    BACKUP_DIR,
    CONFIG_FILE,
    HISTORY_FILE,
    LABELS_FILE,
    LOGS_DIR,
    METRICS_FILE,
    MODEL_FILE,
)
from keras_vit.training.build import build_training_model
from keras_vit.training.callbacks import (
    BackupAndRestore,
    DropPreviousRun,
    HistoryWriter,
    StopOnNonFiniteLoss,
    Throughput,
    read_history,
)
from keras_vit.training.config import TrainConfig
from keras_vit.training.errors import NonFiniteLossError
from keras_vit.training.output import (
    OutputState,
    check_output,
    restore_previous,
    run_config,
    save_float_model,
    set_aside_previous,
)

logger = logging.getLogger(__name__)

# Training images are cached in memory (uint8) below this size.
CACHE_LIMIT_BYTES = 4 * 1024**3


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns.

    Attributes:
        path: the run directory.
        metrics: the contents of `metrics.json` (test top-1, top-5, loss, examples, timing).
        history: the rows of `history.csv`.
    """

    path: Path
    metrics: dict
    history: list[dict]


@dataclass
class _Run:
    """What the steps of one run share."""

    config: TrainConfig
    output: Path
    strategy: object
    size: tuple[int, int]
    train_examples: data.Examples
    val_examples: data.Examples
    model: VisionTransformer
    mixed_policy: str
    steps_per_epoch: int

    @property
    def chief(self) -> bool:
        return distribute.is_chief(self.strategy)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train_examples.class_names


def resolve_strategy(strategy, tpu: str | None):
    """A strategy name (`keras_vit.distribute.make_strategy`) or object -> the strategy."""
    if isinstance(strategy, str):
        return distribute.make_strategy(strategy, tpu=tpu)
    if tpu is not None:
        raise distribute.DistributeError("tpu= is only used with strategy='tpu'")
    return strategy


def _barrier(strategy) -> None:
    """Returns once every worker got here (a one-number all-reduce); no-op on one machine."""
    if distribute.num_workers(strategy) > 1:
        values = strategy.experimental_distribute_values_from_function(
            lambda context: keras.ops.ones(())
        )
        strategy.reduce("SUM", values, axis=None)


def _finished_result(output: Path) -> TrainResult:
    logger.info("%s holds a finished run; nothing to resume", output)
    metrics_path = output / METRICS_FILE
    metrics = json.loads(metrics_path.read_text("utf-8")) if metrics_path.is_file() else {}
    return TrainResult(output, metrics, read_history(output / HISTORY_FILE))


def _start(config: TrainConfig, output: Path, strategy) -> _Run:
    """Loads the data and builds the model: everything a user can get wrong, checked
    before the run directory is touched."""
    image_size = config.architecture["image_size"]
    size = data.image_hw(image_size if isinstance(image_size, int) else tuple(image_size))
    train_examples = data.load_examples(config.dataset, "train", size, data_dir=config.data_dir)
    val_examples = data.load_examples(config.dataset, "validation", size, data_dir=config.data_dir)
    steps_per_epoch = math.ceil(train_examples.num_examples / config.batch_size)
    mixed_policy = distribute.mixed_precision_policy(strategy)
    with strategy.scope():
        model = build_training_model(
            config, len(train_examples.class_names), steps_per_epoch, mixed_policy=mixed_policy
        )
    return _Run(
        config=config,
        output=output,
        strategy=strategy,
        size=size,
        train_examples=train_examples,
        val_examples=val_examples,
        model=model,
        mixed_policy=mixed_policy,
        steps_per_epoch=steps_per_epoch,
    )


def _sync_workers(run: _Run, scratch: Path | None) -> None:
    """Every worker has checked the folder before the chief changes it."""
    _barrier(run.strategy)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)  # left by a killed worker


def _write_start(run: _Run, state: OutputState) -> None:
    """The chief creates the run directory with `config.json` and `labels.txt`."""
    if not run.chief:
        return
    run.output.mkdir(parents=True, exist_ok=True)
    if state in ("new", "overwrite"):
        float_config = dict(run.model.get_config(), dtype=None)
        config_json = run_config(float_config, run.config, len(run.class_names))
        atomic_write_json(run.output / CONFIG_FILE, config_json)
        atomic_write_text(run.output / LABELS_FILE, "\n".join(run.class_names) + "\n")


def _batches(run: _Run):
    """The training and validation pipelines, sharded by data."""
    config = run.config
    aug = data.Augmentation(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in config.augmentation.items()}
    )
    size = run.size
    cache = run.train_examples.num_examples * size[0] * size[1] * 3 <= CACHE_LIMIT_BYTES
    if not cache:
        logger.info(
            "Not caching the training images in memory (more than %d bytes)", CACHE_LIMIT_BYTES
        )
    train_batches = data.training_batches(
        run.train_examples, config.batch_size, seed=config.seed, augmentation=aug, cache=cache
    )
    val_batches = data.eval_batches(run.val_examples, config.batch_size, one_hot=True)
    return distribute.with_shard_policy(train_batches), distribute.with_shard_policy(val_batches)


def _callbacks(run: _Run, state: OutputState, scratch: Path | None, previous: Path | None):
    """`(stop_nan, throughput, all callbacks)` of the run."""
    stop_nan, throughput = StopOnNonFiniteLoss(), Throughput()
    backup = BackupAndRestore(
        # A non-chief restores only a run being resumed (the chief may be deleting others).
        str(run.output / BACKUP_DIR if run.chief or state == "resume" else scratch),
        scratch_dir=None if scratch is None else str(scratch),
        double_checkpoint=True,
        delete_checkpoint=False,  # deleted by _finish, once model.keras and metrics.json exist
    )
    callbacks = [stop_nan, throughput, backup]
    if previous is not None:
        callbacks.append(DropPreviousRun(previous))
    if run.chief:
        callbacks += [
            HistoryWriter(run.output / HISTORY_FILE),
            keras.callbacks.TensorBoard(
                str(run.output / LOGS_DIR), write_graph=False, profile_batch=0
            ),
        ]
    return stop_nan, throughput, callbacks


def _log_start(run: _Run) -> None:
    config, replicas = run.config, run.strategy.num_replicas_in_sync
    logger.info(
        "Training %s (%d parameters) on %s: %d train / %d validation images, %d classes, "
        "%d epochs of %d steps, %d replica%s, global batch %d%s",
        run.model.name,
        run.model.count_params(),
        config.dataset,
        run.train_examples.num_examples,
        run.val_examples.num_examples,
        len(run.class_names),
        config.epochs,
        run.steps_per_epoch,
        replicas,
        "" if replicas == 1 else "s",
        config.batch_size,
        f", {run.mixed_policy}" if config.mixed_precision else "",
    )


def _fit(run, state, scratch, previous, verbose, extra_callbacks) -> tuple[float, Throughput]:
    """`model.fit`; returns its wall time and throughput. Raises on a non-finite loss."""
    train_batches, val_batches = _batches(run)
    stop_nan, throughput, callbacks = _callbacks(run, state, scratch, previous)
    _log_start(run)
    start = time.perf_counter()
    with run.strategy.scope():
        distribute.prepare_model_for_fit(run.model, run.strategy, train_batches.element_spec)
        run.model.fit(
            train_batches,
            epochs=run.config.epochs,
            validation_data=val_batches,
            shuffle=False,  # the pipeline shuffles, seeded
            callbacks=[*callbacks, *extra_callbacks],
            verbose=verbose if run.chief else 0,
        )
    wall = time.perf_counter() - start
    if stop_nan.failure is not None:
        epoch, batch, loss = stop_nan.failure
        hint = "try a lower --learning-rate"
        raise NonFiniteLossError(
            f"Training stopped: the loss became {loss} at epoch {epoch}, batch {batch}; {hint}"
        )
    return wall, throughput


def _finish_worker(run: _Run, scratch: Path) -> TrainResult:
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        save_float_model(run.model, scratch / MODEL_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    task = distribute.task_of(run.strategy)
    logger.info("Worker %s done; the chief writes the run directory", task)
    return TrainResult(run.output, {}, [])


def _training_metrics(run: _Run, wall: float, throughput: Throughput) -> dict:
    config, strategy = run.config, run.strategy
    return {
        "epochs": config.epochs,
        "epochs_this_session": len(throughput.epoch_seconds),
        "wall_time_s": round(wall, 2),
        **throughput.images_per_second(run.train_examples.num_examples),
        "mixed_precision": config.mixed_precision,
        "dtype_policy": run.mixed_policy if config.mixed_precision else "float32",
        "jit_compile": config.jit_compile,
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "workers": distribute.num_workers(strategy),
    }


def _finish(run: _Run, wall: float, throughput: Throughput) -> TrainResult:
    """Writes `model.keras`, evaluates on the test split, writes metrics and plots."""
    config, output = run.config, run.output
    saved = save_float_model(run.model, output / MODEL_FILE)
    test_examples = data.load_examples(config.dataset, "test", run.size, data_dir=config.data_dir)
    evaluation = evaluate_model(saved, test_examples, batch_size=config.batch_size)
    metrics = evaluation.metrics("test", config.dataset)
    metrics["training"] = _training_metrics(run, wall, throughput)
    write_evaluation(output, evaluation, metrics, run.class_names)
    history = read_history(output / HISTORY_FILE)
    plot_history(history, output / CURVES_FILE)
    shutil.rmtree(output / BACKUP_DIR, ignore_errors=True)  # the run is complete
    logger.info(
        "Test top-1 %.2f %%, top-5 %.2f %% on %d images; run directory %s",
        100 * metrics["top1"],
        100 * metrics["top5"],
        metrics["num_examples"],
        output,
    )
    return TrainResult(output, metrics, history)


def train(
    config: TrainConfig,
    output: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    verbose: int | str = "auto",
    callbacks: Sequence[keras.callbacks.Callback] = (),
    strategy: distribute.StrategyName | object = "auto",
    tpu: str | None = None,
) -> TrainResult:
    """Trains a ViT and writes a run directory.

    The folder gets `config.json` and `labels.txt` when training starts, `history.csv`,
    `logs/` (TensorBoard) and `backup/` during training, and `model.keras`,
    `metrics.json`, `training_curves.png` and `confusion_matrix.png` at the end.

    The model, optimizer, loss and metrics are created inside `strategy.scope()`;
    `config.batch_size` is the global batch. In a multi-worker run only the chief writes
    the folder; the other workers return a `TrainResult` with empty metrics and history
    (see `keras_vit.distribute`).

    Args:
        config: the run, from `make_config`.
        output: the run directory; it must be absent or empty unless `resume` or
            `overwrite`.
        resume: continue the run in `output` (its config must match `config`); starts a
            new run if `output` is empty and returns at once if it has finished.
        overwrite: replace the keras-vit run in `output` (never a foreign folder). The old
            run is kept in `<output>.previous` until the new run completes its first epoch,
            and put back if the new run fails before that.
        verbose: `model.fit`'s verbosity (progress bars).
        callbacks: extra Keras callbacks.
        strategy: `"auto"`, `"default"`, `"mirrored"`, `"multiworker"`, `"tpu"`
            (`keras_vit.distribute.make_strategy`) or a `tf.distribute.Strategy`.
        tpu: the TPU for `strategy="tpu"` (name, `"local"` or `grpc://host:port`).

    Returns:
        A `TrainResult`.

    Raises:
        TrainingError: the run directory's state does not allow the run.
        NonFiniteLossError: the loss became NaN or infinite (message names epoch, batch).
        keras_vit.distribute.DistributeError: a strategy that cannot be set up, or a batch
            size the replicas cannot split (one line).
        keras_vit.data.DataError, ValueError: bad data source or model sizes (one line).

    Example:
    >>> config = keras_vit.training.make_config("digits", epochs=2)
    >>> result = keras_vit.training.train(config, "run", strategy="mirrored")
    >>> result.metrics["top1"]
    """
    output = Path(output)
    state = check_output(output, config, resume, overwrite)
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    strategy = resolve_strategy(strategy, tpu)
    distribute.check_global_batch(config.batch_size, strategy)
    if state == "finished":
        return _finished_result(output)
    chief = distribute.is_chief(strategy)
    scratch = None if chief else distribute.worker_scratch_dir(output, strategy)
    run = _start(config, output, strategy)
    _sync_workers(run, scratch)
    previous = set_aside_previous(output) if run.chief and state == "overwrite" else None
    try:
        _write_start(run, state)
        wall, throughput = _fit(run, state, scratch, previous, verbose, callbacks)
    except BaseException:
        restore_previous(output, previous)
        raise
    if not run.chief:
        return _finish_worker(run, scratch)
    return _finish(run, wall, throughput)
