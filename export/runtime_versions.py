"""Which TFLite runtime an exported file needs, read from its operators' versions.

Standard library only, like `export.runtime`, which uses it to explain why an interpreter
cannot open a file.

`RUNTIME_VERSIONS` is data copied from TensorFlow Lite's table of the oldest runtime that
runs each operator version, `FindMinimumRuntimeVersionForOp` in
`tflite/tools/versioning/runtime_version.cc` (google-ai-edge/LiteRT; the same file is
`tensorflow/lite/tools/versioning/runtime_version.cc` in tensorflow/tensorflow), for the
operators this project's files contain and their neighbours. An operator or version
missing from it counts as needing no particular runtime, as in TensorFlow's own table.
"""

from __future__ import annotations

from dataclasses import dataclass

# {operator: {operator version: oldest TFLite runtime that runs it}}
RUNTIME_VERSIONS: dict[str, dict[int, str]] = {
    "ADD": {1: "1.5.0", 2: "1.14.0", 3: "2.4.0", 4: "2.6.0", 5: "2.13.0"},
    "AVERAGE_POOL_2D": {1: "1.5.0", 2: "1.14.0", 3: "2.3.0"},
    "BATCH_MATMUL": {1: "2.3.0", 2: "2.3.0", 3: "2.4.0", 4: "2.5.0"},
    "CAST": {1: "1.5.0", 2: "2.7.0", 3: "2.8.0", 4: "2.9.0", 5: "2.12.0", 6: "2.15.0", 7: "2.17.0"},
    "CONCATENATION": {1: "1.5.0", 2: "1.14.0", 3: "2.3.0", 4: "2.14.0"},
    "CONV_2D": {
        **{1: "1.5.0", 2: "1.14.0", 3: "1.14.0", 4: "2.3.0"},
        **{5: "2.4.0", 6: "2.9.0", 7: "2.11.0", 8: "2.15.0"},
    },
    "DEPTHWISE_CONV_2D": {
        **{1: "1.5.0", 2: "1.12.0", 3: "1.14.0", 4: "2.2.0"},
        **{5: "2.3.0", 6: "2.3.0", 7: "2.11.0"},
    },
    "DEQUANTIZE": {1: "1.13.1", 2: "1.14.0", 3: "1.15.0", 4: "2.2.0", 5: "2.7.0", 6: "2.18.0"},
    "DIV": {1: "1.6.0", 2: "2.3.0"},
    "EXP": {1: "1.7.0", 2: "2.12.0"},
    "EXPAND_DIMS": {1: "1.10.0"},
    "FULLY_CONNECTED": {
        **{1: "1.5.0", 2: "1.10.0", 3: "1.14.0", 4: "1.14.0", 5: "2.0.0", 6: "2.1.0"},
        **{7: "2.3.0", 8: "2.3.0", 9: "2.3.0", 10: "2.11.0", 11: "2.15.0"},
        **{12: "2.17.0", 13: "2.18.0"},
    },
    "GATHER": {
        **{1: "1.6.0", 2: "1.14.0", 3: "1.15.0", 4: "2.4.0"},
        **{5: "2.5.0", 6: "2.13.0", 7: "2.15.0"},
    },
    "GELU": {1: "2.9.0", 2: "2.9.0"},
    "LOGISTIC": {1: "1.14.0", 2: "1.14.0", 3: "2.3.0"},
    "MAXIMUM": {1: "1.14.0", 2: "1.14.0", 3: "2.3.0", 4: "2.3.0"},
    "MEAN": {1: "1.6.0", 2: "1.14.0", 3: "2.4.0"},
    "MINIMUM": {1: "1.14.0", 2: "1.14.0", 3: "2.3.0", 4: "2.3.0"},
    "MUL": {1: "1.5.0", 2: "1.14.0", 3: "1.15.0", 4: "2.3.0", 5: "2.6.0", 6: "2.11.0", 7: "2.13.0"},
    "PACK": {1: "1.11.0", 2: "1.14.0", 3: "2.3.0", 4: "2.13.0"},
    "PAD": {1: "1.5.0", 2: "1.14.0", 3: "2.4.0", 4: "2.6.0"},
    "POW": {1: "1.10.0"},
    "QUANTIZE": {1: "1.14.0", 2: "1.15.0", 3: "2.7.0"},
    "REDUCE_MAX": {1: "1.11.0", 2: "1.14.0", 3: "2.5.0"},
    "RESHAPE": {1: "1.5.0"},
    "RSQRT": {1: "1.10.0", 2: "2.5.0", 3: "2.15.0"},
    "SHAPE": {1: "1.10.0"},
    "SLICE": {1: "1.14.0", 2: "1.14.0", 3: "1.14.0", 4: "2.4.0", 5: "2.5.0", 6: "2.14.0"},
    "SOFTMAX": {1: "1.5.0", 2: "1.14.0", 3: "2.3.0"},
    "SPLIT": {1: "1.5.0", 2: "1.14.0", 3: "1.14.0", 4: "2.3.0"},
    "SQRT": {1: "1.10.0"},
    "SQUARED_DIFFERENCE": {1: "1.13.1", 2: "2.5.0"},
    "SQUEEZE": {1: "1.6.0", 2: "2.5.0"},
    "STRIDED_SLICE": {
        **{1: "1.6.0", 2: "1.14.0", 3: "2.1.0", 4: "2.2.0"},
        **{5: "2.5.0", 6: "2.6.0", 7: "2.14.0", 8: "2.14.0"},
    },
    "SUB": {1: "1.6.0", 2: "1.14.0", 3: "2.3.0", 4: "2.4.0", 5: "2.4.0"},
    "SUM": {1: "1.10.0", 2: "1.15.0"},
    "TANH": {1: "1.14.0", 2: "1.14.0", 3: "2.3.0"},
    "TRANSPOSE": {
        **{1: "1.6.0", 2: "1.14.0", 3: "1.15.0", 4: "2.3.0"},
        **{5: "2.4.0", 6: "2.12.0", 7: "2.14.4"},
    },
}

