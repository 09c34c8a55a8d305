"""How closely a quantized classifier follows the float model: logit error, ranking, top-1.

NumPy only (no TensorFlow, no interpreter), so the same figures can be computed wherever
the outputs were produced. Every function takes logits `(N, K)` of `N` inputs and `K`
classes; log-probabilities work as well, because every figure is invariant to adding a
constant to all classes of one input (what a softmax ignores).

Definitions, for float logits `F` and quantized logits `Q`:

- centered error: `E[i, c] = (Q[i, c] - F[i, c]) - mean_c (Q[i, c] - F[i, c])`, the error
  with the part that is the same for every class of input `i` removed;
- logit spread of input `i`: `S[i] = max_c F[i, c] - min_c F[i, c]`;
- relative logit error: `|E[i, c]| / S[i]`, reported as its maximum and its mean over all
  inputs and classes (`logit_error`);
- centred logit error: the same with each model's logits first centred by their class means
  over the inputs (`F - mean_j F[j]`, `Q - mean_j Q[j]`), relative to the centred float
  spread `max_c - min_c` of `F[i] - mean_j F[j]`: the error measured against the part of
  the logits that depends on the input, the part the ranking agreement asks about
  (`centred_logit_error`). Where a per-class bias dominates the logits, the centred spread
  is much smaller than the raw one and this error is the larger;
- top-1 agreement: the share of inputs where `argmax_c Q[i] == argmax_c F[i]`;
- ranking agreement (input-dependent ranking): top-1 agreement after subtracting from each
  class its mean over the inputs, `argmax_c (Q[i, c] - mean_j Q[j, c])` against
  `argmax_c (F[i, c] - mean_j F[j, c])`, each model's means from its own logits. A model
  whose logits are dominated by a per-class bias (random weights, a head that favours a
  few classes) keeps top-1 even when quantization erases what the input contributes; this
  figure asks whether the part of the logits that depends on the input survives.

Per-layer error (`layer_errors`) compares matching intermediate tensors of two files: the
RMS error of each tensor an op produces, relative to the largest RMS among that output and
the op's inputs in the reference (so that an op whose output is small beside its inputs,
such as LayerNorm's mean of a centred stream, is not counted as a large loss), and what the
op adds, `gain`: that error minus the largest error of its inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def _checked(float_logits, quantized_logits) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(float_logits, np.float64)
    q = np.asarray(quantized_logits, np.float64)
    if f.ndim != 2 or f.shape != q.shape or f.shape[0] == 0:
        raise ValueError(
            "Expected two logit arrays of the same shape (inputs, classes). "
            f"Received: {f.shape} and {q.shape}"
        )
    return f, q


def log_probabilities(probabilities, floor: float = 1e-30) -> np.ndarray:
    """`log(p)` of probabilities `(N, K)`, each clipped below at `floor` (a zero stays finite)."""
    return np.log(np.maximum(np.asarray(probabilities, np.float64), floor))


def logit_error(float_logits, quantized_logits) -> dict:
    """`{"max": ..., "mean": ...}` of the relative logit error (module docstring).

    Inputs whose float logits are all equal (spread 0) are left out; with no input left,
    both figures are NaN.
    """
    f, q = _checked(float_logits, quantized_logits)
    diff = q - f
    centered = diff - diff.mean(axis=1, keepdims=True)
    spread = f.max(axis=1) - f.min(axis=1)
    keep = spread > 0
    if not keep.any():
        return {"max": float("nan"), "mean": float("nan")}
    relative = np.abs(centered[keep]) / spread[keep, None]
    return {"max": float(relative.max()), "mean": float(relative.mean())}


def centred_logit_error(float_logits, quantized_logits) -> dict:
    """`{"max": ..., "mean": ...}` of the centred logit error (module docstring).

    Needs at least two inputs (with one, nothing depends on the input: both are NaN).
    """
    f, q = _checked(float_logits, quantized_logits)
    if len(f) < 2:
        return {"max": float("nan"), "mean": float("nan")}
    return logit_error(f - f.mean(axis=0), q - q.mean(axis=0))


def top1_agreement(float_logits, quantized_logits) -> float:
    """The share of inputs whose highest-scoring class is the same in both."""
    f, q = _checked(float_logits, quantized_logits)
    return float((f.argmax(axis=1) == q.argmax(axis=1)).mean())


def ranking_agreement(float_logits, quantized_logits) -> float:
    """Top-1 agreement after subtracting each class's mean over the inputs (module docstring)."""
    f, q = _checked(float_logits, quantized_logits)
    return top1_agreement(f - f.mean(axis=0), q - q.mean(axis=0))


