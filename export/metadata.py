"""Writes TFLite model metadata: labels and input normalisation for image classifiers.

The metadata is the FlatBuffer of the published TFLite metadata schema
(`tensorflow_lite_support/metadata/metadata_schema.fbs`, file identifier `M001`), which
the TFLite Task Library and MediaPipe's `ImageClassifier` read: an `ImageProperties` (RGB)
input with `NormalizationOptions` (mean / std per channel), a probability output with a
`TENSOR_AXIS_LABELS` file, `labels.txt`. It is built here with the `flatbuffers` package's
`Builder` from the schema's field order (no generated code), stored in the model as the
`TFLITE_METADATA` buffer, and the labels file is packed into a ZIP archive appended to the
model, as the schema's tooling does (uncompressed: the readers map files in place).
`export.tflite_reader` reads it back without any dependency.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

from export.tflite_reader import METADATA_IDENTIFIER, METADATA_NAME, TFLITE_IDENTIFIER

LABELS_FILE = "labels.txt"
# The date of every associated file in the appended ZIP archive: a fixed one (ZIP's
# earliest), so that one export's bytes do not depend on the time it ran.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
# The oldest metadata parser that understands every field written here (the schema's
# first release had them all).
MIN_PARSER_VERSION = "1.0.0"

_CONTENT_FEATURE = 1  # ContentProperties.FeatureProperties
_CONTENT_IMAGE = 2  # ContentProperties.ImageProperties
_COLOR_RGB = 1  # ColorSpaceType.RGB
_NORMALIZATION = 1  # ProcessUnitOptions.NormalizationOptions
_TENSOR_AXIS_LABELS = 2  # AssociatedFileType.TENSOR_AXIS_LABELS


def _floats(builder, values: Sequence[float]) -> int:
    builder.StartVector(4, len(values), 4)
    for value in reversed(values):
        builder.PrependFloat32(float(value))
    return builder.EndVector()


def _offsets(builder, offsets: Sequence[int]) -> int:
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def _table(builder, num_fields: int, fields: dict[int, tuple[str, object]]) -> int:
    """Writes a table; `fields` maps field index -> (kind, value), kinds offset/uint8/uint32."""
    builder.StartObject(num_fields)
    for index, (kind, value) in fields.items():
        if kind == "offset":
            builder.PrependUOffsetTRelativeSlot(index, value, 0)
        elif kind == "uint8":
            builder.PrependUint8Slot(index, value, 0)
        elif kind == "int8":
            builder.PrependInt8Slot(index, value, 0)
        elif kind == "uint32":
            builder.PrependUint32Slot(index, value, 0)
        else:  # pragma: no cover - programming error
            raise ValueError(f"unknown field kind {kind}")
    return builder.EndObject()


def build_classifier_metadata(
    *,
    name: str,
    description: str,
    version: str,
    image_size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
    num_classes: int,
    author: str = "keras-vit",
    license_text: str = "",
) -> bytes:
    """Builds the metadata FlatBuffer of an image classifier.

    Args:
        name / description / version / author / license_text: model information.
        image_size: `(height, width)` of the input.
        mean / std: per-channel normalisation, `(pixel - mean) / std` is what the float
            graph expects (ignored by readers for uint8 inputs).
        num_classes: number of scores in the output.

    Returns:
        The metadata bytes (file identifier `M001`).
    """
    import flatbuffers

    b = flatbuffers.Builder(1024)
    input_meta = _input_tensor_metadata(b, image_size, mean, std)
    output_meta = _output_tensor_metadata(b, num_classes)
    subgraph = _table(
        b,
        10,
        {2: ("offset", _offsets(b, [input_meta])), 3: ("offset", _offsets(b, [output_meta]))},
    )
    root = _model_metadata(
        b, _offsets(b, [subgraph]), name, description, version, author, license_text
    )
    b.Finish(root, file_identifier=METADATA_IDENTIFIER)
    return bytes(b.Output())


def _input_tensor_metadata(b, image_size, mean, std) -> int:
    """The input tensor's table: an RGB image with its normalisation and value range."""
    height, width = image_size
    low = [(0.0 - m) / s for m, s in zip(mean, std, strict=True)]
    high = [(255.0 - m) / s for m, s in zip(mean, std, strict=True)]
    input_name = b.CreateString("image")
    input_description = b.CreateString(
        f"RGB image, {height}x{width}, pixels 0..255 (uint8 inputs take them as they are)"
    )
    size = _table(b, 2, {0: ("uint32", width), 1: ("uint32", height)})
    image_props = _table(b, 2, {0: ("int8", _COLOR_RGB), 1: ("offset", size)})
    input_content = _table(b, 3, {0: ("uint8", _CONTENT_IMAGE), 1: ("offset", image_props)})
    mean_vec, std_vec = _floats(b, mean), _floats(b, std)
    norm = _table(b, 2, {0: ("offset", mean_vec), 1: ("offset", std_vec)})
    unit = _table(b, 2, {0: ("uint8", _NORMALIZATION), 1: ("offset", norm)})
    units = _offsets(b, [unit])
    in_max, in_min = _floats(b, high), _floats(b, low)
    in_stats = _table(b, 2, {0: ("offset", in_max), 1: ("offset", in_min)})
    return _table(
        b,
        7,
        {
            0: ("offset", input_name),
            1: ("offset", input_description),
            3: ("offset", input_content),
            4: ("offset", units),
            5: ("offset", in_stats),
        },
    )


