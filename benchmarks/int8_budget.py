"""Where int8 loses fidelity: each rounding of the int8 files applied alone to the float model.

    python benchmarks/int8_budget.py --output benchmarks/results/DATE-int8-budget [--quick]
        [--models random stress] [--inputs 256] [--calibration-images 64] [--files]

An int8 file rounds weights, activations and attention probabilities at once, and its
per-op report (`export.tflite_fidelity.layer_report`) sees the error pile up from op to
op. This script applies one kind of rounding at a time to the float Keras model and
gives the fidelity figures of `fidelity.py` (`export.fidelity`) against the unrounded
model, on the same probes: the random and stress ViT-Ti/16 of `fidelity.py`, prepared as
its best int8 variant (LayerNorm smoothing 1.0, MLPs in 4 unit spans), then with every
LayerNorm's gamma and beta folded into the Dense kernels that read it (the converter fuses
them the same way, so a Dense input here is the tensor the file quantizes). Rows:

- `weights, nearest`: every Dense kernel (the patch projection's included) on the int8
  grid the converter uses (symmetric, one scale per output channel; per span for the
  second MLP Dense), rounded to nearest.
- `weights, GPTQ`: the same grid, rounded with GPTQ's error feedback on each Dense's
  calibration inputs (`export.weight_rounding`, what `--weight-rounding gptq` exports).
- `attention scores on the int8 grid`: the scores `q k^T / sqrt(d)` rounded to int8 in
  each block's range on the calibration images (asymmetric), as the static files'
  BATCH_MATMUL output.
- `softmax on the int8 grid`: attention probabilities rounded to multiples of 1/256, the
  fixed output scale of TFLite's int8 SOFTMAX.
- `exp on the int8 grid`: `exp(s - max s)` rounded to multiples of 1/255 (every row peaks
  at 1), then normalised in float.
- `Dense inputs, per row (symmetric / asymmetric)`: every Dense input (normalised pixel
  patches for the projection) rounded to int8 with a range per token row, as the
  dynamic-range file does at run time (its quantized FULLY_CONNECTED ops carry
  `asymmetric_quantize_inputs`).
- `Dense inputs, per tensor`: every Dense input rounded to int8 in the range its tensor had
  on the calibration images (asymmetric), as a static int8 file does; nothing else rounded.
- `weights nearest + inputs per row`: `weights, nearest` with `Dense inputs, per row
  (asymmetric)`: the roundings of the dynamic-range file's FULLY_CONNECTED ops together.

`--files` adds the `int8` (mse calibration) and dynamic-range files of the GPTQ-rounded
model beside those of the nearest-rounded one: whether better weight rounding reaches the
files. `--quick` runs tiny models (a smoke test). Writes `<output>.json` and `<output>.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from export.run_data import normalised
from export.weight_rounding import dense_inputs, fold_norms, round_weights

ROUNDINGS = (
    "weights, nearest",
    "weights, GPTQ",
    "attention scores on the int8 grid",
    "softmax on the int8 grid",
    "exp on the int8 grid",
    "Dense inputs, per row (symmetric)",
    "Dense inputs, per row (asymmetric)",
    "Dense inputs, per tensor",
    "weights nearest + inputs per row",
)


def by_segments(x, spans, fn):
    """`fn` on each `(start, stop)` slice of the last axis of `x` (all of it if no spans)."""
    import tensorflow as tf

    if not spans:
        return fn(x)
    return tf.concat([fn(x[..., start:stop]) for start, stop in spans], axis=-1)


def round_rows(x, symmetric: bool):
    """`x` rounded to int8 with one range per row of its last axis."""
    import tensorflow as tf

    if symmetric:
        step = tf.maximum(tf.reduce_max(tf.abs(x), -1, keepdims=True) / 127.0, 1e-30)
        return tf.clip_by_value(tf.round(x / step), -127.0, 127.0) * step
    low = tf.minimum(tf.reduce_min(x, -1, keepdims=True), 0.0)
    high = tf.maximum(tf.reduce_max(x, -1, keepdims=True), 0.0)
    return round_range(x, low, high)


def round_range(x, low, high):
    """`x` rounded to the 256 levels of an asymmetric int8 range `[low, high]` (holding 0)."""
    import tensorflow as tf

    step = tf.maximum((high - low) / 255.0, 1e-30)
    zero = tf.round(-low / step)
    return (tf.clip_by_value(tf.round(x / step) + zero, 0.0, 255.0) - zero) * step


def input_ranges(model, images: np.ndarray) -> dict[tuple[str, int], tuple[float, float]]:
    """`{(Dense path, span index): (min, max)}` of every Dense input on `images`."""
    import keras

    ranges: dict[tuple[str, int], tuple[float, float]] = {}

    def record(dense, spans, x):
        values = keras.ops.convert_to_numpy(x)
        for i, (start, stop) in enumerate(spans or [(0, values.shape[-1])]):
            part = values[..., start:stop]
            low, high = float(part.min()), float(part.max())
            old = ranges.get((dense.path, i), (low, high))
            ranges[(dense.path, i)] = (min(old[0], low), max(old[1], high))
        return x

    with dense_inputs(model, record):
        for start in range(0, len(images), 16):
            model(images[start : start + 16], training=False)
    return ranges


@contextlib.contextmanager
def attention_rounding(kind: str, score_ranges: list | None = None):
    """Every attention softmax of the model rounds its input or output while in the block.

    `kind`: `"softmax"` rounds the probabilities to multiples of 1/256 (TFLite's int8
    SOFTMAX output), `"exp"` rounds `exp(s - max s)` to multiples of 1/255 and normalises
    in float, `"scores"` rounds the scores to int8 in block `i`'s calibrated range
    `score_ranges[i]`, and `"record"` appends each call's `(min, max)` score to
    `score_ranges`. Softmax calls are matched to blocks by their order in a forward pass.
    """
    from keras import ops

    import keras_vit.layers.attention as attention

    original = attention.ops.softmax
    calls = itertools.count()

    def rounded(x, axis=-1):
        if kind == "softmax":
            return ops.round(original(x, axis=axis) * 256.0) / 256.0
        if kind == "exp":
            e = ops.round(ops.exp(x - ops.max(x, axis=axis, keepdims=True)) * 255.0) / 255.0
            return e / ops.sum(e, axis=axis, keepdims=True)
        if kind == "record":
            values = ops.convert_to_numpy(x)
            score_ranges.append((float(values.min()), float(values.max())))
            return original(x, axis=axis)
        low, high = score_ranges[next(calls) % len(score_ranges)]
        return original(round_range(x, min(low, 0.0), max(high, 0.0)), axis=axis)

    attention.ops.softmax = rounded
    try:
        yield
    finally:
        attention.ops.softmax = original


def score_ranges(model, images: np.ndarray) -> list[tuple[float, float]]:
    """Each block's `(min, max)` attention score on `images`, in block order."""
    blocks = sum(layer.name.startswith("encoderblock_") for layer in model.layers)
    calls: list[tuple[float, float]] = []
    with attention_rounding("record", calls):
        for start in range(0, len(images), 16):
            model(images[start : start + 16], training=False)
    return [
        (min(c[0] for c in calls[i::blocks]), max(c[1] for c in calls[i::blocks]))
        for i in range(blocks)
    ]


