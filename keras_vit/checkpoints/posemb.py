"""Position-embedding resampling to another patch grid (pure NumPy / SciPy functions).

A checkpoint trained at one image size loads into a model at another by resizing its
position embedding on the 2-D patch grid, the prefix (class-token) positions kept apart.
The default `"zoom"` is `scipy.ndimage.zoom(..., order=1)`, exactly as the original
`vit_jax/checkpoint.py`; `"bilinear"` and `"bicubic"` follow timm's `.npz` loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.ndimage

PosembMethod = Literal["zoom", "bilinear", "bicubic"]
POSEMB_METHODS: tuple[str, ...] = ("zoom", "bilinear", "bicubic")


def parse_grid(value, name: str) -> tuple[int, int]:
    """A patch grid `(rows, columns)` from an int (square) or a pair of positive ints.

    Raises:
        ValueError: anything else, naming the argument `name`.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        isinstance(value, Sequence)
        and len(value) == 2
        and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
        and all(v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise ValueError(
        f"Expected `{name}` to be a positive int or a (rows, columns) pair. "
        f"Received: {name}={value!r}"
    )


def _interpolation_matrix(size_in: int, size_out: int, method: str) -> np.ndarray:
    """`(size_out, size_in)` weights of half-pixel linear or cubic resampling along one axis.

    As PyTorch's `F.interpolate(..., align_corners=False)` without antialiasing: source
    coordinate `(o + 0.5) * size_in / size_out - 0.5`; linear clamps it at 0; cubic uses the
    Keys kernel with a = -0.75 and repeats the border pixels.
    """
    scale = size_in / size_out
    weights = np.zeros((size_out, size_in))
    for o in range(size_out):
        src = (o + 0.5) * scale - 0.5
        if method == "bilinear":
            src = max(src, 0.0)
            i0 = min(int(np.floor(src)), size_in - 1)
            i1 = min(i0 + 1, size_in - 1)
            t = src - i0
            weights[o, i0] += 1.0 - t
            weights[o, i1] += t
        else:
            i0 = int(np.floor(src))
            t = src - i0
            a = -0.75
            near = [t, 1.0 - t]  # distances to i0 and i0 + 1
            far = [t + 1.0, 2.0 - t]  # distances to i0 - 1 and i0 + 2
            coeffs = [
                ((a * far[0] - 5 * a) * far[0] + 8 * a) * far[0] - 4 * a,
                ((a + 2) * near[0] - (a + 3)) * near[0] * near[0] + 1,
                ((a + 2) * near[1] - (a + 3)) * near[1] * near[1] + 1,
                ((a * far[1] - 5 * a) * far[1] + 8 * a) * far[1] - 4 * a,
            ]
            for k, coeff in zip(range(i0 - 1, i0 + 3), coeffs, strict=True):
                weights[o, min(max(k, 0), size_in - 1)] += coeff
    return weights


def resample_posemb(
    posemb: np.ndarray,
    new_grid: int | Sequence[int],
    old_grid: int | Sequence[int] | None = None,
    method: PosembMethod = "zoom",
    num_prefix_tokens: int = 1,
) -> np.ndarray:
    """Resizes a position embedding to another patch grid, keeping prefix tokens apart.

    Args:
        posemb: `(1, num_prefix_tokens + rows * columns, D)`, patch positions row-major.
        new_grid: the target grid, an int (square) or `(rows, columns)`.
        old_grid: the grid of `posemb`. When None it is inferred, which is possible only
            when the number of patch positions is a perfect square.
        method: `"zoom"` (default): `scipy.ndimage.zoom(..., order=1)` exactly as the
            original `vit_jax/checkpoint.py`, linear with the corner positions aligned;
            `"bilinear"`: linear with half-pixel centres, as timm's `.npz` loader
            (`F.interpolate(mode="bilinear", align_corners=False)`); `"bicubic"`: the same
            with PyTorch's bicubic kernel (a = -0.75).
        num_prefix_tokens: leading positions that are not on the grid (1 for the class
            token, 0 for models pooled by global average). They are kept unchanged.

    Returns:
        `(1, num_prefix_tokens + new_rows * new_columns, D)`, in the dtype of `posemb`.

    Example:
    >>> posemb = np.random.rand(1, 1 + 14 * 14, 384).astype("float32")
    >>> resample_posemb(posemb, 24).shape
    (1, 577, 384)
    """
    posemb = np.asarray(posemb)
    if posemb.ndim != 3 or posemb.shape[0] != 1:
        raise ValueError(
            f"Expected `posemb` of shape (1, tokens, width). Received: shape={posemb.shape}"
        )
    if method not in POSEMB_METHODS:
        raise ValueError(f"Expected `method` to be one of {POSEMB_METHODS}. Received: {method!r}")
    if not isinstance(num_prefix_tokens, int) or not 0 <= num_prefix_tokens < posemb.shape[1]:
        raise ValueError(
            "Expected `num_prefix_tokens` in [0, tokens). "
            f"Received: num_prefix_tokens={num_prefix_tokens!r} for shape {posemb.shape}"
        )
    new_h, new_w = parse_grid(new_grid, "new_grid")
    prefix, patches = posemb[:, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    count = patches.shape[0]
    if old_grid is None:
        side = round(float(np.sqrt(count)))
        if side * side != count:
            raise ValueError(
                f"Cannot infer the grid of {count} patch positions (not a perfect square); "
                "pass old_grid=(rows, columns)"
            )
        old_h, old_w = side, side
    else:
        old_h, old_w = parse_grid(old_grid, "old_grid")
        if old_h * old_w != count:
            raise ValueError(
                f"old_grid={old_h}x{old_w} has {old_h * old_w} positions but posemb has "
                f"{count} patch positions"
            )
    grid = patches.reshape(old_h, old_w, -1)
    if (old_h, old_w) == (new_h, new_w):
        resized = grid.copy()
    elif method == "zoom":
        zoom = (new_h / old_h, new_w / old_w, 1)
        resized = scipy.ndimage.zoom(grid, zoom, order=1)
    else:
        rows = _interpolation_matrix(old_h, new_h, method)
        cols = _interpolation_matrix(old_w, new_w, method)
        resized = np.einsum("ai,ijd,bj->abd", rows, grid.astype(np.float64), cols)
    resized = resized.reshape(1, new_h * new_w, -1).astype(posemb.dtype)
    return np.concatenate([prefix, resized], axis=1)
