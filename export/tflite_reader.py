"""Reads a `.tflite` file with the standard library only: graph summary, metadata, labels.

A `.tflite` file is a FlatBuffer (schema: `tensorflow/lite/schema/schema.fbs`) whose
`Model.metadata` may name a `TFLITE_METADATA` buffer holding a second FlatBuffer, the
TFLite model metadata (schema: `tensorflow_lite_support/metadata/metadata_schema.fbs`,
file identifier `M001`) that the TFLite Task Library and MediaPipe read; files the metadata
names (labels) are stored in a ZIP archive appended to the model. This module reads just
the parts export and the runtime need, with a small FlatBuffer table reader written from
the FlatBuffers binary format, so that it runs on a device with no TensorFlow, no
`flatbuffers` package and no NumPy.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass, field

from export.builtin_ops import BUILTIN_OPERATORS

TFLITE_IDENTIFIER = b"TFL3"
METADATA_IDENTIFIER = b"M001"
METADATA_NAME = "TFLITE_METADATA"

# TensorType enum of schema.fbs.
TENSOR_TYPES = {
    0: "float32",
    1: "float16",
    2: "int32",
    3: "uint8",
    4: "int64",
    5: "string",
    6: "bool",
    7: "int16",
    8: "complex64",
    9: "int8",
    10: "float64",
    11: "complex128",
    12: "uint64",
    13: "resource",
    14: "variant",
    15: "uint32",
    16: "uint16",
    17: "int4",
    18: "bfloat16",
}
FLOAT_TYPES = frozenset({"float32", "float16", "float64", "bfloat16"})
CUSTOM_BUILTIN_CODE = 32  # BuiltinOperator.CUSTOM
# Builtin codes of schema.fbs whose names the analysis relies on when no schema module is
# installed to name the rest.
# Integer constants up to this many values are kept (axes, paddings, strides, shapes).
_MAX_CONSTANT_VALUES = 64


class TFLiteFormatError(ValueError):
    """The bytes are not a readable `.tflite` FlatBuffer."""


class _Table:
    """A FlatBuffer table: reads fields by their index in the schema."""

    __slots__ = ("buf", "pos", "vtable", "vtable_size")

    def __init__(self, buf: bytes, pos: int):
        self.buf = buf
        self.pos = pos
        try:
            self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
            self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]
        except struct.error:
            raise TFLiteFormatError("truncated FlatBuffer table") from None
        if not 0 <= self.vtable < len(buf):
            raise TFLiteFormatError("FlatBuffer vtable out of range")

    def _offset(self, index: int) -> int:
        slot = 4 + 2 * index
        if slot >= self.vtable_size:
            return 0
        return struct.unpack_from("<H", self.buf, self.vtable + slot)[0]

    def scalar(self, index: int, fmt: str, default=0):
        off = self._offset(index)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + off)[0] if off else default

    def _indirect(self, index: int) -> int | None:
        off = self._offset(index)
        if not off:
            return None
        at = self.pos + off
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, index: int) -> _Table | None:
        at = self._indirect(index)
        return None if at is None else _Table(self.buf, at)

    def string(self, index: int) -> str | None:
        at = self._indirect(index)
        if at is None:
            return None
        length = struct.unpack_from("<I", self.buf, at)[0]
        return self.buf[at + 4 : at + 4 + length].decode("utf-8", errors="replace")

    def _vector(self, index: int) -> tuple[int, int]:
        at = self._indirect(index)
        if at is None:
            return 0, 0
        return at + 4, struct.unpack_from("<I", self.buf, at)[0]

    def scalars(self, index: int, fmt: str) -> list:
        start, length = self._vector(index)
        if not length:
            return []
        return list(struct.unpack_from(f"<{length}{fmt}", self.buf, start))

    def bytes(self, index: int) -> bytes:
        start, length = self._vector(index)
        return self.buf[start : start + length]

    def tables(self, index: int) -> list[_Table]:
        start, length = self._vector(index)
        out = []
        for i in range(length):
            at = start + 4 * i
            out.append(_Table(self.buf, at + struct.unpack_from("<I", self.buf, at)[0]))
        return out

    def strings(self, index: int) -> list[str]:
        start, length = self._vector(index)
        out = []
        for i in range(length):
            at = start + 4 * i
            at += struct.unpack_from("<I", self.buf, at)[0]
            size = struct.unpack_from("<I", self.buf, at)[0]
            out.append(self.buf[at + 4 : at + 4 + size].decode("utf-8", errors="replace"))
        return out


def _root(buf: bytes, identifier: bytes, what: str) -> _Table:
    if len(buf) < 8 or buf[4:8] != identifier:
        raise TFLiteFormatError(f"not a {what} (file identifier {identifier.decode()!r} missing)")
    return _Table(buf, struct.unpack_from("<I", buf, 0)[0])


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the main subgraph."""

    index: int
    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()
    is_constant: bool = False
    shape_signature: tuple[int, ...] = ()
    values: tuple[int, ...] | None = None  # small int32 / int64 constants (axes, paddings)

    @property
    def is_dynamic(self) -> bool:
        """Some dimension is only known at run time (-1 in the shape signature)."""
        return any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class OperatorInfo:
    """One operator of the main subgraph, in execution order."""

    index: int
    name: str
    builtin_code: int
    custom_code: str | None
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    version: int = 1

    @property
    def is_custom(self) -> bool:
        return self.builtin_code == CUSTOM_BUILTIN_CODE

    @property
    def is_flex(self) -> bool:
        return self.is_custom and (self.custom_code or "").startswith("Flex")


