"""Plots of the analyses as PNG files (matplotlib's Agg canvas, written atomically).

Each `plot_*` refuses to replace an existing file unless `overwrite=True`.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from keras_vit.visualize.attention import upsample
from keras_vit.visualize.embeddings import Components

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: PathLike, overwrite: bool) -> Path:
    from keras_vit.atomic import atomic_write_bytes

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
