"""The model, optimizer, loss and metrics of a training run."""

from __future__ import annotations

import os
from pathlib import Path

import keras

from keras_vit import variants
from keras_vit.model import VisionTransformer
from keras_vit.run_dir import read_run_dir
from keras_vit.training.config import TrainConfig
from keras_vit.training.recipes import RECIPES
from keras_vit.variants import ViT


def build_model(
    config: TrainConfig, num_classes: int, *, mixed_policy: str = "mixed_bfloat16"
) -> VisionTransformer:
    """The ViT a config describes, seeded with `config.seed`.

    `mixed_policy` is the Keras dtype policy used when `config.mixed_precision` is set.

    Raises:
        ValueError: invalid sizes (e.g. image size not divisible by the patch size).
        FileNotFoundError, ValueError: `config.weights` cannot be read or does not fit
            the model (one line, from `keras_vit.checkpoints` or `load_run_weights`).
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
    if config.weights is not None and Path(config.weights).is_dir():
        model = builder(**kwargs)
        load_run_weights(model, config.weights)
        return model
    return builder(**kwargs, weights=config.weights)


def load_run_weights(model: VisionTransformer, path: str | os.PathLike) -> None:
    """Loads the weights of a run directory's `model.keras` into `model` (fine-tuning).

    Every weight is copied by its path; the classification head is copied only when its
    shape matches (same class count), else `model` keeps its new (zero) head.

    Raises:
        FileNotFoundError, ValueError: not a run directory, or its model's weights do
            not fit `model` (one line naming the first weight that differs).
    """
    source = read_run_dir(path).load_model()
    ours = {weight.path: weight for weight in model.weights}
    theirs = {weight.path: weight for weight in source.weights}
    for name, weight in ours.items():
        other = theirs.get(name)
        is_head = name.startswith("head/")
        if other is not None and tuple(other.shape) == tuple(weight.shape):
            weight.assign(keras.ops.cast(other.value, weight.dtype))
        elif not is_head:
            found = "missing" if other is None else f"shape {tuple(other.shape)}"
            raise ValueError(
                f"Run directory {path} does not fit the model: weight {name} has "
                f"shape {tuple(weight.shape)} here, {found} there"
            )


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
