"""Exports a checkpoint folder to TFLite: float32, float16, dynamic, int8, int8_cpu, int16x8.

    python -m export.tflite ckpt/ [--output DIR] [--quantize float32 int8 ...]
        [--calibration-samples N] [--edgetpu] [--force]

Every file is converted from a SavedModel with a static `[1, H, W, 3]` input (a dynamic
batch adds SHAPE / GATHER / PACK ops) and TFLite builtin ops only: a graph that would need
a TensorFlow (Flex) or custom op fails, naming the op. Every file takes RGB pixels 0..255
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
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from export import analysis, tflite_file
from export.metadata import LABELS_FILE, attach_metadata, build_classifier_metadata
from keras_vit import artifacts

logger = logging.getLogger(__name__)

Quantization = Literal["float32", "float16", "dynamic", "int8", "int8_cpu", "int16x8"]
QUANTIZATIONS: tuple[str, ...] = ("float32", "float16", "dynamic", "int8", "int8_cpu", "int16x8")
DEFAULT_QUANTIZATIONS: tuple[str, ...] = ("float32", "int8")
CALIBRATED = frozenset({"int8", "int8_cpu", "int16x8"})
INTEGER_IO = frozenset({"int8", "int8_cpu"})  # uint8 pixels in, uint8 probabilities out
# Kept in float32 by `int8_cpu`: XNNPACK has no int8 kernel for them, so in a full-integer
# file each one runs on TFLite's single-threaded kernel between two delegate partitions.
FLOAT_ISLAND_OPS: tuple[str, ...] = ("SOFTMAX", "RSQRT", "GELU")
DEFAULT_CALIBRATION_SAMPLES = 256
REPORT_FILE = "report.json"
DEFAULT_OUTPUT = "tflite"  # inside the checkpoint folder
PIXEL_RANGE = (0.0, 255.0)


class ExportError(ValueError):
    """A problem the user can fix (bad checkpoint, missing data, unsupported graph)."""


def file_name(quantization: str, profile: str = "default") -> str:
    """`model_int8.tflite`, or `model_edgetpu_int8.tflite` for the Edge TPU profile."""
    if profile == "default":
        return f"model_{quantization}.tflite"
    return f"model_{profile}_{quantization}.tflite"


# === Conversion ===


def _write_saved_model(classifier, directory: Path) -> None:
    """A SavedModel whose serving signature takes float32 pixels `[1, H, W, C]`."""
    import keras
    import tensorflow as tf

    height, width = classifier.image_size
    shape = (1, height, width, classifier.num_channels)
    classifier(np.zeros(shape, np.float32))  # builds a subclassed graph
    archive = keras.export.ExportArchive()
    archive.track(classifier)
    archive.add_endpoint(
        "serve", classifier.call, input_signature=[tf.TensorSpec(shape, tf.float32, "pixels")]
    )
    archive.write_out(str(directory), verbose=False)


def _converter_ops(message: str) -> list[str]:
    """TensorFlow op names a converter error complains about (`tf.Erfinv` -> `Erfinv`)."""
    names = re.findall(r"\btf\.([A-Z][A-Za-z0-9_]*)", message)
    names += re.findall(r"'tf\.([A-Z][A-Za-z0-9_]*)'", message)
    return list(dict.fromkeys(names))


def _representative(images: np.ndarray, label: str) -> Callable[[], Iterable[list[np.ndarray]]]:
    """A representative-dataset generator over uint8 images, with a Keras progress bar."""

    def generate():
        import keras

        # One line at the end when stdout is not a terminal (logs, CI).
        bar = keras.utils.Progbar(
            len(images), unit_name="image", verbose=1 if sys.stdout.isatty() else 2
        )
        logger.info("Calibrating %s on %d images", label, len(images))
        for i, image in enumerate(images):
            yield [image[None].astype(np.float32)]
            bar.update(i + 1)

    return generate


PASS_THROUGH_OPS = ("RESHAPE", "TRANSPOSE")


def _editable(content: bytes):
    """`(model, main subgraph, {opcode index: op name})` of a `.tflite` model, to edit."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    names = {i: flatbuffer_utils.opcode_to_name(model, i) for i in range(len(model.operatorCodes))}
    return model, model.subgraphs[0], names


