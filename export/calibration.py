"""Calibrated ranges that outliers do not set alone: percentile and MSE-optimal clipping.

The converter's calibration records each activation's minimum and maximum over the
calibration images (`minmax`). One outlier value then sets the int8 step of the whole
tensor. `robust_ranges` runs the calibrated (still float) model on the same images,
histograms every calibrated activation over its min..max range, and narrows the range:

- `percentile`: to the `percentile`-th and `100 - percentile`-th percentiles of the values;
- `mse`: to the range `[a * min, a * max]`, `a` in (0, 1], that minimises the expected
  squared error of 8-bit uniform quantization over the histogram: rounding error
  `step ** 2 / 12` for the values inside, clipping error for those outside.

A range is only ever narrowed, never widened. Left as calibrated: the graph's inputs and
outputs, and the outputs of SOFTMAX (the quantizer gives them a fixed range anyway).
The narrowed ranges go back into the calibrated model
(`export.flatbuffer_edits.set_calibrated_ranges`) before quantization (`export.convert`).
"""

from __future__ import annotations

import numpy as np

from export import tflite_reader
from export.flatbuffer_edits import calibrated_ranges, set_calibrated_ranges
from export.runtime import tensor_interpreter

CALIBRATION_METHODS: tuple[str, ...] = ("minmax", "percentile", "mse")
DEFAULT_PERCENTILE = 99.99
BINS = 2048
LEVELS = 256


def _histograms(calibrated: bytes, images: np.ndarray, ranges: dict) -> dict[int, np.ndarray]:
    """Per tensor: counts of its values in `BINS` equal bins over its calibrated range."""
    interpreter = tensor_interpreter(calibrated)
    details = interpreter.get_input_details()[0]
    counts = {index: np.zeros(BINS, np.int64) for index in ranges}
    for image in images:
        interpreter.set_tensor(details["index"], image.astype(details["dtype"])[None])
        interpreter.invoke()
        for index, (low, high) in ranges.items():
            values = np.asarray(interpreter.get_tensor(index), np.float64).reshape(-1)
            width = (high - low) or 1.0
            bins = np.clip(((values - low) / width * BINS).astype(np.int64), 0, BINS - 1)
            counts[index] += np.bincount(bins, minlength=BINS)
    return counts


def percentile_range(counts: np.ndarray, low: float, high: float, percentile: float):
    """`(low, high)` narrowed to the given percentile of a histogram over `low..high`."""
    edges = np.linspace(low, high, len(counts) + 1)
    cumulative = np.cumsum(counts) / max(counts.sum(), 1)
    tail = 1.0 - percentile / 100.0
    first = int(np.searchsorted(cumulative, tail, side="right"))
    last = int(np.searchsorted(cumulative, 1.0 - tail, side="left"))
    new_low, new_high = float(edges[first]), float(edges[min(last + 1, len(counts))])
    if low <= 0.0:
        new_low = min(new_low, 0.0)  # zero stays representable
    if high >= 0.0:
        new_high = max(new_high, 0.0)
    return max(low, new_low), min(high, new_high)


def mse_range(counts: np.ndarray, low: float, high: float, steps: int = 100):
    """`(a * low, a * high)` with the `a` in (0, 1] of least expected 8-bit squared error."""
    edges = np.linspace(low, high, len(counts) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    weights = counts / max(counts.sum(), 1)
    best, best_error = 1.0, np.inf
    for a in np.linspace(1.0, 1.0 / steps, steps):
        lo, hi = a * low, a * high
        step = (hi - lo) / (LEVELS - 1) if hi > lo else 1.0
        clipped = np.clip(centres, lo, hi)
        error = float(np.sum(weights * ((centres - clipped) ** 2 + step**2 / 12.0)))
        if error < best_error:
            best, best_error = a, error
    return best * low, best * high


def robust_ranges(
    calibrated: bytes,
    images: np.ndarray,
    method: str,
    percentile: float = DEFAULT_PERCENTILE,
) -> bytes:
    """The calibrated model with its activation ranges narrowed by `method` (module docstring).

    Args:
        calibrated: the converter's calibrate-only output (float ops, recorded ranges).
        images: the calibration images, uint8 `(N, H, W, C)`, fed as float32 pixels.
        method: one of `CALIBRATION_METHODS`; `minmax` returns `calibrated` unchanged.
        percentile: for `percentile`, e.g. 99.99.

    Raises:
        ValueError: an unknown method or a percentile outside 50..100.
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(
            f"Unknown calibration {method!r}; expected one of {', '.join(CALIBRATION_METHODS)}"
        )
    if not 50.0 < percentile <= 100.0:
        raise ValueError(f"Expected a percentile above 50 and at most 100. Received: {percentile}")
    if method == "minmax":
        return calibrated
    summary = tflite_reader.read_summary(calibrated)
    keep = set(summary.inputs) | set(summary.outputs)
    keep |= {i for op in summary.operators if op.name == "SOFTMAX" for i in op.outputs}
    produced = {i for op in summary.operators for i in op.outputs}
    ranges = {
        index: value
        for index, value in calibrated_ranges(calibrated).items()
        if index in produced and index not in keep and value[1] > value[0]
    }
    counts = _histograms(calibrated, images, ranges)
    narrowed = {}
    for index, (low, high) in ranges.items():
        if method == "percentile":
            narrowed[index] = percentile_range(counts[index], low, high, percentile)
        else:
            narrowed[index] = mse_range(counts[index], low, high)
    return set_calibrated_ranges(calibrated, narrowed)
