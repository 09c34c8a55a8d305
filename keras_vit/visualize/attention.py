"""Attention from a ViT's own layers: maps, rollout and mean attention distance.

- `attention_maps(model, images)`: every block's attention probabilities,
  `[batch, heads, tokens, tokens]` per layer, computed by the model's own layers.
- `attention_rollout(model, images)`: Abnar & Zuidema (2020) rollout as a patch-grid map
  and upsampled to the image; `rollout_from_attention` is the pure matrix part.
- `mean_attention_distance(model, images)`: per layer and head, the attention-weighted
  distance in pixels between query and key patches (paper Fig. 7, right).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from keras_vit.model import VisionTransformer

HeadFusion = Literal["mean", "max", "min"]
HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")


def check_vit(model) -> None:
    """Raises TypeError unless `model` is a keras_vit `VisionTransformer`."""
    from keras_vit.model import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise TypeError(
            "Expected a keras_vit VisionTransformer. "
            f"Received: model of type {type(model).__name__}"
        )


def class_token_count(model) -> int:
    """1 if the model's token sequence starts with a class token, else 0."""
    return int(model.get_layer("patch_encoder").use_class_token)


def _as_images(model, images) -> np.ndarray:
    images = np.asarray(images)
    expected = (*model.image_size, model.num_channels)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"Expected images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) "
            f"for model '{model.name}'. Received: shape={tuple(images.shape)}"
        )
    if images.dtype == np.uint8 and not model.include_preprocessing:
        raise ValueError(
            "Expected float images scaled to [-1, 1]. Received: uint8 images; scale them "
            "with keras_vit.data.scale_images first"
        )
    return images.astype("float32", copy=False)


def _attention_function(model, use_graph: bool):
    """images -> per-layer attention probabilities, by the model's own `forward`.

    With `use_graph=True` it is a `tf.function`: tracing costs about one eager pass, so it
    pays off only from the second batch on.
    """
    import tensorflow as tf

    def attention(images):
        _, scores = model.forward(images, training=False, return_attention_scores=True)
        return [tf.cast(s, tf.float32) for s in scores]

    if not use_graph:
        return attention
    spec = tf.TensorSpec((None, *model.image_size, model.num_channels), tf.float32)
    return tf.function(attention, input_signature=[spec])


def _attention_batches(model, images, batch_size: int):
    """Yields the per-layer attention of successive batches of `images`."""
    check_vit(model)
    images = _as_images(model, images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"Expected a positive integer batch_size. Received: {batch_size!r}")
    if len(images) == 0:
        raise ValueError("Expected at least one image. Received: an empty batch")
    attention = _attention_function(model, use_graph=len(images) > batch_size)
    for start in range(0, len(images), batch_size):
        yield [probs.numpy() for probs in attention(images[start : start + batch_size])]


def attention_maps(
    model: VisionTransformer, images: np.ndarray, batch_size: int = 32
) -> list[np.ndarray]:
    """The attention probabilities of every transformer block, from the model itself.

    The images go through the model's own forward pass (`VisionTransformer.forward` in
    inference mode, every block returning its attention probabilities); there is no second
    model definition.

    Args:
        model: a `VisionTransformer`.
        images: float images scaled to [-1, 1] (pixels 0..255 for a model built with
            `include_preprocessing=True`), `(batch, height, width, channels)` at the model's
            image size.
        batch_size: images per forward pass.

    Returns:
        A list with one float32 array per layer, `(batch, heads, tokens, tokens)`; each row
        (query) sums to 1. Token 0 is the class token when the model has one
        (`pooling="token"`); the patch tokens follow row by row over the patch grid.

    Example:
    >>> model = keras_vit.ViT(image_size=(32, 48), patch_size=8, hidden_size=32,
    ...                       num_layers=2, num_heads=2, mlp_dim=64, num_classes=3)
    >>> [a.shape for a in attention_maps(model, np.zeros((1, 32, 48, 3)))]
    [(1, 2, 25, 25), (1, 2, 25, 25)]
    """
    batches = list(_attention_batches(model, images, batch_size))
    return [np.concatenate(layer) for layer in zip(*batches, strict=True)]


