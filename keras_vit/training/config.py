"""The run config: a `TrainConfig` built from a recipe, the model table and the caller.

`make_config` fills every unset value from the recipe (`keras_vit.training.recipes`) and
the model table, adapts the defaults to a small data set (`adapt_to_size`), and
validates what the caller gave (one-line `ValueError`s).

Adapting to a small data set (folder sources, and tensorflow-datasets sources already in
`data_dir`; only values the caller did not set): the batch is at most a tenth of the
training images, so an epoch has at least `MIN_STEPS_PER_EPOCH` steps, and below
`MIXING_MIN_IMAGES` training images MixUp, CutMix and RandAugment are off (they slow
learning more than they regularise there). Each choice is logged in one line. Digits
keeps its own recipe; a tfds data set not downloaded yet has no known size and keeps the
recipe's values.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from keras_vit import data, variants
from keras_vit.run_dir import read_run_dir
from keras_vit.training.recipes import (
    ARCHITECTURE_KEYS,
    SMALL_MODEL,
    Recipe,
    RecipeName,
    recipe_for,
)

logger = logging.getLogger(__name__)

MIN_STEPS_PER_EPOCH = 10
MIXING_MIN_IMAGES = 5000
MIXING_KEYS = ("mixup_alpha", "cutmix_alpha", "randaugment_ops")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run; stored as `config.json["training"]`.

    Build it with `make_config`, which fills unset values from the recipe.

    Attributes:
        dataset: data source, as in `keras_vit.data.load_examples`.
        data_dir: tensorflow-datasets data folder, or None.
        model: a variant name (`"ViT_Ti16"`, `"B/16"`), or None for explicit sizes.
        architecture: `image_size`, `patch_size`, `hidden_size`, `num_layers`,
            `num_heads`, `mlp_dim`, and for a hybrid `resnet_layers` and `resnet_width`
            (for a variant: its sizes with the overrides applied).
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


def adapt_to_size(
    recipe: Recipe, num_images: int, *, keep: frozenset[str] = frozenset()
) -> tuple[Recipe, list[str]]:
    """The recipe's defaults adapted to a training set of `num_images` images.

    Args:
        recipe: the recipe.
        num_images: training images.
        keep: settings the caller chose (`"batch_size"`, `MIXING_KEYS`): left as they are.

    Returns:
        `(recipe, messages)`: the adapted recipe and one line per change.
    """
    messages = []
    batch = max(1, num_images // MIN_STEPS_PER_EPOCH)
    if "batch_size" not in keep and batch < recipe.batch_size:
        messages.append(
            f"batch size {batch} instead of {recipe.batch_size}: {num_images} training images "
            f"give at least {MIN_STEPS_PER_EPOCH} steps per epoch (set --batch-size to choose)"
        )
        recipe = dataclasses.replace(recipe, batch_size=batch)
    aug = recipe.augmentation
    mixing = [key for key in MIXING_KEYS if getattr(aug, key) and key not in keep]
    if mixing and num_images < MIXING_MIN_IMAGES:
        messages.append(
            f"{', '.join(mixing)} off: fewer than {MIXING_MIN_IMAGES} training images "
            f"({num_images}); set --mixup / --cutmix / --randaugment to choose"
        )
        aug = dataclasses.replace(aug, **{key: 0 for key in mixing})
        recipe = dataclasses.replace(recipe, augmentation=aug)
    return recipe, messages


def _check_run_numbers(epochs, batch_size, learning_rate) -> None:
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"Expected `{name}` to be a positive integer. Received: {value!r}")
    if learning_rate is not None and not (learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(
            f"Expected `learning_rate` to be a positive finite number. Received: {learning_rate!r}"
        )


REGULARISATION_RANGES = {
    # name: (lowest allowed, highest allowed or None, is the highest excluded)
    "weight_decay": (0.0, None, False),
    "label_smoothing": (0.0, 1.0, True),
    "drop_path_rate": (0.0, 1.0, True),
}


def _check_regularisation(values: dict) -> None:
    for name, value in values.items():
        if value is None:
            continue
        low, high, open_high = REGULARISATION_RANGES[name]
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok = real and math.isfinite(value) and value >= low
        if ok and high is not None:
            ok = value < high if open_high else value <= high
        if not ok:
            bound = "" if high is None else f" and below {high:g}"
            raise ValueError(
                f"Expected `{name}` to be a number >= {low:g}{bound}. Received: {value!r}"
            )


def _architecture(model: str | None, overrides: dict | None, weights: str | None) -> dict:
    """The model sizes: the variant's (or `SMALL_MODEL`, or a run directory's) + overrides."""
    # resnet_layers=None is a value (the plain ViT), not "unset".
    overrides = {
        k: v for k, v in (overrides or {}).items() if v is not None or k == "resnet_layers"
    }
    if weights is not None and Path(weights).is_dir() and model is None:
        stored = read_run_dir(weights).config["model"]
        arch = {key: stored[key] for key in ARCHITECTURE_KEYS if key in stored}
    elif model is None:
        arch = dict(SMALL_MODEL)
    else:
        arch = {"image_size": 224, **variants.variant_config(model)}
    arch.update(overrides)
    unknown = set(arch) - set(ARCHITECTURE_KEYS)
    if unknown:
        raise ValueError(f"Unknown architecture keys: {', '.join(sorted(unknown))}")
    if "resnet_width" in overrides and arch.get("resnet_layers") is None:
        raise ValueError(
            "`resnet_width` sizes a hybrid's ResNet stem; give `resnet_layers` too (e.g. "
            f"--resnet-layers 3,4,9). Received: resnet_width={overrides['resnet_width']!r}"
        )
    return arch


def _augmentation(recipe: Recipe, overrides: dict | None) -> dict:
    aug = dataclasses.asdict(recipe.augmentation)
    for key, value in (overrides or {}).items():
        if key not in aug:
            raise ValueError(f"Unknown augmentation setting {key!r}")
        aug[key] = value
    data.Augmentation(**aug)  # validates
    return json.loads(json.dumps(aug))


def _train_size(dataset: str, kind: str, data_dir) -> int | None:
    """Training images of a folder (listed) or a prepared tfds data set; None if unknown."""
    if kind == "folder":
        return len(data.folder_files(dataset)[1]["train"])
    if kind == "tfds":
        return data.tfds_train_size(dataset, data_dir)
    return None  # digits keeps its own recipe


def _adapted_recipe(
    recipe: Recipe, dataset: str, kind: str, data_dir, batch_size, augmentation: dict | None
) -> Recipe:
    """`adapt_to_size` for a folder or an already prepared tfds source."""
    size = _train_size(dataset, kind, data_dir)
    if size is None:
        return recipe
    keep = set(augmentation or {}) | ({"batch_size"} if batch_size is not None else set())
    recipe, messages = adapt_to_size(recipe, size, keep=frozenset(keep))
    for message in messages:
        logger.info("Small data set: %s", message)
    return recipe


def _absolute(path: str | os.PathLike | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def make_config(
    dataset: str = "digits",
    *,
    data_dir: str | os.PathLike | None = None,
    model: str | None = None,
    architecture: dict | None = None,
    weights: str | os.PathLike | None = None,
    recipe: RecipeName = "scratch",
    epochs: int | None = None,
    batch_size: int | None = None,
    learning_rate: float | None = None,
    weight_decay: float | None = None,
    label_smoothing: float | None = None,
    drop_path_rate: float | None = None,
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
        weights: pretrained weights: a Google `.npz` checkpoint (the builder's `weights=`)
            or a run directory of an earlier training run (its `model.keras`; the model
            takes the run's architecture, and a new head when the class count differs).
        recipe: `"scratch"` or `"finetune"`.
        epochs, batch_size, learning_rate, weight_decay, label_smoothing,
            drop_path_rate: override the recipe's values (None keeps them).
        augmentation: overrides of `keras_vit.data.Augmentation` fields.
        seed: the run's seed.
        mixed_precision: train in mixed precision (`mixed_float16` on GPUs,
            `mixed_bfloat16` on TPUs and CPUs).
        jit_compile: XLA-compile the train step.
        train_class_token_only: train the last block on the class token alone (faster,
            the same gradients to float rounding; see `keras_vit.ViT`).

    Unset batch size and mixing augmentations adapt to a small folder or downloaded
    tensorflow-datasets data set (`adapt_to_size`; each choice is logged); digits keeps
    its recipe.

    Returns:
        A `TrainConfig`.

    Raises:
        ValueError: unknown recipe or variant, or an invalid value (one line).
    """
    _check_run_numbers(epochs, batch_size, learning_rate)
    regularisation = {
        "weight_decay": weight_decay,
        "label_smoothing": label_smoothing,
        "drop_path_rate": drop_path_rate,
    }
    _check_regularisation(regularisation)
    kind = data.source_kind(dataset)
    chosen = recipe_for(recipe, dataset)
    chosen = _adapted_recipe(chosen, dataset, kind, data_dir, batch_size, augmentation)
    weights = None if weights is None else os.fspath(weights)
    is_run_dir = weights is not None and Path(weights).is_dir()
    return TrainConfig(
        dataset=_absolute(dataset) if kind == "folder" else dataset,
        data_dir=_absolute(data_dir),
        model=model,
        architecture=_architecture(model, architecture, weights),
        weights=_absolute(weights) if is_run_dir else weights,
        recipe=recipe,
        epochs=epochs or chosen.epochs,
        batch_size=batch_size or chosen.batch_size,
        learning_rate=float(learning_rate or chosen.learning_rate),
        momentum=chosen.momentum,
        global_clipnorm=chosen.global_clipnorm,
        warmup_fraction=chosen.warmup_fraction,
        **{
            name: float(getattr(chosen, name) if value is None else value)
            for name, value in regularisation.items()
        },
        augmentation=_augmentation(chosen, augmentation),
        seed=int(seed),
        mixed_precision=bool(mixed_precision),
        jit_compile=bool(jit_compile),
        train_class_token_only=bool(train_class_token_only),
    )
