"""Converts an export graph (pixels in, probabilities out) to a `.tflite` model.

Every file is converted from a SavedModel with a static `[1, H, W, 3]` input (a dynamic
batch adds SHAPE / GATHER / PACK ops) to TFLite builtin ops only: a graph that would need a
TensorFlow (Flex) or custom op fails, naming the op. Several files of one graph can share
its SavedModel (`SavedModels`), written once.

The `int8` and `int8_cpu` quantizations calibrate and quantize in two steps so that the
calibrated ranges can be edited in between (`export.flatbuffer_edits`). TensorFlow has no
public API for that: it goes through two private hooks of the converter,
`TFLiteConverter._experimental_calibrate_only` and
`tensorflow.lite.python.convert.mlir_quantize`. `check_private_converter_hooks` says
clearly when a TensorFlow release no longer has them (a test pins them).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from export import analysis, tflite_reader
from export.calibration import CALIBRATION_METHODS, DEFAULT_PERCENTILE, robust_ranges
from export.errors import ExportError
from export.flatbuffer_edits import adjust_calibrated_ranges, drop_noop_adds

logger = logging.getLogger(__name__)

Quantization = Literal["float32", "float16", "dynamic", "int8", "int8_cpu", "int16x8"]
QUANTIZATIONS: tuple[str, ...] = ("float32", "float16", "dynamic", "int8", "int8_cpu", "int16x8")
DEFAULT_QUANTIZATIONS: tuple[str, ...] = ("float32", "int8")
CALIBRATED = frozenset({"int8", "int8_cpu", "int16x8"})
INTEGER_IO = frozenset({"int8", "int8_cpu"})  # uint8 pixels in, uint8 probabilities out
# Kept in float32 by `int8_cpu`: XNNPACK has no int8 kernel for them, so in a full-integer
# file each one runs on TFLite's single-threaded kernel between two delegate partitions.
FLOAT_ISLAND_OPS: tuple[str, ...] = ("SOFTMAX", "RSQRT", "GELU")
PIXEL_RANGE = (0.0, 255.0)


def write_saved_model(classifier, directory: Path) -> None:
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


class SavedModels:
    """The SavedModels of export graphs, each written once into `directory` when a first
    conversion asks for it and reused by every later conversion of the same graph object.

    The caller owns `directory` (and removes it); the graphs must not change meanwhile.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._written: list[tuple[object, Path]] = []

    def path(self, classifier) -> Path:
        """The SavedModel folder of `classifier`, written on the first call."""
        for graph, path in self._written:
            if graph is classifier:
                return path
        path = self.directory / f"saved_model_{len(self._written)}"
        write_saved_model(classifier, path)
        self._written.append((classifier, path))
        return path


def converter_ops(message: str) -> list[str]:
    """TensorFlow op names a converter error complains about (`tf.Erfinv` -> `Erfinv`)."""
    names = re.findall(r"\btf\.([A-Z][A-Za-z0-9_]*)", message)
    names += re.findall(r"'tf\.([A-Z][A-Za-z0-9_]*)'", message)
    return list(dict.fromkeys(names))


def representative_dataset(
    images: np.ndarray, label: str
) -> Callable[[], Iterable[list[np.ndarray]]]:
    """A representative-dataset generator over uint8 images, logging its start and end."""

    def generate():
        logger.info("Calibrating %s on %d images", label, len(images))
        for image in images:
            yield [image[None].astype(np.float32)]
        logger.info("Calibrated %s", label)

    return generate


PRIVATE_CONVERTER_HOOKS = (
    "TFLiteConverter._experimental_calibrate_only",
    "tensorflow.lite.python.convert.mlir_quantize",
)


def check_private_converter_hooks(converter=None) -> None:
    """Raises ExportError unless TensorFlow still has the private hooks the int8 path uses.

    Args:
        converter: a `TFLiteConverter` to look at; without one, only `mlir_quantize` is
            checked.
    """
    try:
        from tensorflow.lite.python.convert import mlir_quantize
    except ImportError:
        mlir_quantize = None
    parameters = set(inspect.signature(mlir_quantize).parameters) if mlir_quantize else set()
    missing = [] if mlir_quantize else [PRIVATE_CONVERTER_HOOKS[1]]
    wanted = {"input_data_type", "output_data_type", "denylisted_ops"}
    if mlir_quantize and not wanted <= parameters:
        missing.append(f"{PRIVATE_CONVERTER_HOOKS[1]}({', '.join(sorted(wanted - parameters))})")
    if converter is not None and not hasattr(converter, "_experimental_calibrate_only"):
        missing.append(PRIVATE_CONVERTER_HOOKS[0])
    if missing:
        import tensorflow as tf

        raise ExportError(
            f"TensorFlow {tf.__version__} lacks the private converter hook(s) the int8 export "
            f"uses: {', '.join(missing)}; install the TensorFlow version this keras-vit was "
            "tested with"
        )


