"""See inside a Vision Transformer: attention maps, rollout and the paper's Figure 7.

Analyses (numpy arrays out, no plotting):

- `attention_maps(model, images)`: every block's attention probabilities,
  `[batch, heads, tokens, tokens]` per layer, computed by the model's own layers.
- `attention_rollout(model, images)`: Abnar & Zuidema (2020) rollout as a patch-grid map
  and upsampled to the image; `rollout_from_attention` is the pure matrix part.
- `mean_attention_distance(model, images)`: per layer and head, the attention-weighted
  distance in pixels between query and key patches (paper Fig. 7, right).
- `position_embedding_similarity(model)`: cosine similarity between the patches' position
  embeddings, `[gh, gw, gh, gw]` (paper Fig. 7, centre).
- `patch_embedding_components(model, n=28)`: principal components of the patch-embedding
  filters as `(P, P, C)` images (paper Fig. 7, left).

Plot helpers (`plot_*`) write PNG files with matplotlib's Agg canvas, atomically, and
refuse to replace an existing file unless `overwrite=True`. The command line

    python -m keras_vit.visualize ckpt/ img.jpg [more.png ...] --output DIR [--force]

writes all of them for a checkpoint folder and one or more images.

Every analysis works for any `VisionTransformer`: class-token or `pooling="gap"` models,
non-square images, any depth.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from keras_vit.model import VisionTransformer

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

HeadFusion = Literal["mean", "max", "min"]
HEAD_FUSIONS: tuple[str, ...] = ("mean", "max", "min")


# === Attention from the model's own layers ===


def _check_model(model) -> None:
    from keras_vit.model import VisionTransformer

    if not isinstance(model, VisionTransformer):
        raise TypeError(
            "Expected a keras_vit VisionTransformer. "
            f"Received: model of type {type(model).__name__}"
        )


def _class_tokens(model) -> int:
    return int(model.get_layer("patch_encoder").use_class_token)


def _as_images(model, images) -> np.ndarray:
    images = np.asarray(images)
    expected = (*model.image_size, model.num_channels)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"Expected images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]}) "
            f"for model '{model.name}'. Received: shape={tuple(images.shape)}"
        )
    if images.dtype == np.uint8:
        raise ValueError(
            "Expected float images scaled to [-1, 1]. Received: uint8 images; scale them "
            "with keras_vit.data.scale_images first"
        )
    return images.astype("float32", copy=False)


def _attention_function(model, use_graph: bool):
    """images -> per-layer attention probabilities, through the model's own layers.

    With `use_graph=True` it is a `tf.function`: tracing costs about one eager pass, so it
    pays off only from the second batch on.
    """
    import tensorflow as tf

    patches = model.get_layer("patches")
    encoder = model.get_layer("patch_encoder")
    dropout = model.get_layer("embedding_dropout")
    blocks = [model.get_layer(f"encoderblock_{i}") for i in range(model.num_layers)]

    def attention(images):
        x = dropout(encoder(patches(images)), training=False)
        probs = []
        for block in blocks:
            x, scores = block(x, training=False, return_attention_scores=True)
            probs.append(tf.cast(scores, tf.float32))
        return probs

    if not use_graph:
        return attention
    spec = tf.TensorSpec((None, *model.image_size, model.num_channels), tf.float32)
    return tf.function(attention, input_signature=[spec])


def _attention_batches(model, images, batch_size: int):
    """Yields the per-layer attention of successive batches of `images`."""
    _check_model(model)
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

    The images go through the model's own `patches`, `patch_encoder`,
    `embedding_dropout` and `encoderblock_{i}` layers (inference mode), each block called
    with `return_attention_scores=True`; there is no second model definition.

    Args:
        model: a `VisionTransformer`.
        images: float images scaled to [-1, 1], `(batch, height, width, channels)` at the
            model's image size.
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
        _rollout_grid(model, rollout_from_attention(batch, head_fusion))
        for batch in _attention_batches(model, images, batch_size)
    ]
    grid = np.concatenate(maps)
    return Rollout(grid, upsample(grid, model.image_size))


def _rollout_grid(model, rollout: np.ndarray) -> np.ndarray:
    """`(batch, tokens, tokens)` rollout -> `(batch, gh, gw)` map of the pooled output."""
    skip = _class_tokens(model)
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
            model.patch_size,
            has_class_token=bool(_class_tokens(model)),
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


def cosine_similarity_grid(embeddings: np.ndarray, grid_size: Sequence[int]) -> np.ndarray:
    """Cosine similarity of `(gh * gw, D)` row-major embeddings -> `(gh, gw, gh, gw)`."""
    embeddings = np.asarray(embeddings, "float64")
    grid_h, grid_w = grid_size
    if embeddings.ndim != 2 or embeddings.shape[0] != grid_h * grid_w:
        raise ValueError(
            f"Expected ({grid_h * grid_w}, D) embeddings for grid {grid_h}x{grid_w}. "
            f"Received: shape={embeddings.shape}"
        )
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
    return (unit @ unit.T).reshape(grid_h, grid_w, grid_h, grid_w)


def position_embedding_similarity(model: VisionTransformer) -> np.ndarray:
    """Cosine similarity of each patch's position embedding with every other (Fig. 7, centre).

    The class token's embedding, if any, is left out.

    Args:
        model: a `VisionTransformer`.

    Returns:
        `(gh, gw, gh, gw)` float64: entry `[r, c, r2, c2]` is the similarity between the
        patch at row `r`, column `c` and the patch at `r2`, `c2`.

    Example:
    >>> position_embedding_similarity(model).shape
    (4, 6, 4, 6)
    """
    _check_model(model)
    encoder = model.get_layer("patch_encoder")
    embedding = np.asarray(encoder.position_embedding.numpy(), "float64")[0]
    return cosine_similarity_grid(embedding[_class_tokens(model) :], model.grid_size)


class Components(NamedTuple):
    """Principal components of the patch-embedding filters.

    Attributes:
        images: `(n, P, P, C)`: component `k` as a patch-sized image (unit norm, sign as
            the SVD gives it).
        explained_variance_ratio: `(n,)`: the share of the filters' variance each explains.
    """

    images: np.ndarray
    explained_variance_ratio: np.ndarray


def patch_embedding_components(model: VisionTransformer, n: int = 28) -> Components:
    """Principal components of the patch-embedding filters (paper Fig. 7, left).

    The projection kernel `(P * P * C, D)` is the original convolution kernel
    `(P, P, C, D)` flattened; its `D` columns are the filters. They are centred and
    decomposed by SVD (standard PCA over the `D` filters), and the first `n` components are
    reshaped to `(P, P, C)` images.

    Args:
        model: a `VisionTransformer`.
        n: number of components; at most `min(D, P * P * C)`.

    Returns:
        `Components(images, explained_variance_ratio)`.

    Example:
    >>> patch_embedding_components(model, n=6).images.shape
    (6, 8, 8, 3)
    """
    _check_model(model)
    kernel = model.get_layer("patch_encoder").projection.kernel.numpy().astype("float64")
    filters = kernel.T
    limit = min(filters.shape)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= limit:
        raise ValueError(
            f"Expected n between 1 and {limit} (min of {filters.shape[0]} filters and "
            f"{filters.shape[1]} pixels per filter). Received: n={n!r}"
        )
    centred = filters - filters.mean(axis=0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    size = model.patch_size
    images = vt[:n].reshape(n, size, size, model.num_channels)
    return Components(images, variance[:n] / variance.sum())


# === Plots ===


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: PathLike, overwrite: bool) -> Path:
    from keras_vit.artifacts import atomic_write_bytes

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"Output {path} already exists; pass --force to overwrite it")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    logger.debug("Wrote %s", path)
    return path


def _stretch(values: np.ndarray) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def _displayable(image: np.ndarray) -> np.ndarray:
    """uint8 or [-1, 1] float `(H, W, C)` -> float [0, 1] `(H, W)` or `(H, W, 3)`."""
    image = np.asarray(image)
    image = image / 255.0 if image.dtype == np.uint8 else (image + 1.0) / 2.0
    image = np.clip(image, 0.0, 1.0)
    return image[..., 0] if image.shape[-1] == 1 else image


def plot_attention_rollout(
    image: np.ndarray,
    rollout_map: np.ndarray,
    path: PathLike,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Writes image | rollout heat map | image weighted by the map (as paper Fig. 6).

    Args:
        image: `(H, W, C)` uint8, or float in [-1, 1].
        rollout_map: `(H, W)` (an `upsampled` map of `attention_rollout`).
        path: the PNG to write.
        title: figure title.
        overwrite: replace an existing file.

    Returns:
        `path`.
    """
    picture = _displayable(image)
    heat = _stretch(np.asarray(rollout_map, "float64"))
    figure = _figure(9, 3.4)
    axes = figure.subplots(1, 3)
    axes[0].imshow(picture, cmap="gray")
    axes[0].set_title("input")
    axes[1].imshow(picture, cmap="gray")
    axes[1].imshow(heat, cmap="jet", alpha=0.5)
    axes[1].set_title("attention rollout")
    shown = picture if picture.ndim == 3 else picture[..., None]
    axes[2].imshow(np.squeeze(shown * heat[..., None]), cmap="gray")
    axes[2].set_title("image x rollout")
    for axis in axes:
        axis.axis("off")
    if title:
        figure.suptitle(title)
    return _save(figure, path, overwrite)