def _serialized(model) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _adjust_calibrated_ranges(
    calibrated: bytes, low: float, high: float, symmetric_matmul: bool = True
) -> bytes:
    """Sets calibrated ranges before quantization: the pixel input's, and the matmul operands'.

    Input: the quantizer derives the uint8 input's scale and zero point from its range;
    pinning it (and the reshapes that only move it) to the pixel range 0..255 gives scale 1
    and zero point 0 whatever pixel values the calibration images happened to contain, so
    image bytes go in unchanged.

    Matmul operands (`symmetric_matmul`): LiteRT's XNNPACK delegate runs an int8
    BATCH_MATMUL only if its right operand has zero point 0; otherwise the op falls back to
    TFLite's int8 kernel, which on ViT-Ti/16 took 35 of the 41 ms of a whole int8 forward.
    The right operands of attention (keys and values, each a projection followed by a
    reshape and a transpose) get the range `[-m * 128 / 127, m]`, `m` the larger calibrated
    magnitude, which the quantizer turns into scale `m / 127` and zero point exactly 0: at
    most one bit of resolution spent for a range that was nearly symmetric already.
    """
    model, graph, names = _editable(calibrated)

    def set_range(index: int, low: float, high: float) -> None:
        quantization = graph.tensors[index].quantization
        if quantization is None or quantization.min is None:
            raise RuntimeError(f"the calibrated model has no range for tensor {index}")
        quantization.min, quantization.max = [float(low)], [float(high)]

    pinned = set(graph.inputs)
    for op in graph.operators:  # execution order: follow the pass-through chain
        if names.get(op.opcodeIndex) in PASS_THROUGH_OPS and op.inputs[0] in pinned:
            pinned.add(op.outputs[0])
    for index in pinned:
        set_range(index, low, high)

    if symmetric_matmul:
        producer = {out: op for op in graph.operators for out in op.outputs}
        for op in graph.operators:
            if names.get(op.opcodeIndex) != "BATCH_MATMUL":
                continue
            chain = [op.inputs[1]]  # back through the ops that only move values
            while (source := producer.get(chain[-1])) is not None and names.get(
                source.opcodeIndex
            ) in PASS_THROUGH_OPS:
                chain.append(source.inputs[0])
            if any(i in pinned or i in graph.inputs for i in chain):
                continue
            quantizations = [graph.tensors[i].quantization for i in chain]
            if any(q is None or q.min is None for q in quantizations):
                continue
            magnitude = max(max(abs(q.min[0]), abs(q.max[0])) for q in quantizations)
            for index in chain:
                set_range(index, -magnitude * 128.0 / 127.0, magnitude)
    return _serialized(model)


def _maps_to_itself(var: tuple, out: tuple, constants: np.ndarray, margin: float = 0.25) -> bool:
    """Whether int8 `q + c` requantized from scale/zero `var` to `out` is `q` for all q, c."""
    (var_scale, var_zero), (out_scale, out_zero) = var, out
    if var_zero != out_zero:
        return False
    q = np.arange(-128, 128, dtype=np.float64)[:, None]
    real = (q - var_zero) * var_scale + np.unique(constants).astype(np.float64)[None, :]
    return bool(np.abs(real / out_scale + out_zero - q).max() < margin)


