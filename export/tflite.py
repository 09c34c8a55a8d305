"""Exports a run directory to TFLite: float32, float16, dynamic, int8, int8_cpu, int16x8.

    python -m export.tflite ckpt/ [--output DIR] [--quantize float32 int8 ...]
        [--calibration-samples N] [--edgetpu] [--force]

Every file has a static `[1, H, W, 3]` input and TFLite builtin ops only
(`export.convert`). Every file takes RGB pixels 0..255
(the checkpoint's normalisation is folded into the patch projection, see `export.classifier`),
returns class probabilities (softmax in the graph) and carries TFLite metadata (labels and
normalisation) for the Task Library / MediaPipe.

Quantizations:

- `float32`: the reference conversion.
- `float16`: float16 weights, float32 compute (DEQUANTIZE of the weights at load).
- `dynamic`: int8 weights, float activations (dynamic-range quantization).
- `int8`: full integer. uint8 image input with scale 1 and zero point 0 (the bytes of an
  image, exactly), int8 compute throughout, uint8 probabilities out (scale 1/256; MediaPipe
  and the Task Library accept uint8 or float32 outputs, and uint8 keeps the file free of
  float ops). Calibrated on the checkpoint's own training data.
- `int8_cpu`: the int8 file for CPUs (LiteRT's XNNPACK delegate: phones' CPUs, x86, Arm
  boards), calibrated and pinned like `int8`, with the same uint8 input and output, but
  softmax, LayerNorm's rsqrt and GELU left in float32 between DEQUANTIZE / QUANTIZE
  (`FLOAT_ISLAND_OPS`). XNNPACK has no int8 kernels for these three, so in the `int8` file
  each splits the graph and runs single-threaded on TFLite's kernels; here every op is
  delegated and the whole graph runs in a few partitions on all threads. Not for
  integer-only accelerators (Edge TPU, NPUs): use `int8` there.
- `int16x8`: int16 activations, int8 weights, float32 I/O; calibrated like int8.

`--edgetpu` adds `model_edgetpu_int8.tflite`, an int8 file of the graph formulated for the
Coral Edge TPU (`export.classifier`), and checks it against the published op table
(`export.edgetpu_check`).

The report (`report.json`, and a table on stdout) gives per file: size, op histogram, float
compute ops left (`export.analysis`), Flex / custom ops, Keras-vs-TFLite parity on the
checkpoint's test split (top-1 agreement, largest |probability| difference), accuracy, and
the median latency at batch 1 on the LiteRT interpreter with 1 and 2 threads.

Where each step lives: `export.convert` (conversion), `export.flatbuffer_edits` (int8
graph edits), `export.run_data` (calibration and test images), `export.evaluate_tflite`
(parity, accuracy, latency), `export.report` (report and table), `export.output_folder`
(what `--force` may replace). This module composes them and holds the command line; the
names it imports stay importable from here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export import analysis, tflite_reader
from export.calibration import CALIBRATION_METHODS, DEFAULT_PERCENTILE
from export.convert import (
    CALIBRATED,
    DEFAULT_QUANTIZATIONS,
    FLOAT_ISLAND_OPS,
    INTEGER_IO,
    PIXEL_RANGE,
    QUANTIZATIONS,
    Quantization,
    SavedModels,
    check_builtin_only,
    convert,
)
from export.errors import ExportError
from export.evaluate_tflite import evaluate_file, keras_probabilities
from export.flatbuffer_edits import drop_noop_adds
from export.metadata import LABELS_FILE, attach_metadata, build_classifier_metadata
from export.output_folder import check_output, export_folder
from export.report import REPORT_FILE, finish_report, format_table, new_report
from export.run_data import (
    DEFAULT_CALIBRATION_SAMPLES,
    as_arrays,
    calibration_images,
    normalised,
    split_examples,
)
from export.runtime_versions import minimum_runtime
from export.weight_rounding import WEIGHT_ROUNDINGS
from keras_vit.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from keras_vit.console import configure_logging, native_stderr_captured
from keras_vit.run_dir import RunDir, read_run_dir

__all__ = [
    "CALIBRATED",
    "DEFAULT_CALIBRATION_SAMPLES",
    "DEFAULT_OUTPUT",
    "DEFAULT_QUANTIZATIONS",
    "FLOAT_ISLAND_OPS",
    "INTEGER_IO",
    "PIXEL_RANGE",
    "QUANTIZATIONS",
    "REPORT_FILE",
    "ExportError",
    "Quantization",
    "build_classifier",
    "calibration_images",
    "check_builtin_only",
    "convert",
    "drop_noop_adds",
    "evaluate_file",
    "export_tflite",
    "file_name",
    "format_table",
    "keras_probabilities",
    "main",
]

logger = logging.getLogger("export.tflite")  # also when run as __main__

DEFAULT_OUTPUT = "tflite"  # inside the run directory
LAYER_IMAGES = 4  # test images whose every tensor the per-layer error compares
INT8_WEIGHTS = frozenset({"dynamic", "int8", "int8_cpu", "int16x8"})  # files with int8 weights


def file_name(quantization: str, profile: str = "default") -> str:
    """`model_int8.tflite`, or `model_edgetpu_int8.tflite` for the Edge TPU profile."""
    if profile == "default":
        return f"model_{quantization}.tflite"
    return f"model_{profile}_{quantization}.tflite"


def build_classifier(model, preprocessing: dict, profile: str = "default"):
    """The export graph of a checkpoint's model for a profile (`default` or `edgetpu`)."""
    from export.classifier import PixelClassifier

    return PixelClassifier(model, preprocessing["mean"], preprocessing["std"], profile=profile)


