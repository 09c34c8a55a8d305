"""Training recipes and a fault-tolerant training run over `model.fit`.

A run (`train(config, output)`) reads a data source (`keras_vit.data`), builds a ViT,
trains it with one of two recipes and writes a checkpoint folder (`keras_vit.artifacts`):

- `scratch` (DeiT / "How to train your ViT"): AdamW, lr 1e-3, weight decay 0.05, linear
  warmup (5 % of the steps) then cosine decay to 0, label smoothing 0.1, drop-path 0.1,
  random resized crop + flip, RandAugment (2 ops), MixUp 0.8 / CutMix 1.0.
- `finetune` (the ViT paper's fine-tuning code): SGD with momentum 0.9, lr 0.01, no weight
  decay, linear warmup (5 %) then cosine decay to 0, global-norm gradient clipping at 1.0,
  random resized crop + flip.

On `"digits"` the scratch recipe is adjusted to the data set (`recipe_for`): digits are
8x8 and not mirror-symmetric, so no flip, a mild crop (area 0.7-1), no RandAugment and
no MixUp / CutMix (RandAugment cost 3 points of accuracy there), 100 epochs of 64.

`build_training_model` creates the model, optimizer, loss and metrics in one function, and
`train(..., strategy=...)` calls it inside the `tf.distribute` strategy's scope
(`keras_vit.distribute`: one device, several GPUs, several machines, a TPU); batch sizes
are global batch sizes throughout, and in a multi-worker run only the chief writes files.

Fault tolerance: `keras.callbacks.BackupAndRestore` keeps the last completed epoch (weights,
optimizer state, epoch) in `<output>/backup/`, which is removed when the run finishes; a
killed run restarted with `resume=True` continues after that epoch. A resumed run sees
freshly seeded data order and augmentations from its restart on, so it is close to but
not bitwise equal to an uninterrupted run. A non-finite loss stops the run with
`NonFiniteLossError` naming the epoch and batch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import keras
import numpy as np

from keras_vit import artifacts, data, distribute, variants
from keras_vit.evaluate import CURVES_FILE, evaluate_model, plot_history, write_evaluation
from keras_vit.model import VisionTransformer, ViT

logger = logging.getLogger(__name__)

RecipeName = Literal["scratch", "finetune"]
BACKUP_DIR = "backup"
LOGS_DIR = "logs"

# Training images are cached in memory (uint8) below this size.
CACHE_LIMIT_BYTES = 4 * 1024**3

# The small ViT trained by default (on digits): 16x16 images cut into 4x4 patches (each
# patch is 2x2 pixels of the 8x8 original), 307k parameters.
SMALL_MODEL = {
    "image_size": 16,
    "patch_size": 4,
    "hidden_size": 96,
    "num_layers": 4,
    "num_heads": 4,
    "mlp_dim": 192,
}
ARCHITECTURE_KEYS = tuple(SMALL_MODEL)


class TrainingError(RuntimeError):
    """A run that cannot start or continue; the message is one line."""


class NonFiniteLossError(TrainingError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Recipe:
    """Optimisation and regularisation settings of a training run.

    Attributes:
        name: the recipe's name.
        optimizer: `"adamw"` or `"sgd"` (momentum `momentum`).
        learning_rate: peak learning rate, reached after the warmup.
        weight_decay: decoupled weight decay (AdamW), 0 for none.
        momentum: SGD momentum.
        global_clipnorm: clip gradients to this global norm, or None.
        warmup_fraction: share of the steps with a linear warmup from 0; a cosine decay to
            0 follows.
        label_smoothing: label smoothing of the cross-entropy.
        drop_path_rate: stochastic depth of the last block.
        epochs: default number of epochs.
        batch_size: default global batch size.
        augmentation: input-pipeline augmentation (`keras_vit.data.Augmentation`).
    """

    name: str
    optimizer: Literal["adamw", "sgd"]
    learning_rate: float
    weight_decay: float
    momentum: float
    global_clipnorm: float | None
    warmup_fraction: float
    label_smoothing: float
    drop_path_rate: float
    epochs: int
    batch_size: int
    augmentation: data.Augmentation


RECIPES: dict[str, Recipe] = {
    "scratch": Recipe(
        name="scratch",
        optimizer="adamw",
        learning_rate=1e-3,
        weight_decay=0.05,
        momentum=0.0,
        global_clipnorm=None,
        warmup_fraction=0.05,
        label_smoothing=0.1,
        drop_path_rate=0.1,
        epochs=100,
        batch_size=128,
        augmentation=data.Augmentation(
            crop_area=(0.08, 1.0), flip=True, randaugment_ops=2, mixup_alpha=0.8, cutmix_alpha=1.0
        ),
    ),
    "finetune": Recipe(
        name="finetune",
        optimizer="sgd",
        learning_rate=0.01,
        weight_decay=0.0,
        momentum=0.9,
        global_clipnorm=1.0,
        warmup_fraction=0.05,
        label_smoothing=0.0,
        drop_path_rate=0.0,
        epochs=10,
        batch_size=64,
        augmentation=data.Augmentation(crop_area=(0.05, 1.0), flip=True),
    ),
}

# The scratch recipe on digits (see the README's digits sweep for how it was chosen).
DIGITS_SCRATCH = dict(
    epochs=100,
    batch_size=64,
    warmup_fraction=0.1,
    augmentation=data.Augmentation(crop_area=(0.7, 1.0), crop_aspect=(0.8, 1.25), flip=False),
)


def recipe_for(name: str, dataset: str) -> Recipe:
    """The recipe `name`, adjusted to the data set (see the module docstring).

    Raises:
        ValueError: unknown recipe name.
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Expected one of: {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    if dataset == "digits" and name == "scratch":
        recipe = dataclasses.replace(recipe, **DIGITS_SCRATCH)
    return recipe


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; stored as `config.json["training"]`.

    Build it with `make_config`, which fills unset values from the recipe.

    Attributes:
        dataset: data source, as in `keras_vit.data.load_examples`.
        data_dir: tensorflow-datasets data folder, or None.
        model: a variant name (`"ViT_Ti16"`, `"B/16"`), or None for explicit sizes.
        architecture: `image_size`, `patch_size`, `hidden_size`, `num_layers`,
            `num_heads`, `mlp_dim` (for a variant: its sizes with the overrides applied).
        weights: pretrained weights passed to the model builder as `weights=`, or None.
        recipe: recipe name.
        epochs, batch_size, learning_rate, weight_decay, momentum, global_clipnorm,
        warmup_fraction, label_smoothing, drop_path_rate: as in `Recipe`.
        augmentation: `keras_vit.data.Augmentation` fields.
        seed: seeds the model, the data order and every augmentation.
        mixed_precision: train with a mixed policy, `"mixed_float16"` on GPUs and
            `"mixed_bfloat16"` on TPUs and CPUs (`keras_vit.distribute`); the saved model
            is float32.
        jit_compile: compile the train step with XLA.
        train_class_token_only: the model's `train_class_token_only` (the last block
            computes the class token alone in training too; see `keras_vit.ViT`).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    model: str | None = None
    architecture: dict = field(default_factory=lambda: dict(SMALL_MODEL))
    weights: str | None = None
    recipe: str = "scratch"
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    global_clipnorm: float | None = None
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.0
    drop_path_rate: float = 0.0
    augmentation: dict = field(default_factory=dict)
    seed: int = 0
    mixed_precision: bool = False
    jit_compile: bool = False
    train_class_token_only: bool = False

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))


