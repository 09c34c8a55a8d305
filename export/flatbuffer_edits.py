"""Edits of converted `.tflite` FlatBuffers that the converter has no option for.

Both serve LiteRT's CPU delegate (XNNPACK) and keep the integer results exact:
`adjust_calibrated_ranges` pins calibrated ranges between calibration and quantization
(the pixel input's, and the right operands of BATCH_MATMUL), and `drop_noop_adds` removes
the int8 ADDs that provably return their input unchanged.
"""

from __future__ import annotations

import numpy as np

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


def adjust_calibrated_ranges(
    calibrated: bytes, low: float, high: float, symmetric_matmul: bool = True
) -> bytes:
    """Sets calibrated ranges before quantization: the pixel input's, and the matmul operands'.

    Input: the quantizer derives the uint8 input's scale and zero point from its range;
    pinning it (and the reshapes that only move it) to the pixel range 0..255 gives scale 1
    and zero point 0 whatever pixel values the calibration images happened to contain, so
    image bytes go in unchanged.

    Matmul operands (`symmetric_matmul`): LiteRT's XNNPACK delegate runs an int8
    BATCH_MATMUL only if its right operand has zero point 0; otherwise the op falls back to
    TFLite's int8 kernel, much slower than XNNPACK's.
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


def maps_to_itself(var: tuple, out: tuple, constants: np.ndarray, margin: float = 0.25) -> bool:
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
    between two delegate partitions, once per LayerNorm. An ADD is removed only when it
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
                    and maps_to_itself(var, out, (value.astype(np.int64) - const[1]) * const[0])
                ):
                    replaced[op.outputs[0]] = variable
                    continue
        kept.append(op)
    if not replaced:
        return quantized
    graph.operators = kept
    return _serialized(model)


def with_outputs(content: bytes, tensors) -> bytes:
    """The model with the given tensor indices appended to its main graph's outputs.

    The ops and their results are unchanged; an interpreter then returns these tensors too,
    for measurement (`export.tflite_fidelity`). Indices already outputs are not repeated.
    """
    model, graph, _ = _editable(content)
    outputs = [int(i) for i in graph.outputs]
    for index in tensors:
        if not 0 <= int(index) < len(graph.tensors):
            raise ValueError(f"No tensor {index} in the model ({len(graph.tensors)} tensors)")
        if int(index) not in outputs:
            outputs.append(int(index))
    graph.outputs = np.array(outputs, dtype=np.int32)
    return _serialized(model)


def calibrated_ranges(calibrated: bytes) -> dict[int, tuple[float, float]]:
    """`{tensor index: (min, max)}` of the main graph's tensors that carry a calibrated range."""
    _, graph, _ = _editable(calibrated)
    ranges = {}
    for index, tensor in enumerate(graph.tensors):
        q = tensor.quantization
        if q is not None and q.min is not None and len(q.min) == 1 and q.max is not None:
            ranges[index] = (float(q.min[0]), float(q.max[0]))
    return ranges


def set_calibrated_ranges(calibrated: bytes, ranges: dict[int, tuple[float, float]]) -> bytes:
    """The calibrated model with the given tensors' ranges replaced (before quantization)."""
    model, graph, _ = _editable(calibrated)
    for index, (low, high) in ranges.items():
        q = graph.tensors[index].quantization
        if q is None or q.min is None:
            raise ValueError(f"Tensor {index} of the calibrated model has no range to set")
        q.min, q.max = [float(low)], [float(high)]
    return _serialized(model)