# TensorFlow Lite's `op_version.cc` gives these operators version 3 for an int16 input,
# the version whose kernel handles int16; the converter records a lower one in int16x8
# files, which an older runtime then opens and fails on ("INT16 unsupported").
INT16_VERSION = 3
INT16_VERSIONED_OPS = frozenset({"SOFTMAX", "MEAN", "RSQRT", "REDUCE_MAX", "RELU6"})


@dataclass(frozen=True)
class OpRequirement:
    """An operator version and the oldest TFLite runtime that runs it."""

    op: str
    version: int
    runtime: str

    def __str__(self) -> str:
        return f"{self.op} version {self.version} needs TFLite runtime >= {self.runtime}"


def parse_version(text: str) -> tuple[int, ...]:
    """`"2.14.0"` -> `(2, 14, 0)`; a suffix such as `rc1` or `.dev` ends the number."""
    parts = []
    for piece in text.split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):
            break
    return tuple(parts)


def _effective_version(summary, op) -> int:
    version = op.version
    if op.name in INT16_VERSIONED_OPS and op.inputs and op.inputs[0] >= 0:
        if summary.tensors[op.inputs[0]].dtype == "int16":
            version = max(version, INT16_VERSION)
    return version


def op_requirements(summary) -> list[OpRequirement]:
    """The distinct operator versions of a file with a known runtime, newest runtime first.

    Args:
        summary: `export.tflite_reader.ModelSummary` of the file.
    """
    found = set()
    for op in summary.operators:
        version = _effective_version(summary, op)
        runtime = RUNTIME_VERSIONS.get(op.name, {}).get(version)
        if runtime is not None:
            found.add(OpRequirement(op.name, version, runtime))
    return sorted(found, key=lambda r: (parse_version(r.runtime), r.op), reverse=True)


def minimum_runtime(summary) -> OpRequirement | None:
    """The requirement that sets the file's oldest usable runtime (None: no known op)."""
    requirements = op_requirements(summary)
    return requirements[0] if requirements else None


def unmet_requirements(summary, installed: str) -> list[OpRequirement]:
    """The operator versions a runtime of version `installed` is too old for."""
    have = parse_version(installed)
    return [r for r in op_requirements(summary) if parse_version(r.runtime) > have]