def fidelity(float_logits, quantized_logits) -> dict:
    """The six figures: `max_logit_error`, `mean_logit_error`, `max_centred_error`,
    `mean_centred_error`, `ranking_agreement` and `top1_agreement` (module docstring)."""
    error = logit_error(float_logits, quantized_logits)
    centred = centred_logit_error(float_logits, quantized_logits)
    return {
        "max_logit_error": error["max"],
        "mean_logit_error": error["mean"],
        "max_centred_error": centred["max"],
        "mean_centred_error": centred["mean"],
        "ranking_agreement": ranking_agreement(float_logits, quantized_logits),
        "top1_agreement": top1_agreement(float_logits, quantized_logits),
    }


def relative_rms_error(reference, values) -> float:
    """`rms(values - reference) / rms(reference)`; NaN where the reference is all zero."""
    f = np.asarray(reference, np.float64)
    q = np.asarray(values, np.float64)
    if f.shape != q.shape:
        raise ValueError(f"Expected tensors of the same shape. Received: {f.shape} and {q.shape}")
    scale = np.sqrt(np.mean(f * f))
    return float(np.sqrt(np.mean((q - f) ** 2)) / scale) if scale > 0 else float("nan")


def layer_errors(
    reference: Mapping[str, np.ndarray],
    values: Mapping[str, np.ndarray],
    ops: Sequence[tuple[str, Sequence[str], Sequence[str]]],
) -> list[dict]:
    """The relative RMS error of every tensor both runs have, and what each op adds to it.

    Args:
        reference: tensor name -> float values (the float file's, or the Keras model's).
        values: tensor name -> dequantized values of the quantized file.
        ops: `(op name, input tensor names, output tensor names)` in execution order.

    Returns:
        One dict per op output found in both (`op`, `tensor`, `error`, `gain`), in
        execution order; `gain` is the output's error minus the largest error among the
        op's inputs (the whole error for an op without such inputs). A tensor only one
        run has takes the largest error of its op's inputs, for the ops after it.
    """
    errors: dict[str, float] = {}
    rows = []

    def rms(name: str) -> float:
        return float(np.sqrt(np.mean(np.asarray(reference[name], np.float64) ** 2)))

    for op, inputs, outputs in ops:
        matched = [i for i in inputs if i in errors]
        before = [errors[i] for i in matched if np.isfinite(errors[i])]
        for name in outputs:
            compared = name in reference and name in values
            if not compared or np.shape(reference[name]) != np.shape(values[name]):
                # A tensor only one file has (a QUANTIZE's int8 copy, say): it carries its
                # inputs' error on to the ops that read it.
                errors[name] = max(before, default=0.0)
                continue
            scale = max([rms(name), *(rms(i) for i in matched if i in reference)])
            diff = np.asarray(values[name], np.float64) - np.asarray(reference[name], np.float64)
            error = float(np.sqrt(np.mean(diff**2)) / scale) if scale > 0 else float("nan")
            errors[name] = error
            rows.append(
                {"op": op, "tensor": name, "error": error, "gain": error - max(before, default=0.0)}
            )
    return rows


def worst_layers(rows: Sequence[dict], count: int = 3) -> list[dict]:
    """The `count` rows of `layer_errors` with the largest `gain`, largest first."""
    finite = [r for r in rows if np.isfinite(r["gain"])]
    return sorted(finite, key=lambda r: r["gain"], reverse=True)[:count]
