"""Runs an exported `.tflite` classifier where TensorFlow is not installed.

The interpreter comes from the first of these that imports and opens the model:
`ai_edge_litert` (LiteRT), `tflite_runtime` (the older standalone package), `tensorflow.lite`
(only if TensorFlow happens to be installed; this module never imports it otherwise). A
package that imports but fails to open the model (tflite-runtime 2.14 beside NumPy 2 does)
is skipped with a logged warning.

`Classifier` feeds images as the model's input wants them: uint8 pixels as they are to a
uint8 input, quantized with the input's scale and zero point to an int8 one, and
`(pixel - mean) / std` from the model's metadata (identity without metadata) to a float
one; it dequantizes uint8 / int8 outputs. Labels come from the metadata's labels file, else
a `labels.txt` beside the model, else class indices.

Example:
>>> classifier = Classifier("model_int8.tflite")
>>> classifier.classify_files(["cat.jpg"], top_k=3)
[[('cat', 0.91), ('lynx', 0.05), ('tiger', 0.02)]]
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import tflite_reader
from export.runtime_versions import unmet_requirements
from keras_vit.images import ImageFileError, read_resized  # noqa: F401 (ImageFileError is API here)
from keras_vit.validation import first_line

logger = logging.getLogger(__name__)

# Module path, interpreter attribute; tried in this order.
BACKENDS: tuple[tuple[str, str], ...] = (
    ("ai_edge_litert.interpreter", "Interpreter"),
    ("tflite_runtime.interpreter", "Interpreter"),
    ("tensorflow.lite", "Interpreter"),
)


class ModelFileError(ValueError):
    """The model file cannot be read as a TFLite classifier."""


# Interpreter packages numbered like TensorFlow, whose version `runtime_versions` compares;
# ai-edge-litert has its own numbering.
TF_NUMBERED_PACKAGES: dict[str, tuple[str, ...]] = {
    "tflite_runtime.interpreter": ("tflite-runtime",),
    "tensorflow.lite": ("tensorflow", "tensorflow-cpu"),
}


class RuntimeTooOldError(RuntimeError):
    """The installed interpreter is older than an operator version of the model needs."""


def backend_version(module_name: str) -> str | None:
    """The installed version of a TensorFlow-numbered interpreter package, else None."""
    from importlib import metadata

    for distribution in TF_NUMBERED_PACKAGES.get(module_name, ()):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    return None


def _too_old(module_name: str, summary) -> str | None:
    """Why a backend that failed to open the model is too old for it, if it is."""
    installed = backend_version(module_name)
    if summary is None or installed is None:
        return None
    unmet = unmet_requirements(summary, installed)
    if not unmet:
        return None
    package = TF_NUMBERED_PACKAGES[module_name][0]
    return f"{unmet[0]}, but {package} {installed} is installed: pip install ai-edge-litert"


def tensor_interpreter(content: bytes):
    """A LiteRT interpreter on built-in kernels (no delegate) that keeps every tensor readable.

    For reading intermediate tensors (calibration histograms, per-layer error): XNNPACK and
    the other default delegates would fuse and free them. Allocated, ready to invoke.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_content=content,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    interpreter.allocate_tensors()
    return interpreter


def open_interpreter(content: bytes, num_threads: int | None, backends=None, summary=None):
    """The first interpreter backend that imports and allocates `content`.

    Args:
        content: the model's bytes.
        num_threads: interpreter threads, or None for the backend's default.
        backends: `(module, attribute)` pairs to try, in order; default `BACKENDS`.
        summary: the model's `tflite_reader.ModelSummary`, to say which operator needs a
            newer runtime when an installed one fails.

    Raises:
        RuntimeTooOldError: no backend opened the model and an installed one is older
            than an operator version needs (the message names both).
        RuntimeError: no backend imported and opened the model.
    """
    failures = []
    too_old = None
    for module_name, attr in BACKENDS if backends is None else backends:
        try:
            module = importlib.import_module(module_name)
            interpreter_class = getattr(module, attr)
        except Exception as error:  # ImportError, or a broken install that raises on import
            failures.append(f"{module_name}: {type(error).__name__}: {first_line(error)}")
            continue
        try:
            interpreter = interpreter_class(model_content=content, num_threads=num_threads)
            interpreter.allocate_tensors()
        except Exception as error:
            logger.warning("%s could not open the model: %s", module_name, error)
            failures.append(f"{module_name}: {type(error).__name__}: {first_line(error)}")
            too_old = too_old or _too_old(module_name, summary)
            continue
        logger.debug("Using the %s interpreter", module_name)
        return interpreter, module_name
    if too_old:
        raise RuntimeTooOldError(too_old)
    raise RuntimeError(
        "No TFLite interpreter could run the model ("
        + "; ".join(failures)
        + "). Install ai-edge-litert (pip install ai-edge-litert)"
    )


@dataclass(frozen=True)
class Prediction:
    """One class of a top-k answer."""

    index: int
    label: str
    score: float