def _metadata(checkpoint: RunDir, model, quantization: str) -> bytes:
    import keras_vit

    channels = int(checkpoint.config["preprocessing"].get("channels", 3))
    return build_classifier_metadata(
        name=f"{model.name} ({quantization})",
        description=(
            f"Vision Transformer image classifier exported by keras-vit {keras_vit.__version__} "
            f"from {checkpoint.path.name}: RGB pixels 0..255 in, class probabilities out"
        ),
        version=keras_vit.__version__,
        image_size=checkpoint.image_size,
        # The normalisation is folded into the graph: it takes the pixels as they are.
        mean=[0.0] * channels,
        std=[1.0] * channels,
        num_classes=len(checkpoint.labels),
    )


def _checked_quantizations(quantize: Sequence[str], edgetpu: bool) -> list[str]:
    quantize = list(dict.fromkeys(quantize))
    unknown = [q for q in quantize if q not in QUANTIZATIONS]
    if unknown or not (quantize or edgetpu):
        raise ExportError(
            f"Unknown or no quantization {unknown or quantize}; expected some of "
            f"{', '.join(QUANTIZATIONS)}"
        )
    return quantize


def _test_split(checkpoint: RunDir, model):
    """`(images, labels, Keras probabilities)` of the test split, or None without one."""
    try:
        images, labels = as_arrays(split_examples(checkpoint, "test").dataset)
    except ExportError as error:
        logger.warning("No evaluation: %s", error)
        return None
    if not len(images):
        return None
    logger.info("Running the Keras model on %d test images", len(images))
    return images, labels, keras_probabilities(model, images, checkpoint.config["preprocessing"])


def _runtime_requirement(summary) -> dict:
    """The oldest TFLite runtime that runs the file, and the operator version that sets it."""
    requirement = minimum_runtime(summary)
    if requirement is None:
        return {"min_runtime": None, "min_runtime_op": None}
    return {
        "min_runtime": requirement.runtime,
        "min_runtime_op": f"{requirement.op} v{requirement.version}",
    }


