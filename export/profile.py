"""Per-operator latency of a `.tflite` model on the LiteRT interpreter, with and without XNNPACK.

    python -m export.profile model.tflite [--threads 1] [--runs 30] [--json out.json]

The Python interpreter has no op profiler, so this is the `benchmark_model
--enable_op_profiling` idea done from outside: every operator of the main subgraph is cut out
into a model of its own (its constant inputs kept, its other inputs made graph inputs and
filled with random values of their type) and timed twice, with the default op resolver
(LiteRT applies its XNNPACK delegate to any op it can take) and with
`BUILTIN_WITHOUT_DEFAULT_DELEGATES` (TFLite's own kernels). Whether XNNPACK took the op is
read from the interpreter: a delegated model has one more node (the delegate kernel).

In the whole model, every run of consecutive delegated ops is one XNNPACK partition, and an
op XNNPACK refuses runs on TFLite's kernels between two partitions, so "delegated" here
predicts the partitions of the full graph, and the per-op times say what each refused op
costs. Times are per `invoke()` and include the interpreter's small fixed overhead per call
(a few microseconds, measured as `overhead_ms` on a one-RESHAPE model), so for a model of many
tiny ops their sum exceeds the whole model's latency.

No TensorFlow: needs `ai-edge-litert` (its interpreter and flatbuffer tools) and NumPy.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class OpProfile:
    """One operator's standalone latency.

    Attributes:
        index: position in the main subgraph's execution order.
        name: builtin operator name (`FULLY_CONNECTED`, ...).
        dtype: type of its first output.
        output_shape: shape of its first output.
        delegated: XNNPACK took the op.
        ms: median milliseconds per invoke with the default resolver (XNNPACK if delegated).
        ms_builtin: the same with TFLite's built-in kernels only.
    """

    index: int
    name: str
    dtype: str
    output_shape: tuple[int, ...]
    delegated: bool
    ms: float
    ms_builtin: float


def _interpreter(content: bytes, num_threads: int, delegates: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (
        OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter = Interpreter(
        model_content=content, num_threads=num_threads, experimental_op_resolver_type=resolver
    )
    interpreter.allocate_tensors()
    return interpreter


def _fill_inputs(interpreter, rng: np.random.Generator) -> None:
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = detail["shape"]
        if dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            value = rng.integers(0, 2, shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            low, high = max(info.min, -128), min(info.max, 127)
            value = rng.integers(low, high + 1, shape).astype(dtype)
        interpreter.set_tensor(detail["index"], value)


def time_invoke(interpreter, runs: int, warmup: int) -> float:
    """Median milliseconds of `interpreter.invoke()` over `runs` calls after `warmup`."""
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def delegate_partitions(content: bytes, num_threads: int = 1) -> int:
    """How many XNNPACK partitions LiteRT makes of the whole model."""
    with_delegate = _interpreter(content, num_threads, delegates=True)
    plain = _interpreter(content, num_threads, delegates=False)
    return with_delegate._interpreter.NumNodes() - plain._interpreter.NumNodes()


def _take_tensor(model, tensors: list, buffers: list, remap: dict, tensor_index: int) -> int:
    """Copies tensor `tensor_index` (and its constant data) into a single-op model's lists."""
    if tensor_index < 0:
        return tensor_index
    if tensor_index not in remap:
        tensor = copy.copy(model.subgraphs[0].tensors[tensor_index])
        source = model.buffers[tensor.buffer] if tensor.buffer else None
        if source is not None and source.data is not None and len(source.data):
            buffers.append(source)
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
        remap[tensor_index] = len(tensors)
        tensors.append(tensor)
    return remap[tensor_index]


def single_op_models(content: bytes) -> list[tuple[int, str, str, tuple[int, ...], bytes]]:
    """Every operator of the main subgraph as a model of its own.

    Returns:
        `(index, op name, output dtype, output shape, model bytes)` per operator.
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    graph = model.subgraphs[0]
    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    out = []
    for index, op in enumerate(graph.operators):
        tensors, buffers, remap = [], [schema.BufferT()], {}
        add = functools.partial(_take_tensor, model, tensors, buffers, remap)
        single = copy.copy(op)
        single.inputs = [add(i) for i in op.inputs]
        single.outputs = [add(i) for i in op.outputs]
        single.intermediates = (
            [add(i) for i in op.intermediates] if op.intermediates is not None else None
        )
        single.opcodeIndex = 0
        sub = schema.SubGraphT()
        sub.tensors = tensors
        sub.operators = [single]
        sub.inputs = [remap[i] for i in op.inputs if i >= 0 and tensors[remap[i]].buffer == 0]
        sub.outputs = list(single.outputs)
        small = schema.ModelT()
        small.version = model.version
        small.description = "single op"
        small.operatorCodes = [model.operatorCodes[op.opcodeIndex]]
        small.subgraphs = [sub]
        small.buffers = buffers
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) or "?"
        first = graph.tensors[op.outputs[0]]
        shape = tuple(int(d) for d in first.shape) if first.shape is not None else ()
        content_op = bytes(flatbuffer_utils.convert_object_to_bytearray(small))
        out.append((index, name, type_names.get(first.type, "?"), shape, content_op))
    return out


def interpreter_overhead_ms(num_threads: int = 1, runs: int = 200) -> float:
    """Median milliseconds of one `invoke()` of a model whose only op is a tiny RESHAPE."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    def tensor(shape):
        t = schema.TensorT()
        t.shape, t.type, t.buffer, t.name = list(shape), schema.TensorType.FLOAT32, 0, "t"
        return t

    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.RESHAPE
    code.version = 1
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    options = schema.ReshapeOptionsT()
    options.newShape = [4]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.ReshapeOptions, options
    sub = schema.SubGraphT()
    sub.tensors, sub.operators = [tensor([2, 2]), tensor([4])], [op]
    sub.inputs, sub.outputs = [0], [1]
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs = 3, [code], [sub]
    model.buffers = [schema.BufferT()]
    content = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    interpreter = _interpreter(content, num_threads, delegates=False)
    return time_invoke(interpreter, runs, warmup=10)