def make_config(
    dataset: str = "digits",
    *,
    data_dir: str | os.PathLike | None = None,
    model: str | None = None,
    architecture: dict | None = None,
    weights: str | None = None,
    recipe: RecipeName = "scratch",
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    augmentation: dict | None = None,
    seed: int = 0,
    mixed_precision: bool = False,
    jit_compile: bool = False,
    train_class_token_only: bool = False,
) -> TrainConfig:
    """A complete `TrainConfig`: unset values come from the recipe and the model table.

    Args:
        dataset: data source name or folder.
        data_dir: tensorflow-datasets data folder.
        model: a variant name, or None for `SMALL_MODEL` (the default digits ViT).
        architecture: overrides of `image_size`, `patch_size`, `hidden_size`,
            `num_layers`, `num_heads`, `mlp_dim` (None values are ignored).
        weights: pretrained weights for the builder's `weights=` argument.
        recipe: `"scratch"` or `"finetune"`.
        epochs, batch_size, learning_rate: override the recipe's values.
        augmentation: overrides of `keras_vit.data.Augmentation` fields.
        seed: the run's seed.
        mixed_precision: train in mixed precision (`mixed_float16` on GPUs,
            `mixed_bfloat16` on TPUs and CPUs).
        jit_compile: XLA-compile the train step.
        train_class_token_only: train the last block on the class token alone (faster,
            the same gradients to float rounding; see `keras_vit.ViT`).

    Returns:
        A `TrainConfig`.

    Raises:
        ValueError: unknown recipe or variant, or an invalid value (one line).
    """
    chosen = recipe_for(recipe, dataset)
    if model is None:
        arch = dict(SMALL_MODEL)
    else:
        arch = {"image_size": 224, **variants.variant_config(model)}
    arch.update({k: v for k, v in (architecture or {}).items() if v is not None})
    unknown = set(arch) - set(ARCHITECTURE_KEYS)
    if unknown:
        raise ValueError(f"Unknown architecture keys: {', '.join(sorted(unknown))}")
    aug = dataclasses.asdict(chosen.augmentation)
    for key, value in (augmentation or {}).items():
        if key not in aug:
            raise ValueError(f"Unknown augmentation setting {key!r}")
        aug[key] = value
    data.Augmentation(**aug)  # validates
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"Expected `{name}` to be a positive integer. Received: {value!r}")
    if learning_rate is not None and not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(
            f"Expected `learning_rate` to be a positive finite number. Received: {learning_rate!r}"
        )
    kind = data.source_kind(dataset)
    return TrainConfig(
        dataset=str(Path(dataset).expanduser().resolve()) if kind == "folder" else dataset,
        data_dir=None if data_dir is None else str(Path(data_dir).expanduser().resolve()),
        model=model,
        architecture=arch,
        weights=None if weights is None else str(weights),
        recipe=recipe,
        epochs=epochs or chosen.epochs,
        batch_size=batch_size or chosen.batch_size,
        learning_rate=float(learning_rate or chosen.learning_rate),
        weight_decay=chosen.weight_decay,
        momentum=chosen.momentum,
        global_clipnorm=chosen.global_clipnorm,
        warmup_fraction=chosen.warmup_fraction,
        label_smoothing=chosen.label_smoothing,
        drop_path_rate=chosen.drop_path_rate,
        augmentation=json.loads(json.dumps(aug)),
        seed=int(seed),
        mixed_precision=bool(mixed_precision),
        jit_compile=bool(jit_compile),
        train_class_token_only=bool(train_class_token_only),
    )