def drop_noop_adds(quantized: bytes) -> bytes:
    """Removes the int8 ADDs of a constant that return every input integer unchanged.

    LayerNorm's `variance + epsilon` quantizes to such an ADD: epsilon (1e-6) is far below
    one step of the variance's scale, so the op returns its input unchanged, but XNNPACK
    refuses it (the constant's scale is out of its range) and it ran on TFLite's kernel
    between two delegate partitions, 25 times in ViT-Ti/16. An ADD is removed only when it
    provably maps every int8 input to itself: its output has the zero point of its variable
    input and, for each of the 256 input values and each constant value, the exact real sum
    lies within a quarter step of the input integer on the output's scale (TFLite's
    fixed-point ADD errs by far less than that margin), so the result is the same integers
    (the tests compare outputs bit for bit). The output scale may differ from the input's
    by a rounding: a class-token-only LayerNorm calibrates its variance on one value per
    image, and the range of `variance + epsilon` is then epsilon wider. Its consumers then
    read the variable input directly.
    """
    model, graph, names = _editable(quantized)

    def constant(index: int) -> np.ndarray | None:
        tensor = graph.tensors[index]
        data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
        if data is None or len(data) == 0 or tensor.type != 9:  # 9: int8
            return None
        return np.frombuffer(bytes(data), np.int8)

    def scale_zero(index: int):
        q = graph.tensors[index].quantization
        if q is None or q.scale is None or len(q.scale) != 1:
            return None
        return float(q.scale[0]), int(q.zeroPoint[0])

    replaced: dict[int, int] = {}
    kept = []
    for op in graph.operators:
        inputs = [replaced.get(i, i) for i in op.inputs]
        op.inputs = np.array(inputs, dtype=np.int32)
        if names.get(op.opcodeIndex) == "ADD" and len(inputs) == 2:
            values = [constant(i) for i in inputs]
            if sum(v is not None for v in values) == 1:
                variable = inputs[0] if values[0] is None else inputs[1]
                const_index = inputs[1] if values[0] is None else inputs[0]
                value = values[0] if values[0] is not None else values[1]
                out, var, const = (scale_zero(i) for i in (op.outputs[0], variable, const_index))
                fused = getattr(op.builtinOptions, "fusedActivationFunction", 0)
                if (
                    out is not None
                    and var is not None
                    and const is not None
                    and not fused
                    and op.outputs[0] not in graph.outputs
                    and _maps_to_itself(var, out, (value.astype(np.int64) - const[1]) * const[0])
                ):
                    replaced[op.outputs[0]] = variable
                    continue
        kept.append(op)
    if not replaced:
        return quantized
    graph.operators = kept
    return _serialized(model)


def convert(
    classifier,
    quantization: Quantization,
    calibration: np.ndarray | None = None,
    symmetric_matmul: bool = True,
) -> bytes:
    """Converts an export graph (pixels in, probabilities out) to a `.tflite` model.

    Args:
        classifier: a Keras model with `image_size` and `num_channels` attributes taking
            float32 pixels, such as `export.classifier.PixelClassifier`.
        quantization: one of `QUANTIZATIONS`.
        calibration: uint8 images `(N, H, W, C)` for `int8`, `int8_cpu` and `int16x8`.
        symmetric_matmul: for `int8` and `int8_cpu`, give the right operands of
            BATCH_MATMUL zero point 0 so that LiteRT's XNNPACK delegate runs them (see
            `_adjust_calibrated_ranges`);
            False gives the converter's own ranges (slower on CPU, for comparison).

    Returns:
        The model bytes (no metadata yet).

    Raises:
        ExportError: the graph needs an op TFLite has no builtin for (naming it), or
            calibration images are missing.
    """
    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ExportError(
            f"Unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZATIONS)}"
        )
    if quantization in CALIBRATED and (calibration is None or len(calibration) == 0):
        raise ExportError(f"{quantization} needs calibration images; none were given")
    with tempfile.TemporaryDirectory(prefix="keras_vit_export_") as tmp:
        _write_saved_model(classifier, Path(tmp))
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "dynamic":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        elif quantization in INTEGER_IO:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = _representative(calibration, quantization)
            converter.inference_input_type = tf.uint8
            converter.inference_output_type = tf.uint8
            # Calibrate only, pin the input range, then quantize: the two steps
            # `convert()` runs for this setting, with the pin in between.
            converter._experimental_calibrate_only = True
        elif quantization == "int16x8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
            converter.representative_dataset = _representative(calibration, "int16x8")
        try:
            model = converter.convert()
            if quantization in INTEGER_IO:
                from tensorflow.lite.python.convert import mlir_quantize

                model = mlir_quantize(
                    _adjust_calibrated_ranges(model, *PIXEL_RANGE, symmetric_matmul),
                    input_data_type=tf.uint8,
                    output_data_type=tf.uint8,
                    denylisted_ops=list(FLOAT_ISLAND_OPS) if quantization == "int8_cpu" else None,
                )
                model = drop_noop_adds(model)
        except Exception as error:  # ConverterError and the quantizer's RuntimeError
            ops = _converter_ops(str(error))
            if ops:
                raise ExportError(
                    f"The graph needs TensorFlow op(s) with no TFLite builtin: {', '.join(ops)} "
                    "(Flex / SELECT_TF_OPS is not allowed)"
                ) from None
            first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise ExportError(f"TFLite conversion ({quantization}) failed: {first_line}") from None
    check_builtin_only(model)
    return bytes(model)