# === Attention rollout ===


def rollout_from_attention(
    attentions: Sequence[np.ndarray], head_fusion: HeadFusion = "mean"
) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) of a stack of attention matrices.

    Each layer's heads are fused (`mean`, or the element-wise `max` / `min`), the residual
    connection is accounted for as `A' = 0.5 * A + 0.5 * I`, rows are renormalised to sum
    to 1, and the layers are multiplied from the first up: `R = A'_L @ ... @ A'_1`.

    Args:
        attentions: per layer, `(batch, heads, tokens, tokens)` (as `attention_maps`).
        head_fusion: how heads are combined.

    Returns:
        `(batch, tokens, tokens)` float64: row `i` is how much each input token flows into
        output token `i`; rows sum to 1.
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(
            f"Expected head_fusion to be one of {HEAD_FUSIONS}. Received: {head_fusion!r}"
        )
    if not attentions:
        raise ValueError("Expected at least one layer of attention. Received: none")
    rollout = None
    for layer in attentions:
        layer = np.asarray(layer, dtype="float64")
        if layer.ndim != 4 or layer.shape[-1] != layer.shape[-2]:
            raise ValueError(
                "Expected attention of shape (batch, heads, tokens, tokens). "
                f"Received: shape={layer.shape}"
            )
        fused = getattr(np, head_fusion)(layer, axis=1)
        fused = 0.5 * fused + 0.5 * np.eye(fused.shape[-1])
        fused /= fused.sum(axis=-1, keepdims=True)
        rollout = fused if rollout is None else fused @ rollout
    return rollout


class Rollout(NamedTuple):
    """An attention-rollout map.

    Attributes:
        grid: `(batch, grid_h, grid_w)`: the rollout weight of each patch.
        upsampled: `(batch, height, width)`: `grid` resized bilinearly to the image.
    """

    grid: np.ndarray
    upsampled: np.ndarray


def attention_rollout(
    model: VisionTransformer,
    images: np.ndarray,
    head_fusion: HeadFusion = "mean",
    batch_size: int = 32,
) -> Rollout:
    """Where the model's output looks in each image, by attention rollout.

    With a class token the map is the class token's row of the rollout over the patch
    tokens (its weight on itself is dropped); a `pooling="gap"` model pools the mean of
    all tokens, so its map is the mean over all rows. Values are the raw rollout weights
    (not rescaled); plots stretch them to the colour range.

    Args:
        model: a `VisionTransformer`.
        images: float images in [-1, 1] at the model's size, `(batch, height, width, channels)`.
        head_fusion: `"mean"` (as in the paper), `"max"` or `"min"` over heads.
        batch_size: images per forward pass.

    Returns:
        `Rollout(grid, upsampled)`.

    Example:
    >>> rollout = attention_rollout(model, images)
    >>> rollout.grid.shape, rollout.upsampled.shape
    ((1, 4, 6), (1, 32, 48))
    """
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(
            f"Expected head_fusion to be one of {HEAD_FUSIONS}. Received: {head_fusion!r}"
        )
    maps = [
        rollout_grid(model, rollout_from_attention(batch, head_fusion))
        for batch in _attention_batches(model, images, batch_size)
    ]
    grid = np.concatenate(maps)
    return Rollout(grid, upsample(grid, model.image_size))


def rollout_grid(model, rollout: np.ndarray) -> np.ndarray:
    """`(batch, tokens, tokens)` rollout -> `(batch, gh, gw)` map of the pooled output."""
    skip = class_token_count(model)
    rows = rollout[:, 0] if skip else rollout.mean(axis=1)
    return rows[:, skip:].reshape(-1, *model.grid_size).astype("float32")