def convert(
    classifier,
    quantization: Quantization,
    calibration: np.ndarray | None = None,
    symmetric_matmul: bool = True,
    scratch_dir: str | os.PathLike | None = None,
    calibration_method: str = "minmax",
    percentile: float = DEFAULT_PERCENTILE,
    saved_models: SavedModels | None = None,
) -> bytes:
    """Converts an export graph (pixels in, probabilities out) to a `.tflite` model.

    Args:
        classifier: a Keras model with `image_size` and `num_channels` attributes taking
            float32 pixels, such as `export.classifier.PixelClassifier`.
        quantization: one of `QUANTIZATIONS`.
        calibration: uint8 images `(N, H, W, C)` for `int8`, `int8_cpu` and `int16x8`.
        symmetric_matmul: for `int8` and `int8_cpu`, give the right operands of
            BATCH_MATMUL zero point 0 so that LiteRT's XNNPACK delegate runs them (see
            `export.flatbuffer_edits.adjust_calibrated_ranges`);
            False gives the converter's own ranges (slower on CPU, for comparison).
        scratch_dir: where the intermediate SavedModel is written (and removed); default
            the system's temporary folder.
        calibration_method: for `int8` and `int8_cpu`, how activation ranges are set from
            the calibration images, one of `export.calibration.CALIBRATION_METHODS`:
            `minmax` (the converter's own), `percentile` or `mse` (narrowed ranges).
        percentile: the percentile of `calibration_method="percentile"`.
        saved_models: where `classifier`'s SavedModel is kept for the next conversion of
            it; None: written into `scratch_dir` and removed after this one.

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
    if calibration_method not in CALIBRATION_METHODS:
        raise ExportError(
            f"Unknown calibration {calibration_method!r}; expected one of "
            f"{', '.join(CALIBRATION_METHODS)}"
        )
    if quantization in CALIBRATED and (calibration is None or len(calibration) == 0):
        raise ExportError(f"{quantization} needs calibration images; none were given")
    with contextlib.ExitStack() as stack:
        if saved_models is None:
            scratch = tempfile.TemporaryDirectory(prefix="keras_vit_export_", dir=scratch_dir)
            saved_model = Path(stack.enter_context(scratch))
            write_saved_model(classifier, saved_model)
        else:
            saved_model = saved_models.path(classifier)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
        _configure(converter, quantization, calibration)
        try:
            model = converter.convert()
            if quantization in INTEGER_IO:
                model = _quantize_calibrated(
                    model,
                    quantization,
                    calibration,
                    calibration_method,
                    percentile,
                    symmetric_matmul,
                )
        except ExportError:
            raise
        except Exception as error:  # ConverterError and the quantizer's RuntimeError
            ops = converter_ops(str(error))
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
    flex, custom = analysis.custom_ops(tflite_reader.read_summary(model))
    if flex or custom:
        raise ExportError(
            "The converted graph contains non-builtin op(s): " + ", ".join(flex + custom)
        )


def _configure(converter, quantization: str, calibration: np.ndarray | None) -> None:
    """Sets `converter`'s ops, optimisations, calibration data and I/O types for `quantization`."""
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization in INTEGER_IO:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = representative_dataset(calibration, quantization)
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
        # Calibrate only, pin the input range, then quantize: the two steps `convert()` runs
        # for this setting, with the pin in between (`_quantize_calibrated`). Private hook
        # (see the module docstring), pinned by a test.
        check_private_converter_hooks(converter)
        converter._experimental_calibrate_only = True
    elif quantization == "int16x8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        converter.representative_dataset = representative_dataset(calibration, "int16x8")


def _quantize_calibrated(
    calibrated: bytes,
    quantization: str,
    calibration: np.ndarray,
    calibration_method: str,
    percentile: float,
    symmetric_matmul: bool,
) -> bytes:
    """The uint8-in / uint8-out int8 file from a calibrated-only model (`_configure`)."""
    import tensorflow as tf

    # Private hook (see the module docstring), pinned by a test.
    from tensorflow.lite.python.convert import mlir_quantize

    model = robust_ranges(calibrated, calibration, calibration_method, percentile)
    model = mlir_quantize(
        adjust_calibrated_ranges(model, *PIXEL_RANGE, symmetric_matmul),
        input_data_type=tf.uint8,
        output_data_type=tf.uint8,
        denylisted_ops=list(FLOAT_ISLAND_OPS) if quantization == "int8_cpu" else None,
    )
    return drop_noop_adds(model)
