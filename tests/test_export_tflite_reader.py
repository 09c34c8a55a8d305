"""Reading .tflite files without TensorFlow: graph summary, MACs, metadata round trip."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from export import analysis, tflite_reader
from export.metadata import attach_metadata, build_classifier_metadata


def convert(model: keras.Model, shape, directory) -> bytes:
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", model.call, input_signature=[tf.TensorSpec(shape, tf.float32)])
    archive.write_out(str(directory), verbose=False)
    return tf.lite.TFLiteConverter.from_saved_model(str(directory)).convert()


def test_summary_and_macs_of_dense_and_conv(tmp_path):
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    summary = tflite_reader.read_summary(convert(dense, (1, 8), tmp_path / "d"))
    (op,) = summary.operators
    assert op.name == "FULLY_CONNECTED" and not op.is_custom
    assert analysis.macs(summary, op) == 8 * 4
    assert [summary.tensors[i].shape for i in summary.inputs] == [(1, 8)]

    conv = keras.Sequential([keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3, padding="same")])
    summary = tflite_reader.read_summary(convert(conv, (1, 8, 8, 2), tmp_path / "c"))
    (op,) = [op for op in summary.operators if op.name == "CONV_2D"]
    assert analysis.macs(summary, op) == 8 * 8 * 4 * 3 * 3 * 2
    info = analysis.summarize(summary)
    assert info["float_compute_ops"] == 1 and info["flex_ops"] == [] and info["macs"] > 0


def test_rejects_files_that_are_not_tflite(tmp_path):
    with pytest.raises(tflite_reader.TFLiteFormatError, match="not a TFLite model"):
        tflite_reader.read_summary(b"PK\x03\x04 a zip file, not a model")
    with pytest.raises(tflite_reader.TFLiteFormatError, match="not a TFLite model"):
        tflite_reader.read_summary(b"")
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    content = convert(dense, (1, 8), tmp_path / "d")
    with pytest.raises(tflite_reader.TFLiteFormatError):
        tflite_reader.read_summary(content[:64])


def test_metadata_round_trip(tmp_path):
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    content = convert(dense, (1, 8), tmp_path / "d")
    assert tflite_reader.read_metadata(content) is None
    assert tflite_reader.labels_from_metadata(content) is None
    meta = build_classifier_metadata(
        name="m",
        description="a model",
        version="0.1.0",
        image_size=(24, 32),
        mean=[127.5, 127.5, 127.5],
        std=[127.5, 127.5, 127.5],
        num_classes=3,
    )
    labelled = attach_metadata(content, meta, {"labels.txt": b"a\nb\nc\n"})
    read = tflite_reader.read_metadata(labelled)
    assert (read["name"], read["description"], read["version"]) == ("m", "a model", "0.1.0")
    (image,) = read["inputs"]
    assert image["process_units"][0]["mean"] == [127.5] * 3
    assert image["stats"] == {"max": [1.0] * 3, "min": [-1.0] * 3}
    assert tflite_reader.labels_from_metadata(labelled) == ["a", "b", "c"]
    # The graph is untouched and still runs.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=labelled)
    interpreter.allocate_tensors()
    x = np.ones((1, 8), np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    np.testing.assert_allclose(out, dense(x), atol=1e-5)


def test_old_module_names_still_work():
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("export.tflite_file")
        evaluate = importlib.import_module("export.evaluate")
    assert old is tflite_reader and old.read_summary is tflite_reader.read_summary
    from export import evaluate_tflite

    assert evaluate.main is evaluate_tflite.main


def test_runtime_requirements_from_operator_versions(tmp_path):
    from export import runtime_versions

    assert runtime_versions.parse_version("2.14.0") == (2, 14, 0)
    assert runtime_versions.parse_version("2.17.0rc1") == (2, 17, 0)
    dense = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    summary = tflite_reader.read_summary(convert(dense, (1, 8), tmp_path / "d"))
    (fc,) = [op for op in summary.operators if op.name == "FULLY_CONNECTED"]
    expected = runtime_versions.RUNTIME_VERSIONS["FULLY_CONNECTED"][fc.version]
    assert runtime_versions.OpRequirement("FULLY_CONNECTED", fc.version, expected) in (
        runtime_versions.op_requirements(summary)
    )
    newest = runtime_versions.minimum_runtime(summary)
    assert runtime_versions.unmet_requirements(summary, newest.runtime) == []
    older = ".".join(str(v) for v in (*runtime_versions.parse_version(newest.runtime)[:1], 0))
    assert newest in runtime_versions.unmet_requirements(summary, older)