@dataclass(frozen=True)
class ModelSummary:
    """The main subgraph of a `.tflite` model.

    Attributes:
        tensors: every tensor, by index.
        operators: every operator, in execution order.
        inputs / outputs: tensor indices of the graph's inputs and outputs.
        num_subgraphs: subgraphs in the file (control flow adds some).
        metadata_names: names of the `Model.metadata` entries.
    """

    tensors: tuple[TensorInfo, ...]
    operators: tuple[OperatorInfo, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    num_subgraphs: int
    metadata_names: tuple[str, ...] = field(default=())

    def op_histogram(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for op in self.operators:
            counts[op.name] = counts.get(op.name, 0) + 1
        return counts


def _builtin_names() -> dict[int, str]:
    """Builtin operator names: `BUILTIN_OPERATORS`, and an installed schema module's."""
    names = dict(BUILTIN_OPERATORS)
    for module in ("ai_edge_litert.schema_py_generated", "tflite_runtime.schema_py_generated"):
        try:
            schema = __import__(module, fromlist=["BuiltinOperator"])
        except ImportError:
            continue
        enum = schema.BuiltinOperator
        names.update(
            (value, name)
            for name, value in vars(enum).items()
            if not name.startswith("_") and isinstance(value, int)
        )
        break
    return names


def read_summary(buf: bytes, op_names: dict[int, str] | None = None) -> ModelSummary:
    """Reads the main subgraph of a `.tflite` model.

    Args:
        buf: the file's bytes.
        op_names: builtin code -> operator name; by default `export.builtin_ops` updated
            from an installed TFLite schema module (`ai_edge_litert`), and `BUILTIN_<code>`
            for a code neither knows.

    Raises:
        TFLiteFormatError: `buf` is not a TFLite FlatBuffer.
    """
    model = _root(buf, TFLITE_IDENTIFIER, "TFLite model")
    names = op_names if op_names is not None else _builtin_names()
    try:
        codes = []
        for code in model.tables(1):
            builtin = max(code.scalar(0, "b"), code.scalar(3, "i"))
            codes.append((builtin, code.string(1), code.scalar(2, "i", 1)))
        buffers = model.tables(4)
        subgraphs = model.tables(2)
        if not subgraphs:
            raise TFLiteFormatError("the model has no subgraph")
        graph = subgraphs[0]
        tensors = []
        for i, tensor in enumerate(graph.tables(0)):
            quant = tensor.table(4)
            buffer_index = tensor.scalar(2, "I")
            constant = 0 < buffer_index < len(buffers) and (
                bool(buffers[buffer_index].bytes(0)) or buffers[buffer_index].scalar(1, "Q") > 0
            )
            dtype = TENSOR_TYPES.get(tensor.scalar(1, "b"), "unknown")
            values = None
            if constant and dtype in ("int32", "int64"):
                raw = buffers[buffer_index].bytes(0)
                fmt = "i" if dtype == "int32" else "q"
                count = len(raw) // struct.calcsize(fmt)
                if 0 < count <= _MAX_CONSTANT_VALUES:
                    values = struct.unpack_from(f"<{count}{fmt}", raw)
            tensors.append(
                TensorInfo(
                    index=i,
                    name=tensor.string(3) or "",
                    dtype=dtype,
                    shape=tuple(tensor.scalars(0, "i")),
                    scale=tuple(quant.scalars(2, "f")) if quant else (),
                    zero_point=tuple(quant.scalars(3, "q")) if quant else (),
                    is_constant=constant,
                    shape_signature=tuple(tensor.scalars(7, "i")),
                    values=values,
                )
            )
        operators = []
        for i, op in enumerate(graph.tables(3)):
            builtin, custom, version = codes[op.scalar(0, "I")]
            if builtin == CUSTOM_BUILTIN_CODE:
                name = custom or "CUSTOM"
            else:
                name = names.get(builtin, f"BUILTIN_{builtin}")
            operators.append(
                OperatorInfo(
                    index=i,
                    name=name,
                    builtin_code=builtin,
                    custom_code=custom,
                    inputs=tuple(op.scalars(1, "i")),
                    outputs=tuple(op.scalars(2, "i")),
                    version=version,
                )
            )
        metadata_names = tuple(entry.string(0) or "" for entry in model.tables(6))
        return ModelSummary(
            tensors=tuple(tensors),
            operators=tuple(operators),
            inputs=tuple(graph.scalars(1, "i")),
            outputs=tuple(graph.scalars(2, "i")),
            num_subgraphs=len(subgraphs),
            metadata_names=metadata_names,
        )
    except (struct.error, IndexError, UnicodeDecodeError) as error:
        raise TFLiteFormatError(f"corrupt TFLite FlatBuffer ({error})") from None


def metadata_buffer(buf: bytes) -> bytes | None:
    """The raw `TFLITE_METADATA` FlatBuffer of a model, or None if it has none."""
    model = _root(buf, TFLITE_IDENTIFIER, "TFLite model")
    try:
        buffers = model.tables(4)
        for entry in model.tables(6):
            if entry.string(0) == METADATA_NAME:
                data_buffer = buffers[entry.scalar(1, "I")]
                data = data_buffer.bytes(0)
                if not data and data_buffer.scalar(1, "Q"):
                    offset, size = data_buffer.scalar(1, "Q"), data_buffer.scalar(2, "Q")
                    data = buf[offset : offset + size]
                return bytes(data)
    except (struct.error, IndexError) as error:
        raise TFLiteFormatError(f"corrupt TFLite FlatBuffer ({error})") from None
    return None


def _process_units(units: list[_Table]) -> list[dict]:
    out = []
    for unit in units:
        kind = unit.scalar(0, "B")
        options = unit.table(1)
        if kind == 1 and options is not None:  # ProcessUnitOptions.NormalizationOptions
            out.append(
                {
                    "type": "normalization",
                    "mean": options.scalars(0, "f"),
                    "std": options.scalars(1, "f"),
                }
            )
        else:
            out.append({"type": f"process_unit_{kind}"})
    return out


_FILE_TYPES = {
    0: "UNKNOWN",
    1: "DESCRIPTIONS",
    2: "TENSOR_AXIS_LABELS",
    3: "TENSOR_VALUE_LABELS",
    4: "TENSOR_AXIS_SCORE_CALIBRATION",
    5: "VOCABULARY",
    6: "SCANN_INDEX_FILE",
}
_CONTENT_TYPES = {0: None, 1: "feature", 2: "image", 3: "bounding_box", 4: "audio"}
_COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}


def _files(tables: list[_Table]) -> list[dict]:
    return [
        {
            "name": t.string(0),
            "description": t.string(1),
            "type": _FILE_TYPES.get(t.scalar(2, "b"), "UNKNOWN"),
        }
        for t in tables
    ]


def _tensor_metadata(t: _Table) -> dict:
    content = t.table(3)
    content_type = None
    color_space = None
    if content is not None:
        content_type = _CONTENT_TYPES.get(content.scalar(0, "B"))
        props = content.table(1)
        if content_type == "image" and props is not None:
            color_space = _COLOR_SPACES.get(props.scalar(0, "b"), "UNKNOWN")
    stats = t.table(5)
    return {
        "name": t.string(0),
        "description": t.string(1),
        "content": content_type,
        "color_space": color_space,
        "process_units": _process_units(t.tables(4)),
        "stats": {"max": stats.scalars(0, "f"), "min": stats.scalars(1, "f")} if stats else None,
        "associated_files": _files(t.tables(6)),
    }


def read_metadata(buf: bytes) -> dict | None:
    """Parses the TFLite model metadata of a model (the fields this project writes).

    Returns:
        None if the model has no metadata, else a dict: `name`, `description`, `version`,
        `author`, `license`, `min_parser_version`, `associated_files`, and `inputs` /
        `outputs` (one dict per tensor: `name`, `content`, `color_space`,
        `process_units` (normalization `mean` / `std`), `stats`, `associated_files`).

    Raises:
        TFLiteFormatError: the file or its metadata is not a valid FlatBuffer.
    """
    raw = metadata_buffer(buf)
    if raw is None:
        return None
    meta = _root(raw, METADATA_IDENTIFIER, "TFLite metadata buffer")
    try:
        subgraphs = meta.tables(3)
        graph = subgraphs[0] if subgraphs else None
        return {
            "name": meta.string(0),
            "description": meta.string(1),
            "version": meta.string(2),
            "author": meta.string(4),
            "license": meta.string(5),
            "associated_files": _files(meta.tables(6)),
            "min_parser_version": meta.string(7),
            "inputs": [_tensor_metadata(t) for t in graph.tables(2)] if graph else [],
            "outputs": [_tensor_metadata(t) for t in graph.tables(3)] if graph else [],
        }
    except (struct.error, IndexError) as error:
        raise TFLiteFormatError(f"corrupt TFLite metadata ({error})") from None


def associated_files(buf: bytes) -> dict[str, bytes]:
    """The files packed into the ZIP archive appended to a model (empty if none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(buf)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


def labels_from_metadata(buf: bytes) -> list[str] | None:
    """Class names from the output tensor's `TENSOR_AXIS_LABELS` file, or None."""
    meta = read_metadata(buf)
    if not meta or not meta["outputs"]:
        return None
    for entry in meta["outputs"][0]["associated_files"]:
        if entry["type"] == "TENSOR_AXIS_LABELS" and entry["name"]:
            data = associated_files(buf).get(entry["name"])
            if data is not None:
                text = data.decode("utf-8")
                return [line.strip() for line in text.splitlines() if line.strip()]
    return None