def build_model(
    config: TrainConfig, num_classes: int, *, mixed_policy: str = "mixed_bfloat16"
) -> VisionTransformer:
    """The ViT a config describes, seeded with `config.seed`.

    `mixed_policy` is the Keras dtype policy used when `config.mixed_precision` is set.

    Raises:
        ValueError: invalid sizes (e.g. image size not divisible by the patch size).
        FileNotFoundError, ValueError: `config.weights` cannot be read or does not fit
            the model (one line, from `keras_vit.checkpoints`).
    """
    kwargs = dict(
        config.architecture,
        num_classes=num_classes,
        drop_path_rate=config.drop_path_rate,
        seed=config.seed,
        dtype=mixed_policy if config.mixed_precision else None,
        train_class_token_only=config.train_class_token_only,
    )
    builder = ViT
    if config.model is not None:
        variants.variant_config(config.model)  # one-line error for an unknown name
        name = config.model if config.model.startswith("ViT_") else None
        builder = getattr(variants, name or variants.builder_name(config.model))
    return builder(**kwargs, weights=config.weights)


def learning_rate_schedule(config: TrainConfig, steps_per_epoch: int):
    """Linear warmup from 0 to `learning_rate`, then cosine decay to 0, per step."""
    total = max(1, steps_per_epoch * config.epochs)
    warmup = min(total - 1, round(config.warmup_fraction * total))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0,
        decay_steps=max(1, total - warmup),
        alpha=0.0,
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )


def build_optimizer(config: TrainConfig, steps_per_epoch: int) -> keras.optimizers.Optimizer:
    """The recipe's optimizer with its warmup + cosine schedule."""
    schedule = learning_rate_schedule(config, steps_per_epoch)
    recipe = RECIPES[config.recipe]
    if recipe.optimizer == "adamw":
        return keras.optimizers.AdamW(
            schedule, weight_decay=config.weight_decay, global_clipnorm=config.global_clipnorm
        )
    return keras.optimizers.SGD(
        schedule,
        momentum=config.momentum,
        weight_decay=config.weight_decay or None,
        global_clipnorm=config.global_clipnorm,
    )