def profile_ops(
    content: bytes, num_threads: int = 1, runs: int = 30, warmup: int = 3, seed: int = 0
) -> list[OpProfile]:
    """Standalone latency of every operator, with XNNPACK (where it takes it) and without.

    Args:
        content: the `.tflite` model bytes.
        num_threads: interpreter threads.
        runs / warmup: timed and untimed invokes per op and resolver.
        seed: seed of the random inputs.
    """
    rng = np.random.default_rng(seed)
    profiles = []
    for index, name, dtype, shape, single in single_op_models(content):
        delegated_interpreter = _interpreter(single, num_threads, delegates=True)
        delegated = delegated_interpreter._interpreter.NumNodes() > 1
        _fill_inputs(delegated_interpreter, rng)
        ms = time_invoke(delegated_interpreter, runs, warmup)
        builtin_interpreter = _interpreter(single, num_threads, delegates=False)
        _fill_inputs(builtin_interpreter, rng)
        ms_builtin = time_invoke(builtin_interpreter, runs, warmup)
        profiles.append(OpProfile(index, name, dtype, shape, delegated, ms, ms_builtin))
    return profiles


def summarize_by_op(profiles: Sequence[OpProfile]) -> list[dict]:
    """Per operator type: count, how many XNNPACK took, summed milliseconds; slowest first."""
    rows: dict[str, dict] = {}
    for p in profiles:
        key = f"{p.name} ({p.dtype})"
        row = rows.setdefault(
            key, {"op": key, "count": 0, "delegated": 0, "ms": 0.0, "ms_builtin": 0.0}
        )
        row["count"] += 1
        row["delegated"] += int(p.delegated)
        row["ms"] += p.ms
        row["ms_builtin"] += p.ms_builtin
    for row in rows.values():
        row["ms"] = round(row["ms"], 4)
        row["ms_builtin"] = round(row["ms_builtin"], 4)
    return sorted(rows.values(), key=lambda r: -r["ms"])


def profile_model(content: bytes, num_threads: int = 1, runs: int = 30, warmup: int = 3) -> dict:
    """Whole-model latency and partitions, and the per-op profile (see the module docstring)."""
    whole = _interpreter(content, num_threads, delegates=True)
    _fill_inputs(whole, np.random.default_rng(0))
    whole_ms = time_invoke(whole, runs, warmup)
    builtin = _interpreter(content, num_threads, delegates=False)
    _fill_inputs(builtin, np.random.default_rng(0))
    builtin_ms = time_invoke(builtin, runs, warmup)
    ops = profile_ops(content, num_threads, runs, warmup)
    return {
        "num_threads": num_threads,
        "num_ops": len(ops),
        "model_ms": round(whole_ms, 4),
        "model_ms_builtin": round(builtin_ms, 4),
        "delegate_partitions": whole._interpreter.NumNodes() - builtin._interpreter.NumNodes(),
        "ops_not_delegated": sum(not p.delegated for p in ops),
        "overhead_ms": round(interpreter_overhead_ms(num_threads), 5),
        "by_op": summarize_by_op(ops),
        "ops": [asdict(p) for p in ops],
    }


def format_by_op(report: dict) -> str:
    """The per-op-type summary of `profile_model` as a Markdown table."""
    lines = [
        "| op (output type) | count | XNNPACK | ms (default) | ms (TFLite kernels) |",
        "|---|---|---|---|---|",
    ]
    for row in report["by_op"]:
        lines.append(
            f"| {row['op']} | {row['count']} | {row['delegated']}/{row['count']} | "
            f"{row['ms']:.3f} | {row['ms_builtin']:.3f} |"
        )
    lines.append(
        f"\nwhole model: {report['model_ms']:.3f} ms with XNNPACK "
        f"({report['delegate_partitions']} partitions, {report['ops_not_delegated']} of "
        f"{report['num_ops']} ops outside), {report['model_ms_builtin']:.3f} ms without; "
        f"{report['num_threads']} thread(s); invoke overhead {report['overhead_ms']:.4f} ms/op"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.profile",
        description="Per-operator latency of a .tflite model with and without XNNPACK.",
    )
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads")
    parser.add_argument("--runs", type=int, default=30, help="timed invokes per op")
    parser.add_argument("--json", default=None, help="also write the full profile here")
    args = parser.parse_args(argv)
    path = Path(args.model)
    if not path.is_file():
        print(f"error: model file {path} does not exist", file=sys.stderr)
        return 1
    if args.threads < 1 or args.runs < 1:
        print("error: --threads and --runs must be at least 1", file=sys.stderr)
        return 1
    content = path.read_bytes()
    if content[4:8] != b"TFL3":
        print(f"error: {path} is not a TFLite model (no TFL3 identifier)", file=sys.stderr)
        return 1
    report = profile_model(content, args.threads, args.runs)
    print(format_by_op(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