def _output_tensor_metadata(b, num_classes: int) -> int:
    """The output tensor's table: class probabilities 0..1 with the labels file."""
    output_name = b.CreateString("probability")
    output_description = b.CreateString(f"Probabilities of the {num_classes} classes")
    feature = _table(b, 0, {})
    output_content = _table(b, 3, {0: ("uint8", _CONTENT_FEATURE), 1: ("offset", feature)})
    out_max, out_min = _floats(b, [1.0]), _floats(b, [0.0])
    out_stats = _table(b, 2, {0: ("offset", out_max), 1: ("offset", out_min)})
    labels_name = b.CreateString(LABELS_FILE)
    labels_description = b.CreateString("Class names, one a line, line i = class i")
    labels = _table(
        b,
        5,
        {
            0: ("offset", labels_name),
            1: ("offset", labels_description),
            2: ("int8", _TENSOR_AXIS_LABELS),
        },
    )
    output_files = _offsets(b, [labels])
    return _table(
        b,
        7,
        {
            0: ("offset", output_name),
            1: ("offset", output_description),
            3: ("offset", output_content),
            5: ("offset", out_stats),
            6: ("offset", output_files),
        },
    )


def _model_metadata(b, subgraphs, name, description, version, author, license_text) -> int:
    """The root `ModelMetadata` table."""
    fields = {
        0: ("offset", b.CreateString(name)),
        1: ("offset", b.CreateString(description)),
        2: ("offset", b.CreateString(version)),
        3: ("offset", subgraphs),
        4: ("offset", b.CreateString(author)),
    }
    if license_text:
        fields[5] = ("offset", b.CreateString(license_text))
    fields[7] = ("offset", b.CreateString(MIN_PARSER_VERSION))
    return _table(b, 8, fields)


def attach_metadata(model: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """Returns `model` with `metadata` as its `TFLITE_METADATA` buffer and `files` zipped on.

    Any metadata and appended archive the model had are replaced. The model is serialized
    anew, with identical quantization vectors written once (`_SharedQuantization`); the
    files are stored uncompressed with a fixed date (`ZIP_DATE_TIME`), so the same
    arguments give the same bytes.

    Args:
        model: a `.tflite` model.
        metadata: a metadata FlatBuffer (`build_classifier_metadata`).
        files: associated files, name -> contents (`labels.txt`).
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    if model[4:8] != TFLITE_IDENTIFIER:
        raise ValueError("attach_metadata expects a TFLite model")
    graph = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    graph.metadata = [m for m in (graph.metadata or []) if _name(m.name) != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = list(metadata)
    graph.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(graph.buffers) - 1
    graph.metadata.append(entry)
    data = _serialize(graph, schema)
    # The archive's offsets are absolute within the file, as zipfile writes them when it
    # appends to bytes that are not a ZIP archive.
    stream = io.BytesIO(data)
    stream.seek(0, io.SEEK_END)
    with zipfile.ZipFile(stream, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.external_attr = 0o644 << 16  # -rw-r--r-- when extracted
            archive.writestr(info, content)
    return stream.getvalue()


class _SharedQuantization:
    """Packs a tensor's quantization parameters, writing each distinct vector once.

    A per-channel quantized weight and its bias each store a zero-point vector (int64, all
    zeros) and a scale vector per output channel; FlatBuffers lets tables share a vector,
    so identical vectors (the zero points of every layer of one width) are written once.
    """

    def __init__(self, params, schema, cache: dict):
        self.params = params
        self.schema = schema
        self.cache = cache

    def _vector(self, builder, values, dtype: str) -> int:
        import numpy as np

        array = np.ascontiguousarray(np.asarray(values, dtype=dtype))
        key = (dtype, array.tobytes())
        if key not in self.cache:
            self.cache[key] = builder.CreateNumpyVector(array)
        return self.cache[key]

    def Pack(self, builder) -> int:  # the generated object API calls it so
        q, schema = self.params, self.schema
        if q.details is not None:  # custom quantization: nothing to share
            return q.Pack(builder)
        offsets = {}
        for name, dtype in (("min", "<f4"), ("max", "<f4"), ("scale", "<f4"), ("zeroPoint", "<i8")):
            values = getattr(q, name)
            if values is not None:
                offsets[name] = self._vector(builder, values, dtype)
        schema.QuantizationParametersStart(builder)
        if "min" in offsets:
            schema.QuantizationParametersAddMin(builder, offsets["min"])
        if "max" in offsets:
            schema.QuantizationParametersAddMax(builder, offsets["max"])
        if "scale" in offsets:
            schema.QuantizationParametersAddScale(builder, offsets["scale"])
        if "zeroPoint" in offsets:
            schema.QuantizationParametersAddZeroPoint(builder, offsets["zeroPoint"])
        schema.QuantizationParametersAddDetailsType(builder, q.detailsType)
        schema.QuantizationParametersAddQuantizedDimension(builder, q.quantizedDimension)
        return schema.QuantizationParametersEnd(builder)


def _serialize(graph, schema) -> bytes:
    """Serializes a model object, sharing identical quantization vectors."""
    import flatbuffers

    cache: dict = {}
    for subgraph in graph.subgraphs or []:
        for tensor in subgraph.tensors or []:
            if tensor.quantization is not None:
                tensor.quantization = _SharedQuantization(tensor.quantization, schema, cache)
    builder = flatbuffers.Builder(1024)
    builder.Finish(graph.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
    return bytes(builder.Output())


def _name(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
