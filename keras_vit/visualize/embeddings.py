"""The paper's Figure 7 views of the embeddings: position similarity, patch filters.

- `position_embedding_similarity(model)`: cosine similarity between the patches' position
  embeddings, `[gh, gw, gh, gw]` (paper Fig. 7, centre).
- `patch_embedding_components(model, n=28)`: principal components of the patch-embedding
  filters as `(P, P, C)` images (paper Fig. 7, left).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from keras_vit.visualize.attention import check_vit, class_token_count

if TYPE_CHECKING:
    from keras_vit.model import VisionTransformer


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
    check_vit(model)
    encoder = model.get_layer("patch_encoder")
    embedding = np.asarray(encoder.position_embedding.numpy(), "float64")[0]
    return cosine_similarity_grid(embedding[class_token_count(model) :], model.grid_size)


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
    check_vit(model)
    if model.stem is not None:
        raise ValueError(
            f"Model '{model.name}' is a hybrid: its patch embedding reads the ResNet stem's "
            "feature map, so its filters are not images"
        )
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