def budget(model, calibration, held_out, preprocessing) -> list[dict]:
    """One row of fidelity figures per rounding of `ROUNDINGS`, on `model` as given."""
    from export import fidelity, tflite_fidelity
    from export.classifier import rebuild

    images = normalised(calibration, preprocessing)
    reference = tflite_fidelity.keras_logits(model, held_out, preprocessing)
    ranges = input_ranges(rebuild(model), images)
    scores = score_ranges(rebuild(model), images)

    def per_tensor(dense, spans, x):
        parts = [(s, ranges[(dense.path, i)]) for i, s in enumerate(spans or [(0, x.shape[-1])])]

        def one(part, span_range):
            low, high = min(span_range[0], 0.0), max(span_range[1], 0.0)
            return round_range(part, low, high)

        import tensorflow as tf

        return tf.concat([one(x[..., a:b], r) for (a, b), r in parts], axis=-1)

    def logits(name: str):
        # A fresh copy each time: its predict function is traced with the rounding in place.
        if name in ("weights, nearest", "weights nearest + inputs per row"):
            graph = round_weights(model, images, "nearest")
        elif name == "weights, GPTQ":
            graph = round_weights(model, images, "gptq")
        else:
            graph = rebuild(model)
        context = contextlib.nullcontext()
        if name.startswith("softmax") or name.startswith("exp"):
            context = attention_rounding("softmax" if name.startswith("softmax") else "exp")
        elif name == "attention scores on the int8 grid":
            context = attention_rounding("scores", scores)
        elif "per row" in name:
            symmetric = "(symmetric)" in name
            context = dense_inputs(
                graph, lambda d, spans, x: by_segments(x, spans, lambda v: round_rows(v, symmetric))
            )
        elif name == "Dense inputs, per tensor":
            context = dense_inputs(graph, per_tensor)
        with context:
            return tflite_fidelity.keras_logits(graph, held_out, preprocessing)

    rows = []
    for name in ROUNDINGS:
        figures = fidelity.fidelity(reference, logits(name))
        rows.append({"rounding": name, **{k: round(v, 4) for k, v in figures.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def file_rows(model, calibration, held_out, preprocessing) -> list[dict]:
    """The int8 (mse) and dynamic-range files of the nearest- and GPTQ-rounded models."""
    from export import fidelity, tflite_fidelity
    from export.classifier import PixelClassifier
    from export.convert import SavedModels, convert

    images = normalised(calibration, preprocessing)
    reference = tflite_fidelity.keras_logits(model, held_out, preprocessing)
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8_budget_") as scratch:
        saved_models = SavedModels(scratch)  # each graph's SavedModel, written once
        for method in ("nearest", "gptq"):
            source = model if method == "nearest" else round_weights(model, images, "gptq")
            graph = PixelClassifier(source, **preprocessing)
            for quantization in ("int8", "dynamic"):
                options = {"calibration_method": "mse"} if quantization == "int8" else {}
                content = convert(
                    graph, quantization, calibration, saved_models=saved_models, **options
                )
                logits = tflite_fidelity.logits(content, held_out)
                figures = fidelity.fidelity(reference, logits)
                weights = "GPTQ" if method == "gptq" else "nearest"
                label = f"{quantization} file, weights {weights}"
                rows.append({"rounding": label, **{k: round(v, 4) for k, v in figures.items()}})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(results: dict) -> str:
    lines = [
        f"# int8 error budget, {results['date']}",
        "",
        f"CPU: {results['cpu']}; command: `{results['command']}`",
        "",
        "One rounding at a time in the float Keras model (smoothing 1.0, 4 MLP spans, LayerNorm "
        "folded); figures against the unrounded model. Errors relative to the logit spread.",
        "",
        "| model | rounding | max err | mean err | max centred err | ranking % | top-1 % |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} | {r['rounding']} | {r['max_logit_error']:.4f} | "
            f"{r['mean_logit_error']:.4f} | {r['max_centred_error']:.4f} | "
            f"{100 * r['ranking_agreement']:.1f} | {100 * r['top1_agreement']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="path without extension")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--models", nargs="+", choices=["random", "stress"], default=["random", "stress"]
    )
    parser.add_argument("--inputs", type=int, default=256)
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--files", action="store_true", help="add the int8 and dynamic files")
    args = parser.parse_args(argv)
    if not Path(args.output).parent.is_dir():
        print(f"error: --output: folder {Path(args.output).parent} does not exist", file=sys.stderr)
        return 1
    from fidelity import PREPROCESSING, models, write_results

    from export import mlp_spans, smoothing

    rng = np.random.default_rng(0)
    chosen = models(args.models, args.quick, rng, args.calibration_images, args.inputs)
    rows = []
    for name, (model, calibration, held_out) in chosen.items():
        images = normalised(calibration, PREPROCESSING)
        prepared = mlp_spans.split_mlps(smoothing.smooth(model, images, 1.0), images, 4)
        prepared = fold_norms(prepared)
        found = budget(prepared, calibration, held_out, PREPROCESSING)
        if args.files:
            found += file_rows(prepared, calibration, held_out, PREPROCESSING)
        rows.extend({"model": name, **row} for row in found)
    write_results(args.output, "int8_budget.py", argv, rows, markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