def _export_file(
    folder: Path,
    graph,
    checkpoint: RunDir,
    model,
    profile: str,
    quantization: str,
    calibration: np.ndarray | None,
    test,
    threads: Sequence[int],
    latency_runs: int,
    capture_native_logs: bool,
    options: dict,
    fidelity_reference: dict,
) -> dict:
    """Converts, labels and writes one file into `folder`, then measures it: its report entry.

    `options`: `calibration_method`, `percentile` and `saved_models` (the SavedModel of
    each graph, written once) for `convert`. `fidelity_reference`:
    `logits` (the Keras model's, on the test images) and, per profile, the float32 file's
    bytes once converted (`float32:<profile>`), for the fidelity figures.
    """
    name = file_name(quantization, profile)
    logger.info("Converting %s", name)
    started = time.perf_counter()
    with native_stderr_captured(capture_native_logs):
        content = convert(graph, quantization, calibration, scratch_dir=folder, **options)
    labels = ("\n".join(checkpoint.labels) + "\n").encode("utf-8")
    content = attach_metadata(
        content, _metadata(checkpoint, model, quantization), {LABELS_FILE: labels}
    )
    atomic_write_bytes(folder / name, content)
    summary = tflite_reader.read_summary(content)
    entry = {
        "file": name,
        "profile": profile,
        "quantization": quantization,
        "size_bytes": len(content),
        "convert_seconds": round(time.perf_counter() - started, 2),
        **analysis.summarize(summary),
        **_runtime_requirement(summary),
    }
    if profile == "edgetpu":
        from export.edgetpu_check import check

        entry["edgetpu"] = check(summary).as_dict(ops=False)
    images, labels, reference = test if test is not None else (None, None, None)
    logger.info("Evaluating %s%s", name, f" on {len(images)} test images" if test else "")
    with native_stderr_captured(capture_native_logs):
        measured = evaluate_file(folder / name, images, labels, reference, threads, latency_runs)
    entry.update(measured)
    if quantization == "float32":
        fidelity_reference[f"float32:{profile}"] = content
    if test is not None and fidelity_reference.get("logits") is not None:
        with native_stderr_captured(capture_native_logs):
            entry.update(_fidelity(content, images, fidelity_reference, profile, quantization))
    return entry


def _fidelity(content: bytes, images, reference: dict, profile: str, quantization: str) -> dict:
    """The file's logit error, ranking and top-1 agreement against the Keras model's logits,
    and for a quantized file the ops that add the most error against the float32 file."""
    from export import fidelity, tflite_fidelity

    logits = tflite_fidelity.logits(content, images)
    figures = {
        key: round(value, 6)
        for key, value in fidelity.fidelity(reference["logits"], logits).items()
        if key != "top1_agreement"  # the report's from the probabilities; the same argmax
    }
    float_file = reference.get(f"float32:{profile}")
    if quantization != "float32" and float_file is not None:
        layers = tflite_fidelity.layer_report(float_file, content, images[:LAYER_IMAGES])
        figures["worst_layers"] = layers["worst"]
    return figures


def _check_int8_options(
    calibration_samples: int,
    calibration_method: str,
    percentile: float,
    smooth_alpha,
    mlp_spans,
    weight_rounding,
) -> None:
    """Raises `ExportError` (one line naming the flag) for an out-of-range int8 option."""
    if calibration_samples < 1:
        raise ExportError(f"--calibration-samples must be at least 1, got {calibration_samples}")
    if calibration_method not in CALIBRATION_METHODS:
        raise ExportError(
            f"Unknown --calibration {calibration_method!r}; expected one of "
            f"{', '.join(CALIBRATION_METHODS)}"
        )
    if not 50.0 < percentile <= 100.0:
        raise ExportError(f"--percentile must be above 50 and at most 100, got {percentile}")
    if smooth_alpha is not None and not 0.0 <= smooth_alpha <= 1.0:
        raise ExportError(f"--smooth-alpha must be between 0 and 1, got {smooth_alpha}")
    if isinstance(mlp_spans, bool) or not isinstance(mlp_spans, int) or mlp_spans < 1:
        raise ExportError(f"--mlp-spans must be a positive integer, got {mlp_spans!r}")
    if weight_rounding not in WEIGHT_ROUNDINGS:
        raise ExportError(
            f"Unknown --weight-rounding {weight_rounding!r}; expected one of "
            f"{', '.join(WEIGHT_ROUNDINGS)}"
        )


def prepared_model(model, calibration: np.ndarray, preprocessing: dict, alpha, mlp_spans: int):
    """`model` with LayerNorm output scales migrated (`alpha`) and its MLPs split in spans."""
    from export.mlp_spans import split_mlps
    from export.smoothing import smooth

    images = normalised(calibration, preprocessing)
    if alpha is not None:
        logger.info("Migrating LayerNorm output scales (alpha %.2f)", alpha)
        model = smooth(model, images, alpha)
    if mlp_spans > 1:
        logger.info("Splitting each MLP into at most %d unit spans", mlp_spans)
        model = split_mlps(model, images, mlp_spans)
    return model