def upsample(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of `(batch, h, w)` maps to `(batch, *size)`."""
    import keras

    resized = keras.ops.image.resize(
        np.asarray(maps, "float32")[..., None], tuple(size), interpolation="bilinear"
    )
    return keras.ops.convert_to_numpy(resized)[..., 0]


# === Paper Figure 7 ===


def patch_distances(grid_size: Sequence[int], patch_size: int) -> np.ndarray:
    """Euclidean distance in pixels between the centres of every pair of patches.

    Returns:
        `(gh * gw, gh * gw)`, patches in row-major order.
    """
    rows, cols = np.meshgrid(np.arange(grid_size[0]), np.arange(grid_size[1]), indexing="ij")
    centres = np.stack([rows.ravel(), cols.ravel()], axis=-1) * float(patch_size)
    return np.linalg.norm(centres[:, None] - centres[None], axis=-1)


def mean_attention_distance(
    model: VisionTransformer, images: np.ndarray, batch_size: int = 32, renormalize: bool = True
) -> np.ndarray:
    """Per layer and head, how far in pixels attention reaches (paper Fig. 7, right).

    For every query patch, the distance between its centre and each key patch's centre is
    weighted by the attention probability and summed; the result is averaged over query
    patches and images (see `attention_distance` for the class token).

    Args:
        model: a `VisionTransformer`.
        images: float images in [-1, 1] at the model's size, `(batch, height, width, channels)`.
        batch_size: images per forward pass; attention is reduced batch by batch, so many
            images fit in memory.
        renormalize: rescale each query's weights over the patches to sum to 1 once the
            class token is dropped.

    Returns:
        `(num_layers, num_heads)` float64, in pixels of the model's input image.

    Example:
    >>> mean_attention_distance(model, images).shape
    (2, 2)
    """
    total, count = 0.0, 0
    for batch in _attention_batches(model, images, batch_size):
        distance = attention_distance(
            np.stack(batch),
            model.grid_size,
            model.token_size,
            has_class_token=bool(class_token_count(model)),
            renormalize=renormalize,
        )
        total = total + distance * len(batch[0])
        count += len(batch[0])
    return total / count


def attention_distance(
    attention: np.ndarray,
    grid_size: Sequence[int],
    patch_size: int,
    has_class_token: bool,
    renormalize: bool = True,
) -> np.ndarray:
    """Mean attention distance of attention matrices, averaged over queries and images.

    The class token has no place in the image, so it is dropped from the queries and the
    keys. With `renormalize=True` each query's remaining weights are rescaled to sum to 1,
    a true weighted mean over patches. The widely copied `probing-vits` notebooks drop the
    class token without rescaling (`renormalize=False`), which shrinks the distance of
    heads that attend to the class token. Without a class token the two agree.

    Args:
        attention: `(..., batch, heads, T, T)` attention probabilities, `T = gh * gw`
            (+ 1 with a class token, which is token 0).
        grid_size: `(gh, gw)`.
        patch_size: patch side in pixels.
        has_class_token: whether token 0 is a class token.
        renormalize: rescale each query's weights over the patches to sum to 1.

    Returns:
        `(..., heads)` float64, in pixels.
    """
    distances = patch_distances(grid_size, patch_size)
    skip = int(has_class_token)
    tokens = distances.shape[0] + skip
    attention = np.asarray(attention, "float64")
    if attention.ndim < 4 or attention.shape[-2:] != (tokens, tokens):
        raise ValueError(
            f"Expected attention of shape (..., batch, heads, {tokens}, {tokens}) for grid "
            f"{tuple(grid_size)}. Received: shape={attention.shape}"
        )
    attention = attention[..., skip:, skip:]
    if renormalize:
        attention = attention / np.maximum(attention.sum(axis=-1, keepdims=True), 1e-12)
    per_query = (attention * distances).sum(axis=-1)
    return per_query.mean(axis=(-1, -3))