def check_builtin_only(model: bytes) -> None:
    """Raises ExportError naming any Flex or custom op in `model`."""
    flex, custom = analysis.custom_ops(tflite_file.read_summary(model))
    if flex or custom:
        raise ExportError(
            "The converted graph contains non-builtin op(s): " + ", ".join(flex + custom)
        )


# === Data ===


def _examples(checkpoint: artifacts.CheckpointDir, split: str):
    from keras_vit import data

    dataset = checkpoint.config.get("dataset")
    if not isinstance(dataset, dict) or not dataset.get("source"):
        raise ExportError(
            f"{checkpoint.path / artifacts.CONFIG_FILE} names no dataset source, so there is "
            f"no {split} data"
        )
    kwargs = {"data_dir": dataset["data_dir"]} if dataset.get("data_dir") else {}
    try:
        return data.load_examples(dataset["source"], split, checkpoint.image_size, **kwargs)
    except (ValueError, FileNotFoundError, OSError, TypeError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ExportError(
            f"Cannot load the {split} split of dataset {dataset['source']!r}: {message}"
        ) from None


def _as_arrays(dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`(uint8 images, int32 labels)` of an unbatched `(image, label)` dataset."""
    if limit is not None:
        dataset = dataset.take(limit)
    images, labels = [], []
    for image, label in dataset.as_numpy_iterator():
        images.append(image)
        labels.append(label)
    if not images:
        return np.zeros((0,), np.uint8), np.zeros((0,), np.int32)
    return np.stack(images).astype(np.uint8), np.asarray(labels, np.int32)


def calibration_images(
    checkpoint: artifacts.CheckpointDir, num_samples: int, seed: int = 0
) -> np.ndarray:
    """`num_samples` uint8 images of the checkpoint's training split, shuffled with `seed`.

    Raises:
        ExportError: the checkpoint names no dataset, it cannot be loaded, or it is empty.
    """
    if num_samples < 1:
        raise ExportError(f"--calibration-samples must be at least 1, got {num_samples}")
    examples = _examples(checkpoint, "train")
    shuffled = examples.dataset.shuffle(
        min(examples.num_examples, 10_000) or 1, seed=seed, reshuffle_each_iteration=False
    )
    images, _ = _as_arrays(shuffled, num_samples)
    if len(images) == 0:
        raise ExportError(
            f"The train split of dataset {checkpoint.config['dataset']['source']!r} is empty: "
            "no calibration data"
        )
    return images


def keras_probabilities(model, images: np.ndarray, preprocessing: dict) -> np.ndarray:
    """The checkpoint's Keras model on uint8 images: normalise, predict, softmax."""
    import keras

    mean = np.asarray(preprocessing["mean"], np.float32)
    std = np.asarray(preprocessing["std"], np.float32)
    outputs = model.predict((images.astype(np.float32) - mean) / std, batch_size=64, verbose=0)
    if model.classifier_activation != "softmax":
        outputs = keras.ops.convert_to_numpy(keras.ops.softmax(outputs, axis=-1))
    return np.asarray(outputs, np.float32)


# === Building the export graphs ===


def build_classifier(model, preprocessing: dict, profile: str = "default"):
    """The export graph of a checkpoint's model for a profile (`default` or `edgetpu`)."""
    from export.classifier import PixelClassifier

    return PixelClassifier(model, preprocessing["mean"], preprocessing["std"], profile=profile)


def _metadata(checkpoint: artifacts.CheckpointDir, model, quantization: str) -> bytes:
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


# === Evaluation and report ===


def evaluate_file(
    path: Path,
    images: np.ndarray | None,
    labels: np.ndarray | None,
    reference: np.ndarray | None,
    threads: Sequence[int] = (1, 2),
    latency_runs: int = 50,
) -> dict:
    """Parity, accuracy and latency of one `.tflite` file (see the module docstring)."""
    from export.runtime import Classifier

    result: dict = {}
    classifier = None
    for count in threads:
        classifier = Classifier(path, num_threads=count)
        result.setdefault("latency_ms", {})[str(count)] = round(
            classifier.latency_ms(runs=latency_runs), 4
        )
        result["backend"] = classifier.backend
    if images is not None and len(images) and classifier is not None:
        probabilities = classifier.predict(images)
        predicted = probabilities.argmax(axis=1)
        result["accuracy"] = float((predicted == labels).mean())
        if reference is not None:
            result["top1_agreement"] = float((predicted == reference.argmax(axis=1)).mean())
            result["max_abs_prob_diff"] = float(np.abs(probabilities - reference).max())
    return result


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (None where unknown)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(usage / (1024.0 if sys.platform != "darwin" else 1024.0**2), 1)


def _versions() -> dict:
    import keras
    import tensorflow as tf

    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        from importlib.metadata import version

        versions["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # not installed
        pass
    return versions


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
) -> dict:
    """Exports a checkpoint folder to `.tflite` files and writes the report.

    Args:
        checkpoint_dir: a checkpoint folder (`keras_vit.artifacts`).
        output_dir: where to write; default `<checkpoint>/tflite`. Refused if it exists and
            is not empty, unless `overwrite`.
        quantize: quantizations to export, each one of `QUANTIZATIONS`.
        calibration_samples: training images to calibrate `int8` / `int16x8` / Edge TPU on.
        edgetpu: also export the Edge TPU profile (int8) and check it.
        overwrite: replace an existing `output_dir`.
        evaluate: measure parity and accuracy on the checkpoint's test split.
        threads: interpreter thread counts to time.
        latency_runs: timed invocations per thread count.
        seed: seed of the calibration sample.

    Returns:
        The report (also written as `report.json` in `output_dir`).

    Raises:
        ExportError, FileNotFoundError, FileExistsError, ValueError: with one-line messages.
    """
    start = time.perf_counter()
    quantize = list(dict.fromkeys(quantize))
    unknown = [q for q in quantize if q not in QUANTIZATIONS]
    if unknown or not (quantize or edgetpu):
        raise ExportError(
            f"Unknown or no quantization {unknown or quantize}; expected some of "
            f"{', '.join(QUANTIZATIONS)}"
        )
    checkpoint = artifacts.read_checkpoint(checkpoint_dir)
    output = Path(output_dir) if output_dir is not None else checkpoint.path / DEFAULT_OUTPUT
    if output.exists() and not overwrite and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"Output {output} already exists; pass --force to overwrite it")
    model = checkpoint.load_model()
    preprocessing = checkpoint.config["preprocessing"]

    calibration = None
    if CALIBRATED & set(quantize) or edgetpu:
        calibration = calibration_images(checkpoint, calibration_samples, seed)
    images = labels = reference = None
    if evaluate:
        try:
            images, labels = _as_arrays(_examples(checkpoint, "test").dataset)
        except ExportError as error:
            logger.warning("No evaluation: %s", error)
        if images is not None and len(images):
            reference = keras_probabilities(model, images, preprocessing)

    jobs = [("default", q) for q in quantize] + ([("edgetpu", "int8")] if edgetpu else [])
    report: dict = {
        "checkpoint": str(checkpoint.path),
        "model": model.name,
        "image_size": list(checkpoint.image_size),
        "num_params": int(model.count_params()),
        "num_classes": len(checkpoint.labels),
        "input": "RGB pixels 0..255 (uint8 for int8 files, float32 otherwise)",
        "output": "class probabilities (uint8 scale 1/256 for int8 files, float32 otherwise)",
        "calibration": (
            {"split": "train", "samples": len(calibration), "seed": seed}
            if calibration is not None
            else None
        ),
        "test_split": None,
        "files": [],
        "versions": _versions(),
    }
    if reference is not None:
        report["test_split"] = {
            "source": checkpoint.config["dataset"]["source"],
            "num_examples": len(images),
            "keras_accuracy": float((reference.argmax(axis=1) == labels).mean()),
        }
    with artifacts.atomic_directory(output, overwrite=True) as tmp:
        artifacts.atomic_write_text(tmp / LABELS_FILE, "\n".join(checkpoint.labels) + "\n")
        graphs: dict[str, object] = {}
        for profile, quantization in jobs:
            if profile not in graphs:
                graphs[profile] = build_classifier(model, preprocessing, profile)
            logger.info("Converting %s (%s profile)", quantization, profile)
            started = time.perf_counter()
            content = convert(graphs[profile], quantization, calibration)
            content = attach_metadata(
                content,
                _metadata(checkpoint, model, quantization),
                {LABELS_FILE: ("\n".join(checkpoint.labels) + "\n").encode("utf-8")},
            )
            name = file_name(quantization, profile)
            artifacts.atomic_write_bytes(tmp / name, content)
            entry = {
                "file": name,
                "profile": profile,
                "quantization": quantization,
                "size_bytes": len(content),
                "convert_seconds": round(time.perf_counter() - started, 2),
                **analysis.summarize(tflite_file.read_summary(content)),
            }
            if profile == "edgetpu":
                from export.edgetpu_check import check

                entry["edgetpu"] = check(tflite_file.read_summary(content)).as_dict(ops=False)
            entry.update(
                evaluate_file(tmp / name, images, labels, reference, threads, latency_runs)
            )
            report["files"].append(entry)
        sizes = {e["quantization"]: e["size_bytes"] for e in report["files"]}
        if "float32" in sizes:
            for entry in report["files"]:
                entry["size_vs_float32"] = round(entry["size_bytes"] / sizes["float32"], 4)
        report["export_seconds"] = round(time.perf_counter() - start, 1)
        report["peak_rss_mb"] = _peak_rss_mb()
        artifacts.atomic_write_json(tmp / REPORT_FILE, report)
    report["output_dir"] = str(output)
    return report


def format_table(report: dict) -> str:
    """The report as a fixed-width table, one row per file."""
    header = (
        f"{'file':28s} {'size KiB':>9s} {'x f32':>6s} {'ops':>5s} {'float':>5s} {'flex':>4s} "
        f"{'agree %':>8s} {'max|dp|':>8s} {'acc %':>7s} {'ms 1t':>8s} {'ms 2t':>8s}"
    )
    lines = [header, "-" * len(header)]

    def pct(value):
        return f"{100 * value:.2f}" if value is not None else "-"

    for e in report["files"]:
        latency = e.get("latency_ms", {})
        diff = e.get("max_abs_prob_diff")
        lines.append(
            f"{e['file']:28s} {e['size_bytes'] / 1024:9.1f} "
            f"{e.get('size_vs_float32', float('nan')):6.3f} {e['num_ops']:5d} "
            f"{e['float_compute_ops']:5d} {len(e['flex_ops']):4d} "
            f"{pct(e.get('top1_agreement')):>8s} "
            f"{(f'{diff:.4f}' if diff is not None else '-'):>8s} {pct(e.get('accuracy')):>7s} "
            f"{latency.get('1', float('nan')):8.3f} {latency.get('2', float('nan')):8.3f}"
        )
    if report.get("test_split"):
        split = report["test_split"]
        lines.append(
            f"Keras model: {100 * split['keras_accuracy']:.2f} % on {split['num_examples']} "
            f"test images of {split['source']!r}"
        )
    for e in report["files"]:
        if "edgetpu" in e:
            edge = e["edgetpu"]
            lines.append(
                f"{e['file']}: first op off the Edge TPU table: "
                f"{edge['first_unsupported'] if edge['first_unsupported'] is not None else 'none'}"
                f"; {100 * edge['mac_share_before_first_unsupported']:.1f} % of MACs before it"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.tflite",
        description="Export a keras-vit checkpoint folder to TFLite files with a report.",
    )
    parser.add_argument("checkpoint", help="checkpoint folder (model.keras, config.json, ...)")
    parser.add_argument(
        "--output", default=None, help=f"output folder (default: <checkpoint>/{DEFAULT_OUTPUT})"
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
    parser.add_argument("--force", action="store_true", help="overwrite the output folder")
    parser.add_argument(
        "--no-eval", action="store_true", help="skip parity / accuracy on the test split"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the calibration sample")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = export_tflite(
            args.checkpoint,
            args.output,
            quantize=args.quantize,
            calibration_samples=args.calibration_samples,
            edgetpu=args.edgetpu,
            overwrite=args.force,
            evaluate=not args.no_eval,
            seed=args.seed,
        )
    except (ExportError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_table(report))
    print(f"Wrote {report['output_dir']}/{REPORT_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