def build_training_model(
    config: TrainConfig,
    num_classes: int,
    steps_per_epoch: int,
    *,
    mixed_policy: str = "mixed_bfloat16",
) -> VisionTransformer:
    """Creates the model, optimizer, loss and metrics and compiles them.

    Everything that creates variables happens here, so a distributed run can call this
    inside `strategy.scope()`. Labels are one-hot (MixUp / CutMix make them soft).

    Args:
        config: the run's config.
        num_classes: classes of the head.
        steps_per_epoch: optimizer steps per epoch (global batches).
        mixed_policy: the dtype policy when `config.mixed_precision` is set; with
            `"mixed_float16"` Keras wraps the optimizer in a `LossScaleOptimizer`.

    Returns:
        A compiled `VisionTransformer`.
    """
    model = build_model(config, num_classes, mixed_policy=mixed_policy)
    optimizer = build_optimizer(config, steps_per_epoch)
    if config.mixed_precision and mixed_policy == "mixed_float16":
        # Keras wraps it by itself only when the model's own policy is mixed_float16; the
        # functional VisionTransformer keeps float32 for itself (its layers are mixed).
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=config.label_smoothing
        ),
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy"),
            keras.metrics.TopKCategoricalAccuracy(k=min(5, num_classes), name="top5"),
        ],
        jit_compile=config.jit_compile,
    )
    return model


# --- callbacks -----------------------------------------------------------------------


class _HistoryWriter(keras.callbacks.Callback):
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
        artifacts.atomic_write_text(self.path, out.getvalue())


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
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


class _Throughput(keras.callbacks.Callback):
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


class _BackupAndRestore(keras.callbacks.BackupAndRestore):
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


