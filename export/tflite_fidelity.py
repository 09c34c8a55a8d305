"""Runs exported files for the fidelity figures of `export.fidelity`: logits and layer errors.

The files output probabilities (a softmax in the graph; uint8 in the integer files, whose
few levels say little about the classes that are not chosen). The logits are the input of
that last SOFTMAX: `logits` runs a copy of the file with that tensor added to the graph's
outputs (`export.flatbuffer_edits.with_outputs`; the ops and their integers are the same),
on the interpreter `export.runtime` picks with its default delegate, and dequantizes it.

`layer_report` compares every intermediate tensor of a quantized file up to the logits to
the tensor of the same name in the float32 file of the same graph: both run on LiteRT's
built-in kernels without delegates (`experimental_preserve_all_tensors=True`, which a
delegate would otherwise hide), on a few images. The ops after the logits (the softmax and
the quantization of the probabilities) are left out: their error is the probabilities'
(uint8, step 1/256, so nearly every probability of a 1000-class model reads 0), which the
logit figures do not see; it would otherwise top the list for every many-class file.

Keras's own logits (`keras_logits`) are the float reference of the other figures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from export import fidelity, tflite_reader
from export.flatbuffer_edits import with_outputs
from export.run_data import normalised
from export.runtime import open_interpreter, tensor_interpreter

INTEGER_TYPES = ("int8", "uint8", "int16", "int32")


def logits_tensor(summary) -> int:
    """Index of the tensor the file's last SOFTMAX reads: the logits.

    Raises:
        ValueError: the file has no SOFTMAX.
    """
    softmaxes = [op for op in summary.operators if op.name == "SOFTMAX"]
    if not softmaxes:
        raise ValueError("The model has no SOFTMAX op, so no logits tensor to read")
    return softmaxes[-1].inputs[0]


def dequantized(tensor, raw: np.ndarray) -> np.ndarray:
    """float64 values of a tensor read from an interpreter, given its `TensorInfo`."""
    values = np.asarray(raw, np.float64)
    if tensor.dtype in INTEGER_TYPES and tensor.scale and tensor.scale[0] > 0:
        if len(tensor.scale) == 1:
            return (values - tensor.zero_point[0]) * tensor.scale[0]
        return values  # per-channel: constants only, never an activation
    return values


def feed_pixels(interpreter, details: dict, image: np.ndarray) -> None:
    """Sets a file's pixel input (`details` from `get_input_details`) to a uint8 image.

    A float input takes the pixels 0..255 as they are; an integer input takes them
    quantized with its scale and zero point (uint8 with scale 1 and zero point 0: as they
    are; an int8 input of scale 1 and zero point -128: `pixel - 128`).

    Raises:
        ValueError: an integer input without quantization that cannot hold 0..255.
    """
    dtype = np.dtype(details["dtype"])
    pixels = np.asarray(image, np.float64)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        scale, zero_point = details["quantization"]
        if scale > 0:
            pixels = np.clip(np.round(pixels / scale) + zero_point, info.min, info.max)
        elif pixels.min() < info.min or pixels.max() > info.max:
            raise ValueError(
                f"Input {details.get('name', details['index'])!r} is {dtype} without "
                "quantization parameters: it cannot hold pixels 0..255"
            )
    interpreter.set_tensor(details["index"], pixels.astype(dtype)[None])


def logits(content: bytes, images: np.ndarray, num_threads: int | None = None) -> np.ndarray:
    """float64 logits `(N, K)` of uint8 images `(N, H, W, C)` from an exported file."""
    summary = tflite_reader.read_summary(content)
    index = logits_tensor(summary)
    interpreter, _ = open_interpreter(with_outputs(content, [index]), num_threads)
    input_details = interpreter.get_input_details()[0]
    output = next(d for d in interpreter.get_output_details() if d["index"] == index)
    rows = []
    for image in images:
        feed_pixels(interpreter, input_details, image)
        interpreter.invoke()
        raw = interpreter.get_tensor(output["index"])
        rows.append(dequantized(summary.tensors[index], raw).reshape(-1))
    return np.stack(rows)


def keras_logits(model, images: np.ndarray, preprocessing: dict) -> np.ndarray:
    """float64 logits of a checkpoint's Keras model on uint8 images (before any softmax)."""
    from export.classifier import rebuild

    if model.classifier_activation == "softmax":
        model = rebuild(model, classifier_activation=None)
    outputs = model.predict(normalised(images, preprocessing), batch_size=64, verbose=0)
    return np.asarray(outputs, np.float64)


def _all_tensors(content: bytes, images: np.ndarray):
    """`(summary, [{tensor name: float64 values} per image])` on built-in kernels."""
    summary = tflite_reader.read_summary(content)
    interpreter = tensor_interpreter(content)
    input_details = interpreter.get_input_details()[0]
    produced = set(summary.inputs) | {i for op in summary.operators for i in op.outputs}
    runs = []
    for image in images:
        feed_pixels(interpreter, input_details, image)
        interpreter.invoke()
        runs.append(
            {
                summary.tensors[i].name: dequantized(summary.tensors[i], interpreter.get_tensor(i))
                for i in sorted(produced)
            }
        )
    return summary, runs


def layer_report(
    float_content: bytes, quantized_content: bytes, images: np.ndarray, count: int = 3
) -> dict:
    """Per-layer error of a quantized file against the float32 file of the same graph,
    from its input to its logits (the module docstring says why not beyond).

    Args:
        float_content / quantized_content: the two files' bytes.
        images: a few uint8 images `(N, H, W, C)` (every tensor of every image is kept).
        count: how many of the ops that add the most error to list.

    Returns:
        `{"matched": tensors compared, "worst": [{op, tensor, error, gain}, ...]}`, errors
        from the images' tensors concatenated (`export.fidelity.layer_errors`).
    """
    _, reference_runs = _all_tensors(float_content, images)
    summary, quantized_runs = _all_tensors(quantized_content, images)

    def stacked(runs: Sequence[dict]) -> dict:
        return {name: np.stack([run[name] for run in runs]) for name in runs[0]}

    reference, values = stacked(reference_runs), stacked(quantized_runs)
    names = [t.name for t in summary.tensors]
    logits_index = logits_tensor(summary)
    last = next(n for n, op in enumerate(summary.operators) if logits_index in op.outputs)
    ops = [
        (op.name, [names[i] for i in op.inputs if i >= 0], [names[i] for i in op.outputs])
        for op in summary.operators[: last + 1]
    ]
    inputs = [names[i] for i in summary.inputs]
    ops.insert(0, ("INPUT", [], inputs))
    rows = fidelity.layer_errors(reference, values, ops)
    return {
        "matched": len(rows),
        "worst": [
            {**row, "error": round(row["error"], 4), "gain": round(row["gain"], 4)}
            for row in fidelity.worst_layers(rows, count)
        ],
    }