def export_tflite(
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    quantize: Sequence[str] = DEFAULT_QUANTIZATIONS,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    edgetpu: bool = False,
    overwrite: bool = False,
    evaluate: bool = True,
    threads: Sequence[int] = (1, 2),
    latency_runs: int = 50,
    seed: int = 0,
    capture_native_logs: bool = False,
    calibration_method: str = "minmax",
    percentile: float = DEFAULT_PERCENTILE,
    smooth_alpha: float | None = None,
    mlp_spans: int = 1,
    weight_rounding: str = "nearest",
) -> dict:
    """Exports a run directory to `.tflite` files and writes the report.

    Args:
        checkpoint_dir: a run directory (`keras_vit.run_dir`).
        output_dir: where to write; default `<checkpoint>/tflite`. Refused if it exists and
            is not empty, unless `overwrite`.
        quantize: quantizations to export, each one of `QUANTIZATIONS`.
        calibration_samples: training images to calibrate `int8` / `int16x8` / Edge TPU on.
        edgetpu: also export the Edge TPU profile (int8) and check it.
        overwrite: replace an existing `output_dir` that an export of this project wrote
            (never the run directory, a folder containing it, or a foreign folder).
        evaluate: measure parity and accuracy on the checkpoint's test split.
        threads: interpreter thread counts to time.
        latency_runs: timed invocations per thread count.
        seed: seed of the calibration sample.
        capture_native_logs: hide what the converter and the interpreter write to file
            descriptor 2 (replayed if a conversion fails; `keras_vit.console`).
        calibration_method: how `int8` / `int8_cpu` set activation ranges, one of
            `export.calibration.CALIBRATION_METHODS` (default `minmax`, the converter's).
        percentile: the percentile of `calibration_method="percentile"`.
        smooth_alpha: migrate LayerNorm output scales into the next Dense layers with this
            strength (`export.smoothing`, 0..1) before converting every file; None: no.
        mlp_spans: run each MLP as up to this many spans of hidden units of similar
            calibrated range, each with its own int8 ranges (`export.mlp_spans`; the same
            function); 1: one MLP.
        weight_rounding: how the quantized files' int8 weights are rounded: `"nearest"`
            (the converter's) or `"gptq"` (error feedback on the calibration images,
            `export.weight_rounding`; the float files keep the exact weights).

    Returns:
        The report (also written as `report.json` in `output_dir`).

    Raises:
        ExportError, FileNotFoundError, FileExistsError, ValueError: with one-line messages.
    """
    started = time.perf_counter()
    quantize = _checked_quantizations(quantize, edgetpu)
    _check_int8_options(
        calibration_samples,
        calibration_method,
        percentile,
        smooth_alpha,
        mlp_spans,
        weight_rounding,
    )
    checkpoint = read_run_dir(checkpoint_dir)
    output = Path(output_dir) if output_dir is not None else checkpoint.path / DEFAULT_OUTPUT
    check_output(output, checkpoint.path, overwrite)
    model = checkpoint.load_model()
    # One calibration sample for every step that reads images: the calibrated files'
    # ranges, smoothing and MLP spans (every file), GPTQ (the int8-weight files).
    gptq = weight_rounding == "gptq" and (bool(INT8_WEIGHTS & set(quantize)) or edgetpu)
    calibration = None
    if CALIBRATED & set(quantize) or edgetpu or smooth_alpha is not None or mlp_spans > 1 or gptq:
        calibration = calibration_images(checkpoint, calibration_samples, seed)
    test = _test_split(checkpoint, model) if evaluate else None
    preprocessing = checkpoint.config["preprocessing"]
    fidelity_reference: dict = {"logits": None}
    if test is not None:
        from export.tflite_fidelity import keras_logits

        fidelity_reference["logits"] = keras_logits(model, test[0], preprocessing)
    options = {"calibration_method": calibration_method, "percentile": percentile}
    report = new_report(
        checkpoint,
        model,
        calibration,
        seed,
        test,
        {
            **options,
            "smooth_alpha": smooth_alpha,
            "mlp_spans": mlp_spans,
            "weight_rounding": weight_rounding,
        },
    )
    exported_model = model
    if smooth_alpha is not None or mlp_spans > 1:
        exported_model = prepared_model(model, calibration, preprocessing, smooth_alpha, mlp_spans)
    jobs = [("default", q) for q in quantize] + ([("edgetpu", "int8")] if edgetpu else [])
    rounded_model = None  # the int8-weight files' source with `weight_rounding="gptq"`
    if gptq:
        from export.weight_rounding import round_weights

        logger.info("Rounding the int8 weights with GPTQ on the calibration images")
        images = normalised(calibration, preprocessing)
        rounded_model = round_weights(exported_model, images, std=preprocessing["std"])
    with (
        export_folder(output, checkpoint.path, overwrite, "tflite") as folder,
        tempfile.TemporaryDirectory(prefix="keras_vit_export_", dir=folder) as scratch,
    ):
        atomic_write_text(folder / LABELS_FILE, "\n".join(checkpoint.labels) + "\n")
        # Every file of one graph is converted from one SavedModel of it.
        file_options = {**options, "saved_models": SavedModels(scratch)}
        graphs: dict[tuple[str, bool], object] = {}
        for profile, quantization in jobs:
            rounded = rounded_model is not None and quantization in INT8_WEIGHTS
            if (profile, rounded) not in graphs:
                source = rounded_model if rounded else exported_model
                graphs[(profile, rounded)] = build_classifier(source, preprocessing, profile)
            entry = _export_file(
                folder,
                graphs[(profile, rounded)],
                checkpoint,
                model,
                profile,
                quantization,
                calibration,
                test,
                threads,
                latency_runs,
                capture_native_logs,
                file_options,
                fidelity_reference,
            )
            report["files"].append(entry)
        atomic_write_json(folder / REPORT_FILE, finish_report(report, started))
    report["output_dir"] = str(output)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.tflite",
        description="Export a keras-vit run directory to TFLite files with a report.",
    )
    parser.add_argument(
        "checkpoint", metavar="run_dir", help="run directory (model.keras, config.json, ...)"
    )
    parser.add_argument(
        "--output", default=None, help=f"output folder (default: <run_dir>/{DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--quantize",
        nargs="+",
        choices=QUANTIZATIONS,
        default=list(DEFAULT_QUANTIZATIONS),
        help="quantizations to export (default: %(default)s)",
    )
    parser.add_argument(
        "--calibration-samples",
        type=int,
        default=DEFAULT_CALIBRATION_SAMPLES,
        help="training images for int8 / int8_cpu / int16x8 calibration (default: %(default)s)",
    )
    parser.add_argument(
        "--edgetpu", action="store_true", help="also export and check the Edge TPU profile"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the output folder if an earlier export wrote it",
    )
    parser.add_argument(
        "--no-eval", action="store_true", help="skip parity / accuracy on the test split"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    parser.add_argument(
        "--calibration",
        choices=CALIBRATION_METHODS,
        default="minmax",
        help="int8 / int8_cpu activation ranges: the calibrated min..max, or narrowed to a "
        "percentile or to the MSE-optimal range (default: %(default)s)",
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=DEFAULT_PERCENTILE,
        help="percentile of --calibration percentile (default: %(default)s)",
    )
    parser.add_argument(
        "--smooth-alpha",
        type=float,
        default=None,
        help="migrate LayerNorm output scales into the next Dense layers (SmoothQuant-style, "
        "exact in float) with this strength, 0..1, before converting (default: off)",
    )
    parser.add_argument(
        "--mlp-spans",
        type=int,
        default=1,
        help="run each MLP as up to this many spans of hidden units of similar calibrated "
        "range, each with its own int8 ranges (exact in float; default: %(default)s, one MLP)",
    )
    parser.add_argument(
        "--weight-rounding",
        default="nearest",
        help="rounding of the int8 weights of the quantized files: nearest (the converter's) "
        "or gptq (error feedback on the calibration images; default: %(default)s)",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show TensorFlow's and the converter's log lines",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet = configure_logging(args.verbose)
    user_errors = (ExportError, FileNotFoundError, FileExistsError, ValueError)
    try:
        with native_stderr_captured(quiet, expected_errors=user_errors):
            report = export_tflite(
                args.checkpoint,
                args.output,
                quantize=args.quantize,
                calibration_samples=args.calibration_samples,
                edgetpu=args.edgetpu,
                overwrite=args.force,
                evaluate=not args.no_eval,
                seed=args.seed,
                capture_native_logs=quiet,
                calibration_method=args.calibration,
                percentile=args.percentile,
                smooth_alpha=args.smooth_alpha,
                mlp_spans=args.mlp_spans,
                weight_rounding=args.weight_rounding,
            )
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_table(report))
    print(f"Wrote {report['output_dir']}/{REPORT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