# --- the run -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """What `train` returns.

    Attributes:
        path: the checkpoint folder.
        metrics: the contents of `metrics.json` (test top-1, top-5, loss, examples, timing).
        history: the rows of `history.csv`.
    """

    path: Path
    metrics: dict
    history: list[dict]


def _differences(old: dict, new: dict) -> list[str]:
    # A key an older checkpoint lacks was added since, with its default then in force.
    defaults = TrainConfig().to_json()
    old = {**{k: defaults[k] for k in new if k not in old and k in defaults}, **old}
    keys = sorted(set(old) | set(new))
    return [
        f"{k} ({old.get(k)!r} in checkpoint, {new.get(k)!r} now)"
        for k in keys
        if old.get(k) != new.get(k)
    ]


def _check_output(output: Path, config: TrainConfig, resume: bool, overwrite: bool) -> str:
    """Checks the output folder, changing nothing.

    Returns:
        `"new"` (absent or empty), `"overwrite"` (a keras-vit checkpoint to delete),
        `"resume"` (a matching unfinished run) or `"finished"` (a matching finished run).
    """
    if resume and overwrite:
        raise TrainingError("Pass either --resume or --overwrite, not both")
    if output.exists() and not output.is_dir():
        raise TrainingError(f"Output {output} is a file, not a folder")
    if not output.exists() or not any(output.iterdir()):
        return "new"
    config_path = output / artifacts.CONFIG_FILE
    try:
        stored = json.loads(config_path.read_text(encoding="utf-8"))
        ours = stored.get("format") == artifacts.FORMAT
    except (OSError, ValueError, AttributeError):
        stored, ours = None, False
    if overwrite:
        if not ours:
            raise TrainingError(
                f"Output {output} is not empty and not a keras-vit checkpoint folder; "
                "refusing to overwrite it"
            )
        return "overwrite"
    if not resume:
        raise TrainingError(
            f"Output {output} is not empty; pass --resume to continue the run in it "
            "or --overwrite to replace it"
        )
    if not ours:
        raise TrainingError(f"Cannot resume: {config_path} is missing or not a keras-vit config")
    differences = _differences(stored.get("training") or {}, config.to_json())
    if differences:
        raise TrainingError(
            f"Cannot resume {output}: the config differs in " + "; ".join(differences)
        )
    if (output / artifacts.MODEL_FILE).is_file() and not (output / BACKUP_DIR).exists():
        return "finished"
    return "resume"


def _save_model(model: VisionTransformer, path: Path) -> VisionTransformer:
    """Saves a float32, optimizer-free copy of `model` atomically; returns the copy."""
    config = dict(model.get_config(), dtype=None)
    clean = VisionTransformer.from_config(config)
    clean.set_weights([np.asarray(w, dtype="float32") for w in model.get_weights()])
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".keras")
    os.close(fd)
    try:
        clean.save(tmp)
        os.chmod(tmp, artifacts.default_file_mode())  # mkstemp made it 0600
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return clean


def _checkpoint_config(model_config: dict, config: TrainConfig, class_count: int) -> dict:
    image_size = model_config["image_size"]
    spec = data.dataset_spec(config.dataset, config.data_dir)
    spec["num_classes"] = class_count
    return {
        "format": artifacts.FORMAT,
        "format_version": artifacts.FORMAT_VERSION,
        "model": model_config,
        "preprocessing": artifacts.preprocessing_spec(image_size),
        "dataset": spec,
        "training": config.to_json(),
    }


def _resolve_strategy(strategy, tpu: str | None):
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
    """Trains a ViT and writes a checkpoint folder.

    The folder gets `config.json` and `labels.txt` when training starts, `history.csv`,
    `logs/` (TensorBoard) and `backup/` during training, and `model.keras`,
    `metrics.json`, `training_curves.png` and `confusion_matrix.png` at the end.

    The model, optimizer, loss and metrics are created inside `strategy.scope()`;
    `config.batch_size` is the global batch. In a multi-worker run only the chief writes
    the folder; the other workers return a `TrainResult` with empty metrics and history
    (see `keras_vit.distribute`).

    Args:
        config: the run, from `make_config`.
        output: the checkpoint folder; it must be absent or empty unless `resume` or
            `overwrite`.
        resume: continue the run in `output` (its config must match `config`); starts a
            new run if `output` is empty and returns at once if it has finished.
        overwrite: delete the keras-vit checkpoint in `output` and start again.
        verbose: `model.fit`'s verbosity (progress bars).
        callbacks: extra Keras callbacks.
        strategy: `"auto"`, `"default"`, `"mirrored"`, `"multiworker"`, `"tpu"`
            (`keras_vit.distribute.make_strategy`) or a `tf.distribute.Strategy`.
        tpu: the TPU for `strategy="tpu"` (name, `"local"` or `grpc://host:port`).

    Returns:
        A `TrainResult`.

    Raises:
        TrainingError: the output folder state does not allow the run.
        NonFiniteLossError: the loss became NaN or infinite (message names epoch, batch).
        keras_vit.distribute.DistributeError: a strategy that cannot be set up, or a batch
            size the replicas cannot split (one line).
        keras_vit.data.DataError, ValueError: bad data source or model sizes (one line).

    Example:
    >>> config = keras_vit.training.make_config("digits", epochs=2)
    >>> result = keras_vit.training.train(config, "ckpt", strategy="mirrored")
    >>> result.metrics["top1"]
    """
    output = Path(output)
    image_size = config.architecture["image_size"]
    size = data.image_hw(image_size if isinstance(image_size, int) else tuple(image_size))
    state = _check_output(output, config, resume, overwrite)
    # MultiWorkerMirroredStrategy must exist before TensorFlow runs anything.
    strategy = _resolve_strategy(strategy, tpu)
    distribute.check_global_batch(config.batch_size, strategy)
    chief = distribute.is_chief(strategy)
    scratch = None if chief else distribute.worker_scratch_dir(output, strategy)
    if state == "finished":
        logger.info("%s holds a finished run; nothing to resume", output)
        metrics_path = output / artifacts.METRICS_FILE
        metrics = json.loads(metrics_path.read_text("utf-8")) if metrics_path.is_file() else {}
        return TrainResult(output, metrics, read_history(output / artifacts.HISTORY_FILE))
    # Everything else a user can get wrong is checked before the output folder is touched.
    train_examples = data.load_examples(config.dataset, "train", size, data_dir=config.data_dir)
    val_examples = data.load_examples(config.dataset, "validation", size, data_dir=config.data_dir)
    class_names = train_examples.class_names
    steps_per_epoch = math.ceil(train_examples.num_examples / config.batch_size)
    mixed_policy = distribute.mixed_precision_policy(strategy)
    with strategy.scope():
        model = build_training_model(
            config, len(class_names), steps_per_epoch, mixed_policy=mixed_policy
        )
    # Every worker has checked the folder before the chief changes it.
    _barrier(strategy)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)  # left by a killed worker
    if state == "overwrite" and chief:
        logger.info("Overwriting %s", output)
        shutil.rmtree(output)
    if state == "overwrite":
        state = "new"

    float_config = dict(model.get_config(), dtype=None)
    if chief:
        output.mkdir(parents=True, exist_ok=True)
    if state == "new" and chief:
        artifacts.atomic_write_json(
            output / artifacts.CONFIG_FILE,
            _checkpoint_config(float_config, config, len(class_names)),
        )
        artifacts.atomic_write_text(output / artifacts.LABELS_FILE, "\n".join(class_names) + "\n")

    aug = data.Augmentation(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in config.augmentation.items()}
    )
    cache = train_examples.num_examples * size[0] * size[1] * 3 <= CACHE_LIMIT_BYTES
    if not cache:
        logger.info(
            "Not caching the training images in memory (more than %d bytes)", CACHE_LIMIT_BYTES
        )
    train_batches = distribute.with_shard_policy(
        data.training_batches(
            train_examples, config.batch_size, seed=config.seed, augmentation=aug, cache=cache
        )
    )
    val_batches = distribute.with_shard_policy(
        data.eval_batches(val_examples, config.batch_size, one_hot=True)
    )

    stop_nan, throughput = _StopOnNonFiniteLoss(), _Throughput()
    history_writer = _HistoryWriter(output / artifacts.HISTORY_FILE)
    backup = _BackupAndRestore(
        # A non-chief restores only a run being resumed (the chief may be deleting others).
        str(output / BACKUP_DIR if chief or state == "resume" else scratch),
        scratch_dir=None if scratch is None else str(scratch),
        double_checkpoint=True,
        delete_checkpoint=False,  # deleted below, once model.keras and metrics.json exist
    )
    run_callbacks = [stop_nan, throughput, backup]
    if chief:
        run_callbacks += [
            history_writer,
            keras.callbacks.TensorBoard(str(output / LOGS_DIR), write_graph=False, profile_batch=0),
        ]
    run_callbacks += list(callbacks)
    logger.info(
        "Training %s (%d parameters) on %s: %d train / %d validation images, %d classes, "
        "%d epochs of %d steps, %d replica%s, global batch %d%s",
        model.name,
        model.count_params(),
        config.dataset,
        train_examples.num_examples,
        val_examples.num_examples,
        len(class_names),
        config.epochs,
        steps_per_epoch,
        strategy.num_replicas_in_sync,
        "" if strategy.num_replicas_in_sync == 1 else "s",
        config.batch_size,
        f", {mixed_policy}" if config.mixed_precision else "",
    )
    start = time.perf_counter()
    with strategy.scope():
        distribute.prepare_model_for_fit(model, strategy, train_batches.element_spec)
        model.fit(
            train_batches,
            epochs=config.epochs,
            validation_data=val_batches,
            shuffle=False,  # the pipeline shuffles, seeded
            callbacks=run_callbacks,
            verbose=verbose if chief else 0,
        )
    wall = time.perf_counter() - start
    if stop_nan.failure is not None:
        epoch, batch, loss = stop_nan.failure
        raise NonFiniteLossError(
            f"Training stopped: the loss became {loss} at epoch {epoch}, batch {batch}; "
            "try a lower --learning-rate"
        )

    if not chief:
        scratch.mkdir(parents=True, exist_ok=True)
        try:
            _save_model(model, scratch / artifacts.MODEL_FILE)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        logger.info("Worker %s done; the chief writes the checkpoint", distribute.task_of(strategy))
        return TrainResult(output, {}, [])
    saved = _save_model(model, output / artifacts.MODEL_FILE)
    test_examples = data.load_examples(config.dataset, "test", size, data_dir=config.data_dir)
    evaluation = evaluate_model(saved, test_examples, batch_size=config.batch_size)
    metrics = evaluation.metrics("test", config.dataset)
    metrics["training"] = {
        "epochs": config.epochs,
        "epochs_this_session": len(throughput.epoch_seconds),
        "wall_time_s": round(wall, 2),
        **throughput.images_per_second(train_examples.num_examples),
        "mixed_precision": config.mixed_precision,
        "dtype_policy": mixed_policy if config.mixed_precision else "float32",
        "jit_compile": config.jit_compile,
        "strategy": type(strategy).__name__,
        "replicas": strategy.num_replicas_in_sync,
        "workers": distribute.num_workers(strategy),
    }
    write_evaluation(output, evaluation, metrics, class_names)
    history = read_history(output / artifacts.HISTORY_FILE)
    plot_history(history, output / CURVES_FILE)
    shutil.rmtree(output / BACKUP_DIR, ignore_errors=True)  # the run is complete
    logger.info(
        "Test top-1 %.2f %%, top-5 %.2f %% on %d images; checkpoint in %s",
        100 * metrics["top1"],
        100 * metrics["top5"],
        metrics["num_examples"],
        output,
    )
    return TrainResult(output, metrics, history)