class Classifier:
    """An image classifier over a `.tflite` file.

    Args:
        model_path: the `.tflite` file.
        num_threads: interpreter threads, or None for the backend's default.
        labels: class names; by default from the model's metadata, else `labels.txt` beside
            the model, else the class indices.

    Raises:
        ModelFileError: the file is missing, not a TFLite model, or not a single-input
            image classifier.
        ValueError: `num_threads` is below 1.
    """

    def __init__(
        self,
        model_path: str | os.PathLike,
        num_threads: int | None = None,
        labels: Sequence[str] | None = None,
    ):
        if num_threads is not None and (isinstance(num_threads, bool) or num_threads < 1):
            raise ValueError(f"num_threads must be None or at least 1, got {num_threads!r}")
        path = Path(model_path)
        if not path.is_file():
            raise ModelFileError(f"Model file {path} does not exist")
        content = path.read_bytes()
        try:
            self.summary = tflite_reader.read_summary(content)
            self.metadata = tflite_reader.read_metadata(content)
        except tflite_reader.TFLiteFormatError as error:
            raise ModelFileError(f"{path} is not a TFLite model: {error}") from None
        try:
            self.interpreter, self.backend = open_interpreter(
                content, num_threads, summary=self.summary
            )
        except RuntimeTooOldError as error:
            raise ModelFileError(f"{path} cannot run here: {error}") from None
        except RuntimeError as error:
            raise ModelFileError(f"{path}: {error}") from None
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or len(outputs) != 1:
            raise ModelFileError(
                f"{path} is not an image classifier: expected one (1, H, W, C) input and one "
                f"output, found {len(inputs)} input(s) and {len(outputs)} output(s)"
            )
        self.path = path
        self.input = inputs[0]
        self.output = outputs[0]
        _, self.height, self.width, self.channels = (int(v) for v in self.input["shape"])
        self.num_classes = int(self.output["shape"][-1])
        self.mean, self.std = self._normalisation()
        self.labels = list(labels) if labels is not None else self._labels(content)
        if len(self.labels) != self.num_classes:
            raise ModelFileError(
                f"{path} has {self.num_classes} outputs but {len(self.labels)} labels"
            )

    def _normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        mean, std = [0.0], [1.0]
        if self.metadata and self.metadata["inputs"]:
            for unit in self.metadata["inputs"][0]["process_units"]:
                if unit["type"] == "normalization":
                    mean, std = unit["mean"] or mean, unit["std"] or std
        return np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def _labels(self, content: bytes) -> list[str]:
        labels = tflite_reader.labels_from_metadata(content)
        if labels is None:
            beside = self.path.with_name("labels.txt")
            if beside.is_file():
                text = beside.read_text(encoding="utf-8")
                labels = [line.strip() for line in text.splitlines() if line.strip()]
        return labels if labels is not None else [str(i) for i in range(self.num_classes)]

    @property
    def image_size(self) -> tuple[int, int]:
        return self.height, self.width

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype == np.uint8 and tuple(self.input["quantization"]) in ((1.0, 0), (0.0, 0)):
            return image.astype(np.uint8)[None]
        values = (image.astype(np.float32) - self.mean) / self.std
        if dtype in (np.uint8, np.int8, np.int16):
            scale, zero_point = self.input["quantization"]
            info = np.iinfo(dtype)
            quantized = np.round(values / scale) + zero_point
            return np.clip(quantized, info.min, info.max).astype(dtype)[None]
        return values.astype(dtype)[None]

    def _read_output(self) -> np.ndarray:
        raw = self.interpreter.get_tensor(self.output["index"])[0]
        if raw.dtype in (np.uint8, np.int8, np.int16):
            scale, zero_point = self.output["quantization"]
            return (raw.astype(np.float32) - zero_point) * scale
        return raw.astype(np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Class scores (probabilities for this project's models) of uint8 images.

        Args:
            images: uint8 `(H, W, C)` or `(N, H, W, C)` at the model's image size.

        Returns:
            float32 `(N, num_classes)`.
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[None]
        expected = (self.height, self.width, self.channels)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"Expected images of shape (N, {expected[0]}, {expected[1]}, {expected[2]}). "
                f"Received: shape={images.shape}"
            )
        scores = np.empty((len(images), self.num_classes), np.float32)
        for i, image in enumerate(images):
            self.interpreter.set_tensor(self.input["index"], self._prepare(image))
            self.interpreter.invoke()
            scores[i] = self._read_output()
        return scores

    def top_k(self, scores: np.ndarray, k: int = 5) -> list[list[Prediction]]:
        """The `k` best classes of each row of `scores`."""
        k = max(1, min(k, self.num_classes))
        out = []
        for row in np.atleast_2d(scores):
            best = np.argsort(-row, kind="stable")[:k]
            out.append([Prediction(int(i), self.labels[i], float(row[i])) for i in best])
        return out

    def classify_files(self, paths: Sequence[str | os.PathLike], top_k: int = 5):
        """Top-k predictions for image files (any format Pillow reads)."""
        images = np.stack([load_image(p, self.image_size) for p in paths])
        return self.top_k(self.predict(images), top_k)

    def latency_ms(self, runs: int = 50, warmup: int = 5) -> float:
        """Median wall time of one `invoke()` at batch 1, in milliseconds."""
        image = np.zeros((self.height, self.width, self.channels), np.uint8)
        self.interpreter.set_tensor(self.input["index"], self._prepare(image))
        for _ in range(warmup):
            self.interpreter.invoke()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            self.interpreter.invoke()
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1000.0)


def load_image(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """Reads an image file as uint8 RGB `(height, width, 3)`, resized bilinearly to `size`.

    `keras_vit.images.read_resized`: the reader training uses (EXIF orientation, 16-bit
    scaling, alpha dropped), then a Pillow bilinear resize if the size differs.

    Raises:
        ImageFileError: the file is missing or not an image Pillow can decode.
    """
    return read_resized(path, size)
