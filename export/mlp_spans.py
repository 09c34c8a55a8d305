"""MLP hidden units split into spans of similar range, each quantized on its own.

An int8 tensor has one scale. When a block's MLP hidden units differ in range by orders of
magnitude (a few units firing far above the rest, as post-GELU activations of trained
ViTs do), the shared scale of the first Dense's output and of the GELU output leaves the
small units a handful of levels, and the second Dense's per-output-channel weight scales
are set by its largest rows while small rows round away. No rescaling across the GELU is
exact, but a split is: sort the hidden units by their range on calibration images (a
permutation of the first Dense's columns and the second Dense's rows, the same function),
cut the sorted units into spans of similar range, and run each span as its own
`Dense -> GELU -> Dense` with the parts summed (`TransformerBlock` with `mlp_spans`).
Every span's tensors and kernels then get their own int8 ranges.

Spans are equal-width bins of the logarithm of the unit ranges, from the largest range
down to `floor` times it (units below go to the last span); empty bins are dropped.
"""

from __future__ import annotations

import itertools

import numpy as np


def unit_spans(
    ranges: np.ndarray, max_spans: int, floor: float = 1e-3
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """`(order, spans)`: hidden units sorted by falling range, and `(start, stop)` spans.

    Args:
        ranges: each hidden unit's max |activation| on calibration images.
        max_spans: at most this many spans (1: one span, the plain MLP).
        floor: ranges below `floor` times the largest share the last span.

    Returns:
        `order`, a permutation of the units (largest range first), and the spans as
        contiguous ranges of positions in `order`.
    """
    if isinstance(max_spans, bool) or not isinstance(max_spans, int) or max_spans < 1:
        raise ValueError(f"Expected `max_spans` to be a positive int. Received: {max_spans!r}")
    ranges = np.asarray(ranges, np.float64)
    order = np.argsort(-ranges, kind="stable")
    top = float(ranges[order[0]]) if ranges.size else 0.0
    if max_spans == 1 or top <= 0.0:
        return order, [(0, int(ranges.size))]
    logs = np.log(np.maximum(ranges[order], top * floor) / top)  # 0 down to log(floor)
    width = -np.log(floor) / max_spans
    bins = np.minimum((-logs / width).astype(int), max_spans - 1)
    edges = [0] + [int(i) for i in np.flatnonzero(np.diff(bins)) + 1] + [int(ranges.size)]
    return order, list(itertools.pairwise(edges))


def split_mlps(model, images: np.ndarray, max_spans: int, floor: float = 1e-3):
    """A copy of a keras_vit ViT whose export graphs run each MLP in unit spans.

    Args:
        model: a `VisionTransformer`.
        images: calibration images as the model takes them (already normalised).
        max_spans: at most this many spans per MLP (`unit_spans`).
        floor: see `unit_spans`.

    Returns:
        A new model computing the same function, its hidden units permuted (largest range
        first) and each block's `mlp_spans` set.
    """
    from export.classifier import rebuild
    from export.smoothing import output_ranges

    split = rebuild(model)
    blocks = [layer for layer in split.layers if layer.name.startswith("encoderblock_")]
    ranges = output_ranges(split, images, [block.mlp_dense1 for block in blocks])
    for block in blocks:
        order, spans = unit_spans(ranges[block.mlp_dense1.path], max_spans, floor)
        dense1, dense2 = block.mlp_dense1, block.mlp_dense2
        dense1.kernel.assign(np.asarray(dense1.kernel.numpy())[:, order])
        dense1.bias.assign(np.asarray(dense1.bias.numpy())[order])
        dense2.kernel.assign(np.asarray(dense2.kernel.numpy())[order])
        block.mlp_spans = tuple(spans)
    return split
