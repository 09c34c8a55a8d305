"""What a `.tflite` graph computes: op histogram, float compute ops, Flex / custom ops, MACs.

Standard library only (it works on `export.tflite_reader.ModelSummary`), so the Edge TPU
checker and the tests run it where TensorFlow is not installed.

Definitions used by the export report:

- **float compute op**: an operator with at least one floating-point (float32 / float16 /
  float64 / bfloat16) input or output tensor, except a QUANTIZE that reads a graph input
  and a DEQUANTIZE that writes a graph output (the float/integer boundary of a model with
  float I/O). A fully integer file has none.
- **Flex op**: a custom operator whose name starts with `Flex` (a TensorFlow kernel that
  needs the Select-TF-ops delegate); **custom op**: any other custom operator.
- **MACs** (multiply-accumulates), from tensor shapes: CONV_2D `out * kh * kw * cin`,
  DEPTHWISE_CONV_2D `out * kh * kw`, TRANSPOSE_CONV `in * kh * kw * cout`,
  FULLY_CONNECTED `out * in_features`, BATCH_MATMUL `out * k`; MUL one per output element
  (an elementwise product whose accumulation a later SUM does); every other op 0.
"""

from __future__ import annotations

from math import prod

from export.tflite_reader import FLOAT_TYPES, ModelSummary, OperatorInfo


def float_compute_ops(summary: ModelSummary) -> list[OperatorInfo]:
    """Operators that compute in floating point (see the module docstring)."""
    graph_inputs, graph_outputs = set(summary.inputs), set(summary.outputs)
    found = []
    for op in summary.operators:
        if op.name == "QUANTIZE" and set(op.inputs) <= graph_inputs:
            continue
        if op.name == "DEQUANTIZE" and set(op.outputs) <= graph_outputs:
            continue
        tensors = [summary.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
        if any(t.dtype in FLOAT_TYPES for t in tensors):
            found.append(op)
    return found


def custom_ops(summary: ModelSummary) -> tuple[list[str], list[str]]:
    """Names of the `(Flex ops, other custom ops)` in the graph, in order of appearance."""
    flex, custom = [], []
    for op in summary.operators:
        if op.is_flex and op.name not in flex:
            flex.append(op.name)
        elif op.is_custom and not op.is_flex and op.name not in custom:
            custom.append(op.name)
    return flex, custom


def _shape(summary: ModelSummary, index: int) -> tuple[int, ...]:
    return summary.tensors[index].shape if index >= 0 else ()


def macs(summary: ModelSummary, op: OperatorInfo) -> int:
    """Multiply-accumulates of one operator (see the module docstring)."""
    name = op.name
    if not op.outputs:
        return 0
    out = _shape(summary, op.outputs[0])
    if name == "CONV_2D":
        _, kh, kw, cin = _shape(summary, op.inputs[1])
        return prod(out) * kh * kw * cin
    if name == "DEPTHWISE_CONV_2D":
        _, kh, kw, _ = _shape(summary, op.inputs[1])
        return prod(out) * kh * kw
    if name == "TRANSPOSE_CONV":
        cout, kh, kw, _ = _shape(summary, op.inputs[1])
        return prod(_shape(summary, op.inputs[2])) * kh * kw * cout
    if name == "FULLY_CONNECTED":
        return prod(out) * _shape(summary, op.inputs[1])[-1]
    if name == "BATCH_MATMUL":
        lhs, rhs = _shape(summary, op.inputs[0]), _shape(summary, op.inputs[1])
        k = lhs[-1] if lhs[-1] == rhs[-2] else lhs[-2]
        return prod(out) * k
    if name == "MUL":
        return prod(out)
    return 0


def summarize(summary: ModelSummary) -> dict:
    """The report's view of a graph: histogram, float compute ops, Flex / custom ops, MACs."""
    flex, custom = custom_ops(summary)
    floats = float_compute_ops(summary)
    return {
        "num_ops": len(summary.operators),
        "op_histogram": dict(sorted(summary.op_histogram().items())),
        "float_compute_ops": len(floats),
        "float_compute_op_names": sorted({op.name for op in floats}),
        "flex_ops": flex,
        "custom_ops": custom,
        "macs": sum(macs(summary, op) for op in summary.operators),
        "input": _io(summary, summary.inputs),
        "output": _io(summary, summary.outputs),
    }


def _io(summary: ModelSummary, indices) -> list[dict]:
    out = []
    for i in indices:
        t = summary.tensors[i]
        entry = {"dtype": t.dtype, "shape": list(t.shape)}
        if t.scale:
            entry["scale"] = t.scale[0]
            entry["zero_point"] = t.zero_point[0]
        out.append(entry)
    return out
