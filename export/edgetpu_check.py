"""Checks a `.tflite` file against the Coral Edge TPU's published operation table.

    python -m export.edgetpu_check model_edgetpu_int8.tflite [--json]

The Edge TPU compiler maps a graph's ops to the accelerator in execution order up to the
first op it cannot map; that op and everything after it run on the CPU. This checker lists
each op as supported or not, names the first unsupported one and gives the share of the
model's multiply-accumulates (MACs, `export.analysis.macs`) before it, which bounds what
the accelerator can run.

The rules are those of Coral's "TensorFlow models on the Edge TPU" page
(https://coral.ai/docs/edgetpu/models-intro/, sections "Model requirements" and
"Supported operations"): tensors quantized to 8 bits (int32 only for biases and shape /
axis operands), static shapes, activation tensors of rank above 3 with every dimension but
the three innermost equal to 1 (weights such as a CONV_2D filter are 4-D by definition),
and the ops of its table with their listed limitations. A rule that needs an op's options
this reader does not decode (fused activations of pooling / CONCATENATION, convolution
dilation, PACK's axis) is not checked; the compiler
(`edgetpu_compiler -s model.tflite`, Debian / Ubuntu x86-64 only, not installable here) has
the final word.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from export import analysis, tflite_reader
from export.tflite_reader import ModelSummary, OperatorInfo

EIGHT_BIT = frozenset({"int8", "uint8"})
# An op's constant operands that may be int32: biases, shapes, axes, paddings, slices.
INT32_OPERANDS = frozenset({"int32"})


def _non_one(shape) -> int:
    return sum(1 for d in shape if d != 1)


def _axes(summary: ModelSummary, op: OperatorInfo, position: int = 1) -> tuple[int, ...] | None:
    if len(op.inputs) <= position or op.inputs[position] < 0:
        return None
    tensor = summary.tensors[op.inputs[position]]
    if tensor.values is None:
        return None
    rank = len(summary.tensors[op.inputs[0]].shape)
    return tuple(a % rank if rank else a for a in tensor.values)


def _no_batch_axis(summary, op) -> str | None:
    axes = _axes(summary, op)
    rank = len(summary.tensors[op.inputs[0]].shape)
    if axes is None:
        return "reduction axes are not constant"
    if rank == 4 and 0 in axes:
        return "reduces the batch dimension"
    return None


def _mean(summary, op) -> str | None:
    axes = _axes(summary, op)
    rank = len(summary.tensors[op.inputs[0]].shape)
    if axes is None:
        return "reduction axes are not constant"
    if rank - 1 in axes or (rank == 4 and 0 in axes):
        return "reduces along the channel or batch dimension (x / y only)"
    return None


def _fully_connected(summary, op) -> str | None:
    out = summary.tensors[op.outputs[0]].shape
    if _non_one(out) > 1:
        return f"output {list(out)} is not one-dimensional"
    return None


def _softmax(summary, op) -> str | None:
    shape = summary.tensors[op.inputs[0]].shape
    size = 1
    for d in shape:
        size *= d
    if _non_one(shape) > 1:
        return f"input {list(shape)} is not one-dimensional"
    if size > 16_000:
        return f"input has {size} elements (at most 16,000)"
    return None


def _pad(summary, op) -> str | None:
    values = summary.tensors[op.inputs[1]].values if len(op.inputs) > 1 else None
    rank = len(summary.tensors[op.inputs[0]].shape)
    if values is None:
        return "paddings are not constant"
    pairs = [values[2 * i : 2 * i + 2] for i in range(rank)]
    if rank == 4 and (any(pairs[0]) or any(pairs[3])):
        return "pads the batch or channel dimension (x / y only)"
    if rank == 3 and any(pairs[2]):
        return "pads the channel dimension (x / y only)"
    return None


def _concatenation(summary, op) -> str | None:
    if any(summary.tensors[i].is_constant for i in op.inputs):
        return "a constant input (allowed only as an all-zero pad of 2 inputs; not checked)"
    return None


def _strided_slice(summary, op) -> str | None:
    strides = summary.tensors[op.inputs[3]].values if len(op.inputs) > 3 else None
    if strides is None or any(s != 1 for s in strides):
        return "strides other than 1"
    return None


def _split(summary, op) -> str | None:
    axes = _axes(summary, op, position=0)  # SPLIT's axis is its first input
    rank = len(summary.tensors[op.inputs[1]].shape)
    if axes is None:
        return "split axis is not constant"
    if rank == 4 and 0 in axes:
        return "splits the batch dimension"
    return None


Rule = Callable[[ModelSummary, OperatorInfo], "str | None"]

# Coral's table: TFLite builtin name -> the limitation this checker can verify, if any.
SUPPORTED_OPS: dict[str, Rule | None] = {
    "ADD": None,
    "AVERAGE_POOL_2D": None,
    "CONCATENATION": _concatenation,
    "CONV_2D": None,
    "DEPTHWISE_CONV_2D": None,
    "EXPAND_DIMS": None,
    "FULLY_CONNECTED": _fully_connected,
    "L2_NORMALIZATION": None,
    "LOGISTIC": None,
    "UNIDIRECTIONAL_SEQUENCE_LSTM": None,
    "MAXIMUM": None,
    "MAX_POOL_2D": None,
    "MEAN": _mean,
    "MINIMUM": None,
    "MUL": None,
    "PACK": None,
    "PAD": _pad,
    "PRELU": None,
    "QUANTIZE": None,
    "REDUCE_MAX": _no_batch_axis,
    "REDUCE_MIN": _no_batch_axis,
    "RELU": None,
    "RELU6": None,
    "RELU_N1_TO_1": None,
    "RESHAPE": None,
    "RESIZE_BILINEAR": None,
    "RESIZE_NEAREST_NEIGHBOR": None,
    "RSQRT": None,
    "SLICE": None,
    "SOFTMAX": _softmax,
    "SPACE_TO_DEPTH": None,
    "SPLIT": _split,
    "SQUARED_DIFFERENCE": None,
    "SQUEEZE": None,
    "STRIDED_SLICE": _strided_slice,
    "SUB": None,
    "SUM": _no_batch_axis,
    "TANH": None,
    "TRANSPOSE": None,
    "TRANSPOSE_CONV": None,
}


@dataclass(frozen=True)
class OpCheck:
    """The verdict on one operator."""

    index: int
    name: str
    supported: bool
    reason: str | None
    macs: int


@dataclass(frozen=True)
class EdgeTPUReport:
    """The checker's answer for a whole graph.

    Attributes:
        ops: one `OpCheck` per operator, in execution order.
        first_unsupported: index of the first unsupported op, or None if all are supported.
        mac_share_before_first_unsupported: MACs before that op / all MACs (1.0 if none).
    """

    ops: tuple[OpCheck, ...]
    first_unsupported: int | None
    mac_share_before_first_unsupported: float
    total_macs: int
    unsupported_names: tuple[str, ...] = field(default=())

    def as_dict(self, ops: bool = True) -> dict:
        out = {
            "first_unsupported": self.first_unsupported,
            "first_unsupported_op": (
                None
                if self.first_unsupported is None
                else {
                    "name": self.ops[self.first_unsupported].name,
                    "reason": self.ops[self.first_unsupported].reason,
                }
            ),
            "mac_share_before_first_unsupported": self.mac_share_before_first_unsupported,
            "total_macs": self.total_macs,
            "num_ops": len(self.ops),
            "num_unsupported": sum(not op.supported for op in self.ops),
            "unsupported_names": list(self.unsupported_names),
        }
        if ops:
            out["ops"] = [vars(op) for op in self.ops]
        return out


def _tensor_problem(summary: ModelSummary, op: OperatorInfo) -> str | None:
    for index in (*op.inputs, *op.outputs):
        if index < 0:
            continue
        tensor = summary.tensors[index]
        if tensor.dtype not in EIGHT_BIT and not (
            tensor.is_constant and tensor.dtype in INT32_OPERANDS
        ):
            return f"tensor '{tensor.name}' is {tensor.dtype}, not 8-bit"
        if tensor.is_dynamic:
            return f"tensor '{tensor.name}' has a dynamic shape {list(tensor.shape_signature)}"
        if not tensor.is_constant and len(tensor.shape) > 3 and _non_one(tensor.shape[:-3]):
            return (
                f"tensor '{tensor.name}' {list(tensor.shape)} has a dimension > 1 outside the "
                "3 innermost"
            )
    return None


def check_op(summary: ModelSummary, op: OperatorInfo) -> OpCheck:
    """Whether the Edge TPU table supports one operator (with its limitations)."""
    macs = analysis.macs(summary, op)
    if op.name not in SUPPORTED_OPS:
        return OpCheck(op.index, op.name, False, "not in the Edge TPU op table", macs)
    reason = _tensor_problem(summary, op)
    rule = SUPPORTED_OPS[op.name]
    if reason is None and rule is not None:
        reason = rule(summary, op)
    return OpCheck(op.index, op.name, reason is None, reason, macs)


def check(summary: ModelSummary) -> EdgeTPUReport:
    """Checks every operator of a graph; see the module docstring."""
    ops = tuple(check_op(summary, op) for op in summary.operators)
    first = next((op.index for op in ops if not op.supported), None)
    total = sum(op.macs for op in ops)
    before = sum(op.macs for op in ops[:first]) if first is not None else total
    return EdgeTPUReport(
        ops=ops,
        first_unsupported=first,
        mac_share_before_first_unsupported=(before / total) if total else 1.0,
        total_macs=total,
        unsupported_names=tuple(dict.fromkeys(op.name for op in ops if not op.supported)),
    )


def check_file(path: str | Path) -> EdgeTPUReport:
    """Reads and checks a `.tflite` file.

    Raises:
        FileNotFoundError / ValueError: the file is missing or not a TFLite model.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Model file {path} does not exist")
    try:
        summary = tflite_reader.read_summary(path.read_bytes())
    except tflite_reader.TFLiteFormatError as error:
        raise ValueError(f"{path} is not a TFLite model: {error}") from None
    return check(summary)


def format_report(report: EdgeTPUReport) -> str:
    lines = [f"{'#':>4s}  {'op':24s} {'Edge TPU':9s} {'MACs':>12s}  note"]
    for op in report.ops:
        verdict = "yes" if op.supported else "NO"
        lines.append(f"{op.index:4d}  {op.name:24s} {verdict:9s} {op.macs:12,d}  {op.reason or ''}")
    if report.first_unsupported is None:
        lines.append(f"All {len(report.ops)} ops are in the Edge TPU table.")
    else:
        op = report.ops[report.first_unsupported]
        lines.append(
            f"First unsupported op: #{op.index} {op.name} ({op.reason}); "
            f"{100 * report.mac_share_before_first_unsupported:.1f} % of "
            f"{report.total_macs:,d} MACs come before it."
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.edgetpu_check",
        description="Check a .tflite file against the Coral Edge TPU operation table.",
    )
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = check_file(args.model)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