def plot_attention_heads(
    image: np.ndarray,
    attention: np.ndarray,
    grid_size: Sequence[int],
    path: PathLike,
    has_class_token: bool = True,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Writes, per head of one layer, where the pooled output attends, over the image.

    Args:
        image: `(H, W, C)` uint8, or float in [-1, 1].
        attention: one image's attention of one layer, `(heads, tokens, tokens)`.
        grid_size: `(gh, gw)`.
        path: the PNG to write.
        has_class_token: show the class token's row (True) or the mean over all query
            rows (a `pooling="gap"` model).
        title: figure title.
        overwrite: replace an existing file.

    Returns:
        `path`.
    """
    attention = np.asarray(attention, "float64")
    skip = int(has_class_token)
    rows = attention[:, 0] if has_class_token else attention.mean(axis=1)
    maps = rows[:, skip:].reshape(-1, *grid_size)
    picture = _displayable(image)
    heads = maps.shape[0]
    cols = min(heads, 6)
    lines = -(-heads // cols)
    figure = _figure(2.2 * cols, 2.4 * lines + 0.4)
    axes = np.atleast_1d(figure.subplots(lines, cols, squeeze=False)).ravel()
    upsampled = upsample(maps, picture.shape[:2])
    for head, axis in enumerate(axes):
        axis.axis("off")
        if head < heads:
            axis.imshow(picture, cmap="gray")
            axis.imshow(_stretch(upsampled[head]), cmap="jet", alpha=0.5)
            axis.set_title(f"head {head}", fontsize=9)
    if title:
        figure.suptitle(title)
    return _save(figure, path, overwrite)


def plot_position_embedding_similarity(
    similarity: np.ndarray, path: PathLike, title: str = "", overwrite: bool = False
) -> Path:
    """Writes the paper's Fig. 7 (centre): one tile per patch, its similarity to all others.

    Args:
        similarity: `(gh, gw, gh, gw)` from `position_embedding_similarity`.
        path: the PNG to write.
        title: figure title.
        overwrite: replace an existing file.

    Returns:
        `path`.
    """
    grid_h, grid_w = similarity.shape[:2]
    figure = _figure(0.9 * grid_w + 1.2, 0.9 * grid_h + 0.6)
    axes = figure.subplots(grid_h, grid_w, squeeze=False)
    image = None
    for row in range(grid_h):
        for col in range(grid_w):
            axis = axes[row, col]
            image = axis.imshow(similarity[row, col], cmap="viridis", vmin=-1.0, vmax=1.0)
            axis.set_xticks([])
            axis.set_yticks([])
            if col == 0:
                axis.set_ylabel(str(row + 1), fontsize=8)
            if row == grid_h - 1:
                axis.set_xlabel(str(col + 1), fontsize=8)
    figure.supylabel("input patch row")
    figure.supxlabel("input patch column")
    figure.colorbar(image, ax=axes, shrink=0.8, label="cosine similarity")
    figure.suptitle(title or "Position embedding similarity")
    return _save(figure, path, overwrite)


def plot_mean_attention_distance(
    distances: np.ndarray,
    path: PathLike,
    image_size: Sequence[int] | None = None,
    uniform_distance: float | None = None,
    title: str = "",
    overwrite: bool = False,
) -> Path:
    """Writes the paper's Fig. 7 (right): one dot per head at each layer.

    Args:
        distances: `(num_layers, num_heads)` from `mean_attention_distance`.
        path: the PNG to write.
        image_size: `(H, W)`; if given, the y axis spans 0 to the image diagonal.
        uniform_distance: if given, drawn as a dashed line: the distance of attention
            spread evenly over all patches (`patch_distances(...).mean()`), for scale.
        title: figure title.
        overwrite: replace an existing file.

    Returns:
        `path`.
    """
    layers, heads = distances.shape
    figure = _figure(5, 4)
    axis = figure.subplots()
    for head in range(heads):
        axis.scatter(np.arange(layers), distances[:, head], s=14, label=f"head {head}")
    axis.set_xlabel("network depth (layer)")
    axis.set_ylabel("mean attention distance (pixels)")
    axis.set_xticks(np.arange(layers))
    if image_size is not None:
        axis.set_ylim(0, float(np.hypot(*image_size)))
    if uniform_distance is not None:
        axis.axhline(uniform_distance, color="gray", linestyle="--", label="uniform attention")
    if heads <= 16:
        axis.legend(fontsize=6, ncol=2)
    axis.set_title(title or "Size of attended area by head and depth")
    return _save(figure, path, overwrite)


def plot_patch_embedding_components(
    components: Components | np.ndarray, path: PathLike, title: str = "", overwrite: bool = False
) -> Path:
    """Writes the paper's Fig. 7 (left): each principal component as a small image.

    Each component is stretched to [0, 1] on its own for display.

    Args:
        components: `Components` or an `(n, P, P, C)` array.
        path: the PNG to write.
        title: figure title.
        overwrite: replace an existing file.

    Returns:
        `path`.
    """
    images = components.images if isinstance(components, Components) else components
    count = len(images)
    cols = min(count, 7)
    lines = -(-count // cols)
    figure = _figure(1.1 * cols, 1.1 * lines + 0.5)
    axes = figure.subplots(lines, cols, squeeze=False).ravel()
    for index, axis in enumerate(axes):
        axis.axis("off")
        if index < count:
            picture = _stretch(images[index])
            axis.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray")
    figure.suptitle(title or "Patch-embedding filters: principal components")
    return _save(figure, path, overwrite)


# === Images and the command line ===


def load_image(path: PathLike, image_size: Sequence[int], channels: int = 3) -> np.ndarray:
    """Reads a JPEG/PNG (RGB, grey, palette or with alpha) at the model's image size.

    Transparent pixels are composited onto white; 16-bit images are scaled to 8 bits. The
    image is resized (bilinear, aspect ratio not kept) to `image_size`.

    Args:
        path: the image file.
        image_size: `(height, width)`.
        channels: 3 (RGB) or 1 (grey).

    Returns:
        `(height, width, channels)` uint8; `keras_vit.data.scale_images` maps it to the
        model's [-1, 1] input.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Image {path} does not exist")
    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ValueError(f"{path} is not an image that can be read: {error}") from None
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit files are scaled to 8 bits; 32-bit modes only when they exceed 255.
        values = np.asarray(image, "float64")
        deep = image.mode.startswith("I;16") or values.max() > 255
        scale = 255.0 / 65535.0 if deep else 1.0
        image = Image.fromarray(np.clip(values * scale, 0, 255).astype("uint8"), "L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    image = image.convert("RGB" if channels == 3 else "L")
    height, width = image_size
    image = image.resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(image, "uint8")
    return array if array.ndim == 3 else array[..., None]


def _predictions(model, images: np.ndarray, labels: Sequence[str]) -> list[dict]:
    if not model.include_top:
        return [{} for _ in images]
    outputs = np.asarray(model.predict(images, verbose=0), "float64")
    if model.classifier_activation is None:
        outputs = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
        outputs /= outputs.sum(axis=-1, keepdims=True)
    best = outputs.argmax(axis=-1)
    names = [labels[i] if i < len(labels) else str(i) for i in best]
    return [
        {"label": name, "index": int(i), "probability": float(out[i])}
        for name, i, out in zip(names, best, outputs, strict=True)
    ]


def visualize_checkpoint(
    checkpoint: PathLike,
    image_paths: Sequence[PathLike],
    output: PathLike,
    head_fusion: HeadFusion = "mean",
    overwrite: bool = False,
) -> Path:
    """Writes every plot for a checkpoint folder and some images into `output`.

    Per image: `rollout_<stem>.png` and `attention_heads_<stem>.png` (last layer); for the
    model: `position_embedding_similarity.png`, `patch_embedding_components.png`,
    `mean_attention_distance.png` (over the given images); and `summary.json` with the
    predictions and the distances. The folder is built aside and moved into place.

    Args:
        checkpoint: a checkpoint folder (see `keras_vit.artifacts`).
        image_paths: image files.
        output: the folder to create.
        head_fusion: rollout head fusion.
        overwrite: replace an existing `output`.

    Returns:
        The output folder.
    """
    from keras_vit.artifacts import atomic_directory, atomic_write_json, read_checkpoint
    from keras_vit.data import scale_images

    ckpt = read_checkpoint(checkpoint)
    if not image_paths:
        raise ValueError("Expected at least one image. Received: none")
    stems = [Path(p).stem for p in image_paths]
    if len(set(stems)) != len(stems):
        raise ValueError(f"Image file names must differ (outputs are named after them): {stems}")
    output = Path(output)
    if output.exists() and not overwrite and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"Output {output} already exists; pass --force to overwrite it")
    try:
        model = ckpt.load_model()
    except Exception as error:  # any load failure is reported in one line
        raise ValueError(f"Could not load {ckpt.model_path}: {error}") from None
    _check_model(model)
    if tuple(model.image_size) != ckpt.image_size:
        raise ValueError(
            f"{ckpt.path} preprocessing image_size {ckpt.image_size} differs from the "
            f"model's {tuple(model.image_size)}"
        )
    raw = np.stack([load_image(p, model.image_size, model.num_channels) for p in image_paths])
    images = scale_images(raw).numpy()
    has_class_token = bool(_class_tokens(model))

    attentions = attention_maps(model, images)
    grid = _rollout_grid(model, rollout_from_attention(attentions, head_fusion))
    upsampled = upsample(grid, model.image_size)
    distances = attention_distance(
        np.stack(attentions), model.grid_size, model.patch_size, has_class_token
    )
    predictions = _predictions(model, images, ckpt.labels)
    pixels = model.patch_size**2 * model.num_channels
    components = patch_embedding_components(model, n=min(28, model.hidden_size, pixels))

    explained = components.explained_variance_ratio
    with atomic_directory(output, overwrite=overwrite) as folder:
        for index, stem in enumerate(stems):
            guess = predictions[index]
            label = stem
            if guess:
                label = f"{stem}: predicted {guess['label']} ({guess['probability']:.2f})"
            plot_attention_rollout(
                raw[index], upsampled[index], folder / f"rollout_{stem}.png", title=label
            )
            plot_attention_heads(
                raw[index],
                attentions[-1][index],
                model.grid_size,
                folder / f"attention_heads_{stem}.png",
                has_class_token=has_class_token,
                title=f"{stem}: layer {model.num_layers - 1} attention of the pooled output",
            )
        plot_position_embedding_similarity(
            position_embedding_similarity(model), folder / "position_embedding_similarity.png"
        )
        plot_patch_embedding_components(components, folder / "patch_embedding_components.png")
        plot_mean_attention_distance(
            distances,
            folder / "mean_attention_distance.png",
            image_size=model.image_size,
            uniform_distance=float(patch_distances(model.grid_size, model.patch_size).mean()),
            title=f"Mean attention distance over {len(images)} image(s)",
        )
        atomic_write_json(
            folder / "summary.json",
            {
                "checkpoint": str(ckpt.path),
                "images": [str(p) for p in image_paths],
                "predictions": predictions,
                "head_fusion": head_fusion,
                "mean_attention_distance_pixels": distances.round(4).tolist(),
                "patch_embedding_explained_variance": explained.round(6).tolist(),
            },
        )
    return output


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_vit.visualize",
        description="Attention rollout, per-head attention and the paper's Figure 7 "
        "analyses for a keras-vit checkpoint folder, as PNG files.",
    )
    parser.add_argument("checkpoint", help="checkpoint folder (model.keras, config.json, ...)")
    parser.add_argument("images", nargs="+", help="JPEG/PNG images (RGB, grey or with alpha)")
    parser.add_argument("--output", required=True, help="folder to create for the PNGs")
    parser.add_argument("--head-fusion", choices=HEAD_FUSIONS, default="mean")
    parser.add_argument("--force", action="store_true", help="replace an existing --output")
    args = parser.parse_args(argv)
    try:
        output = visualize_checkpoint(
            args.checkpoint, args.images, args.output, args.head_fusion, overwrite=args.force
        )
    except (FileNotFoundError, FileExistsError, ValueError, TypeError) as error:
        print("error:", " ".join(str(error).split()), file=sys.stderr)
        return 2
    print(f"Wrote {len(os.listdir(output))} files to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
