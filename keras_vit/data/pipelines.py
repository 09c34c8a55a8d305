"""Input pipelines: cached uint8 examples -> shuffled, augmented, scaled batches.

Augmentation lives in the input pipeline, never in the model, so exported models hold no
augmentation layers:

- random resized crop + horizontal flip: written here with stateless TF ops (the
  Inception-style crop of the original code's training pipeline,
  `tf.image.stateless_sample_distorted_bounding_box`), one seed per example, so the map
  runs in parallel and stays deterministic;
- rotation, RandAugment, MixUp, CutMix: Keras 3's own layers (`keras.layers.RandomRotation`,
  `RandAugment`, `MixUp`, `CutMix`), applied per batch. They keep their random state in a
  variable, so the map that calls them runs sequentially (a parallel map would hand out
  that state in a nondeterministic order). Keras' RandAugment draws its operations once
  per call, so the images of one batch share their two operations (the magnitudes differ
  per image). keras-cv's RandAugment is not used: it is not reproducible with a seed and
  keras-cv is no longer developed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

from keras_vit.data.base import Examples, scale_images


@dataclass(frozen=True)
class Augmentation:
    """Training-time augmentation, applied in the input pipeline.

    Attributes:
        crop_area: area range `(min, max)` of the random resized crop, as a fraction of
            the image (Inception crop: `(0.08, 1.0)`; the original ViT code uses
            `(0.05, 1.0)`), or None for no crop.
        crop_aspect: aspect-ratio range of the crop.
        flip: random horizontal flips (wrong for digits and text).
        rotation_degrees: random rotations by up to this many degrees either way
            (`keras.layers.RandomRotation`, edges filled with the nearest pixel), 0 for none.
        randaugment_ops: operations per image of `keras.layers.RandAugment`, 0 for none.
        randaugment_magnitude: its `factor` in [0, 1].
        mixup_alpha: `keras.layers.MixUp(alpha)`, 0 for none.
        cutmix_alpha: `keras.layers.CutMix(factor)`, 0 for none. With both MixUp and
            CutMix, each batch gets one of them, chosen with equal chance.
    """

    crop_area: tuple[float, float] | None = (0.08, 1.0)
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    rotation_degrees: float = 0.0
    randaugment_ops: int = 0
    randaugment_magnitude: float = 0.5
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0

    def __post_init__(self):
        for name in ("rotation_degrees", "randaugment_magnitude", "mixup_alpha", "cutmix_alpha"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"Expected `{name}` to be a finite number. Received: {value!r}")
        for name in ("crop_area", "crop_aspect"):
            values = getattr(self, name)
            if values is not None and not all(math.isfinite(v) for v in values):
                raise ValueError(f"Expected `{name}` to be finite numbers. Received: {values!r}")
        if self.crop_area is not None and not 0 < self.crop_area[0] <= self.crop_area[1] <= 1:
            raise ValueError(
                f"Expected 0 < crop_area[0] <= crop_area[1] <= 1. Received: {self.crop_area}"
            )
        if not 0 < self.crop_aspect[0] <= self.crop_aspect[1]:
            raise ValueError(f"Expected 0 < crop_aspect[0] <= [1]. Received: {self.crop_aspect}")
        if not 0 <= self.rotation_degrees <= 180:
            raise ValueError(
                f"Expected rotation_degrees in [0, 180]. Received: {self.rotation_degrees}"
            )
        if self.randaugment_ops < 0 or not 0 <= self.randaugment_magnitude <= 1:
            raise ValueError(
                "Expected randaugment_ops >= 0 and randaugment_magnitude in [0, 1]. "
                f"Received: {self.randaugment_ops}, {self.randaugment_magnitude}"
            )
        if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
            raise ValueError(
                "Expected mixup_alpha, cutmix_alpha >= 0. "
                f"Received: {self.mixup_alpha}, {self.cutmix_alpha}"
            )


def random_resized_crop(image, seed, area, aspect):
    """Inception-style crop of a uint8 image, resized back to its size, as float32.

    Args:
        image: `[H, W, 3]` image.
        seed: a stateless seed, int `[2]`.
        area: `(min, max)` area fraction of the crop.
        aspect: `(min, max)` width / height ratio of the crop.

    Returns:
        float32 `[H, W, 3]` in the input's value range.
    """
    shape = tf.shape(image)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect,
        area_range=area,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    return tf.image.resize(crop, shape[:2], method="bilinear")


def training_batches(
    examples: Examples,
    batch_size: int,
    *,
    seed: int,
    augmentation: Augmentation | None = None,
    cache: bool = True,
    shuffle_buffer: int = 8192,
) -> tf.data.Dataset:
    """The training input pipeline: `(float32 images in [-1, 1], float32 one-hot labels)`.

    cache (uint8) -> shuffle (seeded, reshuffled each epoch) -> per-example crop + flip
    -> batch -> rotation -> RandAugment -> MixUp / CutMix -> scale to [-1, 1] -> prefetch. The same
    `seed` gives the same batches in every run.

    Args:
        examples: the training split, from `load_examples`.
        batch_size: the global batch size (the last batch may be smaller).
        seed: seeds the shuffle and every augmentation.
        augmentation: what to apply; None for none (shuffle and scaling only).
        cache: keep the decoded uint8 examples in memory after the first epoch.
        shuffle_buffer: at most this many examples in the shuffle buffer.

    Returns:
        A `tf.data.Dataset` of batches.
    """
    aug = augmentation or Augmentation(crop_area=None, flip=False)
    dataset = examples.dataset.cache() if cache else examples.dataset
    dataset = dataset.shuffle(
        min(shuffle_buffer, max(examples.num_examples, 1)), seed=seed, reshuffle_each_iteration=True
    )
    dataset = _crop_and_flip(dataset, examples, aug, seed).batch(batch_size)
    dataset = _mix(_batch_augmentations(dataset, aug, seed), aug, seed)
    dataset = dataset.map(lambda x, y: (scale_images(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _crop_and_flip(dataset, examples: Examples, aug: Augmentation, seed: int):
    """Per example: float32 image, random resized crop, flip; one-hot label (parallel)."""
    num_classes = len(examples.class_names)
    image_shape = examples.dataset.element_spec[0].shape
    # One stateless seed per example and epoch: parallel map, deterministic results.
    noise = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def per_example(example, rand):
        image, label = example
        image = tf.cast(image, tf.float32)
        if aug.crop_area is not None:
            image = random_resized_crop(image, tf.stack([rand, 1]), aug.crop_area, aug.crop_aspect)
            image = tf.ensure_shape(image, image_shape)
        if aug.flip:
            image = tf.image.stateless_random_flip_left_right(image, tf.stack([rand, 2]))
        return image, tf.one_hot(label, num_classes, dtype=tf.float32)

    zipped = tf.data.Dataset.zip(dataset, noise)
    return zipped.map(per_example, num_parallel_calls=tf.data.AUTOTUNE)


def _batch_augmentations(dataset, aug: Augmentation, seed: int):
    """Per batch: rotation and RandAugment (Keras layers, sequential maps)."""
    import keras

    # Keras' random layers keep state in a variable: sequential maps keep them reproducible.
    if aug.rotation_degrees:
        rotation = keras.layers.RandomRotation(
            aug.rotation_degrees / 360.0, fill_mode="nearest", seed=seed + 4
        )
        dataset = dataset.map(lambda x, y: (rotation(x), y))
    if aug.randaugment_ops:
        randaugment = keras.layers.RandAugment(
            value_range=(0, 255),
            num_ops=aug.randaugment_ops,
            factor=aug.randaugment_magnitude,
            seed=seed,
        )
        dataset = dataset.map(lambda x, y: (randaugment(x), y))
    return dataset


def _mix(dataset, aug: Augmentation, seed: int):
    """Per batch: MixUp or CutMix (one of the two, at random, when both are on)."""
    import keras

    mixers = []
    if aug.mixup_alpha:
        mixers.append(keras.layers.MixUp(alpha=aug.mixup_alpha, seed=seed + 1))
    if aug.cutmix_alpha:
        mixers.append(keras.layers.CutMix(factor=aug.cutmix_alpha, seed=seed + 2))
    if not mixers:
        return dataset

    def mix(images, labels, choice):
        data = {"images": images, "labels": labels}
        if len(mixers) == 1:
            out = mixers[0](data)
        else:
            out = tf.cond(choice < 0.5, lambda: mixers[0](data), lambda: mixers[1](data))
        return out["images"], out["labels"]

    choices = tf.data.Dataset.random(seed=seed + 3, rerandomize_each_iteration=True).map(
        lambda r: tf.cast(r % 2, tf.float32)
    )
    return tf.data.Dataset.zip(dataset, choices).map(lambda xy, c: mix(xy[0], xy[1], c))


def eval_batches(
    examples: Examples,
    batch_size: int,
    *,
    one_hot: bool = False,
    cache: bool = True,
) -> tf.data.Dataset:
    """The evaluation pipeline: `(float32 images in [-1, 1], labels)`, in a fixed order.

    Args:
        examples: a split, from `load_examples`.
        batch_size: examples per batch.
        one_hot: float32 one-hot labels (for Keras' categorical losses) instead of int32.
        cache: keep the decoded uint8 examples in memory after the first pass.

    Returns:
        A `tf.data.Dataset` of batches.
    """
    num_classes = len(examples.class_names)
    dataset = examples.dataset.cache() if cache else examples.dataset

    def prepare(image, label):
        if one_hot:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return scale_images(image), label

    dataset = dataset.batch(batch_size).map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
