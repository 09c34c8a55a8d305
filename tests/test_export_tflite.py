"""TFLite export of a small trained checkpoint: files, report, metadata, runtime, bad input.

A tiny ViT fit for a few epochs on digits is exported once per module: float32, int8 and
the Edge TPU file (`exported`, one conversion per concept) serve the unit tier; the
every-quantization export (`exported_every_mode`) and the hybrid's serve the tests of the
other quantizations, which conftest.INTEGRATION puts in the integration tier.
"""

import io
import json
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import TINY
from fixtures import make_trained as trained
from helpers import parse_predictions, write_checkpoint

import keras_vit
from export import analysis, edgetpu_check, output_folder, tflite, tflite_reader
from export import convert as conversion
from export.classifier import PixelClassifier
from export.metadata import attach_metadata, build_classifier_metadata
from export.runtime import Classifier, ModelFileError, open_interpreter
from keras_vit import data
from keras_vit.atomic import atomic_write_json
from keras_vit.run_dir import read_run_dir

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
QUANTIZATIONS = ["float32", "float16", "dynamic", "int8", "int8_cpu", "int16x8"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A TINY ViT trained 12 epochs on digits (about 84 % test top-1), as a checkpoint folder.

    Its weights are a committed fixture (`tests/fixtures/make_trained.py`): at 6 epochs (about
    75 %) so many test images sat near a tie that a float reordering in training moved the
    int8 agreement by half a point across the thresholds below, and trained in the session the
    weights would follow the test machine's CPU and thread count.
    """
    path = tmp_path_factory.mktemp("export") / "ckpt"
    write_checkpoint(path, trained.load("vit"), LABELS, dataset={"source": "digits"})
    return path


@pytest.fixture(scope="module")
def exported_every_mode(checkpoint):
    report = tflite.export_tflite(
        checkpoint,
        checkpoint.parent / "tflite",
        quantize=QUANTIZATIONS,
        calibration_samples=64,
        edgetpu=True,
        latency_runs=3,
    )
    return Path(report["output_dir"]), report


@pytest.fixture(scope="module")
def exported(request, checkpoint):
    """The float32, int8 and Edge TPU files with their report.

    Each file is what `exported_every_mode` writes for it (the same checkpoint, calibration
    sample and seed), so a session that runs the every-mode tests too reuses that export.
    """
    if any("exported_every_mode" in item.fixturenames for item in request.session.items):
        return request.getfixturevalue("exported_every_mode")
    report = tflite.export_tflite(
        checkpoint,
        checkpoint.parent / "tflite_float32_int8",
        quantize=["float32", "int8"],
        calibration_samples=64,
        edgetpu=True,
        latency_runs=1,
    )
    return Path(report["output_dir"]), report


@pytest.fixture(scope="module")
def test_split():
    return data.digits_arrays("test", 32)


def entry(report, name):
    (found,) = [e for e in report["files"] if e["file"] == name]
    return found


def test_export_writes_every_file_and_the_report(exported_every_mode):
    out, report = exported_every_mode
    names = sorted(p.name for p in out.iterdir())
    expected = [tflite.file_name(q) for q in QUANTIZATIONS] + [
        output_folder.MARKER_FILE,
        "labels.txt",
        "model_edgetpu_int8.tflite",
        "report.json",
    ]
    assert names == sorted(expected)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["files"] == json.loads(json.dumps(report["files"]))
    assert (out / "labels.txt").read_text().split() == LABELS
    for e in report["files"]:
        assert e["size_bytes"] == (out / e["file"]).stat().st_size
        assert e["flex_ops"] == [] and e["custom_ops"] == []
        assert e["input"][0]["shape"] == [1, 32, 32, 3]  # static batch 1
        assert set(e["latency_ms"]) == {"1", "2"} and all(v > 0 for v in e["latency_ms"].values())
        assert 0.0 <= e["max_abs_prob_diff"] <= 1.0
    assert report["test_split"]["num_examples"] == 359
    assert "Keras model:" in tflite.format_table(report)


def test_float32_file_matches_keras(exported):
    _, report = exported
    e = entry(report, "model_float32.tflite")
    assert e["top1_agreement"] == 1.0 and e["max_abs_prob_diff"] < 1e-4
    assert e["input"][0]["dtype"] == "float32" and e["output"][0]["dtype"] == "float32"


def test_int8_file_is_fully_integer_with_pixel_input(exported):
    _, report = exported
    e = entry(report, "model_int8.tflite")
    assert e["float_compute_ops"] == 0
    assert e["input"] == [
        {"dtype": "uint8", "shape": [1, 32, 32, 3], "scale": 1.0, "zero_point": 0}
    ]
    assert e["output"] == [{"dtype": "uint8", "shape": [1, 10], "scale": 1 / 256, "zero_point": 0}]
    assert e["op_histogram"]["SOFTMAX"] >= 1 and "DEQUANTIZE" not in e["op_histogram"]
    assert e["top1_agreement"] >= 0.97
    assert e["accuracy"] >= report["test_split"]["keras_accuracy"] - 0.02
    assert e["size_vs_float32"] < 0.6


def test_int8_cpu_file_agrees_like_int8_with_float_islands(exported_every_mode):
    _, report = exported_every_mode
    e, full = entry(report, "model_int8_cpu.tflite"), entry(report, "model_int8.tflite")
    assert e["input"] == full["input"] and e["output"] == full["output"]  # uint8 in and out
    assert set(e["float_compute_op_names"]) == {*tflite.FLOAT_ISLAND_OPS, "DEQUANTIZE", "QUANTIZE"}
    # Float softmax / rsqrt / GELU can only bring it closer to the float model.
    assert e["top1_agreement"] >= full["top1_agreement"] - 0.01
    assert e["accuracy"] >= report["test_split"]["keras_accuracy"] - 0.02
    assert e["size_vs_float32"] < 0.6


def test_other_quantizations(exported_every_mode):
    _, report = exported_every_mode
    assert entry(report, "model_int16x8.tflite")["float_compute_ops"] == 0
    assert entry(report, "model_int16x8.tflite")["top1_agreement"] >= 0.99
    assert "DEQUANTIZE" in entry(report, "model_float16.tflite")["op_histogram"]
    for name in ("model_float16.tflite", "model_dynamic.tflite"):
        assert entry(report, name)["top1_agreement"] >= 0.98


def test_edgetpu_file_maps_every_op(exported):
    out, report = exported
    e = entry(report, "model_edgetpu_int8.tflite")
    assert e["float_compute_ops"] == 0
    assert e["edgetpu"]["first_unsupported"] is None
    assert e["edgetpu"]["mac_share_before_first_unsupported"] == 1.0
    histogram = e["op_histogram"]
    assert "BATCH_MATMUL" not in histogram and "GELU" not in histogram
    assert histogram["SOFTMAX"] == 1  # only the classifier's, one-dimensional
    assert e["top1_agreement"] >= 0.95
    # The default int8 graph stops the compiler at once (6-D patch reshape).
    default = edgetpu_check.check_file(out / "model_int8.tflite")
    assert default.first_unsupported == 1 and default.mac_share_before_first_unsupported == 0.0
    assert "BATCH_MATMUL" in default.unsupported_names


def test_metadata_reads_back(exported):
    out, _ = exported
    content = (out / "model_int8.tflite").read_bytes()
    meta = tflite_reader.read_metadata(content)
    (image,) = meta["inputs"]
    assert image["content"] == "image" and image["color_space"] == "RGB"
    assert image["process_units"] == [
        {"type": "normalization", "mean": [0.0] * 3, "std": [1.0] * 3}
    ]
    (probability,) = meta["outputs"]
    assert probability["associated_files"][0]["type"] == "TENSOR_AXIS_LABELS"
    assert tflite_reader.labels_from_metadata(content) == LABELS
    assert meta["min_parser_version"] == "1.0.0"


@pytest.mark.parametrize("name", ["model_float32.tflite", "model_int8.tflite"])
def test_mediapipe_image_classifier_reads_the_metadata(exported, test_split, name):
    """MediaPipe (an independent reader) finds the labels and the normalisation."""
    mp = pytest.importorskip("mediapipe")
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core import base_options

    out, _ = exported
    options = vision.ImageClassifierOptions(
        base_options=base_options.BaseOptions(model_asset_path=str(out / name)), max_results=10
    )
    images, _ = test_split
    ours = Classifier(out / name)
    expected = ours.predict(images[:8])
    with vision.ImageClassifier.create_from_options(options) as classifier:
        for image, scores in zip(images[:8], expected, strict=True):
            result = classifier.classify(
                mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
            )
            categories = result.classifications[0].categories
            assert {c.category_name for c in categories} == set(LABELS)
            for c in categories:
                assert c.category_name == LABELS[c.index]
                assert abs(c.score - scores[c.index]) < 1e-3


def test_runtime_matches_the_report(exported, test_split, checkpoint):
    out, report = exported
    images, labels = test_split
    classifier = Classifier(out / "model_int8.tflite", num_threads=1)
    assert classifier.labels == LABELS and classifier.image_size == (32, 32)
    probabilities = classifier.predict(images)
    accuracy = float((probabilities.argmax(1) == labels).mean())
    assert accuracy == pytest.approx(entry(report, "model_int8.tflite")["accuracy"])
    (top,) = classifier.top_k(probabilities[:1], k=3)
    assert [p.score for p in top] == sorted((p.score for p in top), reverse=True)
    with pytest.raises(ValueError, match=r"Expected images of shape \(N, 32, 32, 3\)"):
        classifier.predict(np.zeros((2, 16, 16, 3), np.uint8))


def test_runtime_quantizes_int8_inputs_and_outputs(checkpoint, exported, test_split, tmp_path):
    """A file with int8 I/O (not what export writes, but what others do) runs correctly."""
    import tensorflow as tf

    ckpt = read_run_dir(checkpoint)
    graph = tflite.build_classifier(ckpt.load_model(), ckpt.config["preprocessing"])
    calibration = tflite.calibration_images(ckpt, 32)
    conversion.write_saved_model(graph, tmp_path / "sm")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.representative_dataset = conversion.representative_dataset(calibration, "int8")
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    (tmp_path / "int8io.tflite").write_bytes(converter.convert())
    int8io = Classifier(tmp_path / "int8io.tflite")
    assert int8io.input["dtype"] == np.int8 and int8io.output["dtype"] == np.int8
    out, _ = exported
    ours = Classifier(out / "model_int8.tflite")
    images, _ = test_split
    a, b = int8io.predict(images[:100]), ours.predict(images[:100])
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.95
    np.testing.assert_allclose(a.sum(1), 1.0, atol=0.05)


def test_runtime_labels_fall_back_to_labels_txt(exported, tmp_path):
    out, _ = exported
    bare = tflite_reader.read_summary  # the file without metadata keeps its graph
    content = (out / "model_float32.tflite").read_bytes()
    stripped = _strip_metadata(content)
    assert tflite_reader.read_metadata(stripped) is None and bare(stripped).operators
    (tmp_path / "model.tflite").write_bytes(stripped)
    assert Classifier(tmp_path / "model.tflite").labels == [str(i) for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(LABELS) + "\n")
    assert Classifier(tmp_path / "model.tflite").labels == LABELS


def _strip_metadata(content: bytes) -> bytes:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    model.metadata = [m for m in model.metadata if m.name != b"TFLITE_METADATA"]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def test_metadata_attach_replaces_previous_metadata(exported, monkeypatch):
    out, _ = exported
    content = (out / "model_float32.tflite").read_bytes()
    meta = build_classifier_metadata(
        name="again",
        description="d",
        version="1",
        image_size=(32, 32),
        mean=[127.5] * 3,
        std=[127.5] * 3,
        num_classes=10,
    )
    again = attach_metadata(content, meta, {"labels.txt": b"a\nb\n"})
    assert tflite_reader.read_summary(again).metadata_names.count("TFLITE_METADATA") == 1
    assert tflite_reader.read_metadata(again)["name"] == "again"
    assert tflite_reader.labels_from_metadata(again) == ["a", "b"]
    # The same bytes at another time of day (the archive's dates are fixed).
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)
    assert attach_metadata(content, meta, {"labels.txt": b"a\nb\n"}) == again
    with zipfile.ZipFile(io.BytesIO(again)) as archive:
        assert archive.getinfo("labels.txt").date_time == (1980, 1, 1, 0, 0, 0)


def test_serialization_writes_shared_quantization_vectors_once(exported, test_split):
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    out, _ = exported
    content = (out / "model_int8.tflite").read_bytes()
    plain = bytes(
        flatbuffer_utils.convert_object_to_bytearray(
            flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
        )
    )
    shared = attach_metadata(content, tflite_reader.metadata_buffer(content), {})
    assert len(shared) < 0.95 * len(plain)
    images, _ = test_split
    outputs = []
    for model in (plain, shared):
        interpreter = Interpreter(model_content=model)
        interpreter.allocate_tensors()
        (inp,), (outp,) = interpreter.get_input_details(), interpreter.get_output_details()
        for image in images[:5]:
            interpreter.set_tensor(inp["index"], image[None])
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(outp["index"]).copy())
    np.testing.assert_array_equal(np.stack(outputs[:5]), np.stack(outputs[5:]))


def test_predict_runs_without_tensorflow(exported, tmp_path, test_split):
    """`python -m export.predict` in a process where importing TensorFlow or Keras fails."""
    from PIL import Image

    out, _ = exported
    images, _ = test_split
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
    code = (
        "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
        "from export.predict import main; code = main(sys.argv[1:]); "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras') "
        "and sys.modules[m] is not None]; raise SystemExit(code)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(out / "model_int8.tflite"),
            *map(str, paths),
            "--top-k",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    classifier = Classifier(out / "model_int8.tflite")
    expected = classifier.top_k(classifier.predict(images[:3]), 2)
    printed = parse_predictions(result.stdout)
    assert list(printed) == [str(p) for p in paths]
    for path, top in zip(paths, expected, strict=True):
        assert printed[str(path)] == [(p.label, round(p.score, 4)) for p in top]


def test_interpreter_fallback_skips_a_backend_that_cannot_open_the_model(exported, monkeypatch):
    out, _ = exported

    class Broken:
        def __init__(self, **kwargs):
            raise RuntimeError("numpy.core.multiarray failed to import")

    import types

    module = types.ModuleType("broken_tflite_runtime")
    module.Interpreter = Broken
    monkeypatch.setitem(sys.modules, "broken_tflite_runtime", module)
    backends = (
        ("not_installed_litert", "Interpreter"),
        ("broken_tflite_runtime", "Interpreter"),
        ("ai_edge_litert.interpreter", "Interpreter"),
    )
    content = (out / "model_int8.tflite").read_bytes()
    _, name = open_interpreter(content, 1, backends)
    assert name == "ai_edge_litert.interpreter"
    with pytest.raises(RuntimeError, match="No TFLite interpreter could run the model"):
        open_interpreter(content, 1, backends[:2])


# === Bad input ===


def run_cli(main, argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_cli_prints_the_table(checkpoint, tmp_path, capsys):
    code, out, err = run_cli(
        tflite.main,
        [checkpoint, "--output", tmp_path / "out", "--quantize", "float32", "--no-eval"],
        capsys,
    )
    assert code == 0, err
    assert "model_float32.tflite" in out and "report.json" in out
    code, _, err = run_cli(
        tflite.main, [checkpoint, "--output", tmp_path / "out", "--quantize", "float32"], capsys
    )
    assert code == 1 and err.count("\n") == 0
    assert err == f"error: Output {tmp_path / 'out'} already exists; pass --force to overwrite it"


def test_force_never_replaces_the_run_dir_or_a_foreign_folder(checkpoint, tmp_path, capsys):
    before = {p.name: p.read_bytes() for p in checkpoint.iterdir() if p.is_file()}
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.txt").write_text("three years of work")
    for output, expected in [
        (checkpoint, "is the run directory being exported or a folder containing it"),
        (checkpoint.parent, "is the run directory being exported or a folder containing it"),
        (foreign, "--force replaces only a folder written by a keras-vit export"),
    ]:
        code, _, err = run_cli(
            tflite.main,
            [checkpoint, "--output", output, "--force", "--quantize", "float32", "--no-eval"],
            capsys,
        )
        assert code == 1 and expected in err and "\n" not in err, err
    assert {p.name: p.read_bytes() for p in checkpoint.iterdir() if p.is_file()} == before
    assert (foreign / "thesis.txt").read_text() == "three years of work"
    # An export folder an older version wrote (a report, no marker) is recognised.
    older = tmp_path / "older"
    older.mkdir()
    (older / "report.json").write_text(json.dumps({"checkpoint": str(checkpoint), "files": []}))
    code, _, err = run_cli(
        tflite.main,
        [checkpoint, "--output", older, "--force", "--quantize", "float32", "--no-eval"],
        capsys,
    )
    assert code == 0, err
    assert (older / "model_float32.tflite").is_file() and output_folder.is_export_folder(older)


def test_cli_bad_checkpoints(tmp_path, capsys, checkpoint):
    code, _, err = run_cli(tflite.main, [tmp_path / "missing"], capsys)
    assert code == 1 and err == f"error: Run directory {tmp_path / 'missing'} does not exist"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.keras").write_text("x")
    code, _, err = run_cli(tflite.main, [foreign], capsys)
    assert code == 1 and "is not a keras-vit run directory: missing config.json" in err
    for name in ("config.json", "labels.txt"):
        (foreign / name).write_text((checkpoint / name).read_text())
    (foreign / "config.json").write_text(json.dumps({"format": "something-else"}))
    code, _, err = run_cli(tflite.main, [foreign], capsys)
    assert code == 1 and "is not a keras-vit run directory config" in err and "\n" not in err


def _copy_checkpoint(checkpoint, path, dataset):
    path.mkdir()
    for name in ("model.keras", "labels.txt"):
        (path / name).write_bytes((checkpoint / name).read_bytes())
    config = json.loads((checkpoint / "config.json").read_text())
    if dataset is None:
        config.pop("dataset")
    else:
        config["dataset"] = dataset
    atomic_write_json(path / "config.json", config)
    return path


def test_no_calibration_data_fails_cleanly(checkpoint, tmp_path, capsys):
    nodata = _copy_checkpoint(checkpoint, tmp_path / "nodata", None)
    code, _, err = run_cli(tflite.main, [nodata, "--output", tmp_path / "o1"], capsys)
    assert code == 1 and "names no dataset source, so there is no train data" in err
    assert not (tmp_path / "o1").exists()  # no partial output
    unknown = _copy_checkpoint(checkpoint, tmp_path / "unknown", {"source": "no-such-data"})
    code, _, err = run_cli(tflite.main, [unknown, "--output", tmp_path / "o2"], capsys)
    assert code == 1 and "Cannot load the train split of dataset 'no-such-data'" in err
    assert not (tmp_path / "o2").exists()
    code, _, err = run_cli(
        tflite.main, [checkpoint, "--output", tmp_path / "o3", "--calibration-samples", "0"], capsys
    )
    assert code == 1 and err == "error: --calibration-samples must be at least 1, got 0"
    # A float-only export needs no data (and evaluates nothing without a test split).
    code, _, err = run_cli(
        tflite.main, [nodata, "--output", tmp_path / "o4", "--quantize", "float32"], capsys
    )
    assert code == 0, err


@keras.saving.register_keras_serializable(package="keras_vit_tests")
class Erfinv(keras.layers.Layer):
    def call(self, x):
        return keras.ops.erfinv(keras.ops.tanh(x))


class NeedsFlex(keras.Model):
    """A pixel classifier whose graph has an op with no TFLite builtin."""

    image_size = (8, 8)
    num_channels = 3

    def __init__(self):
        super().__init__()
        self.odd = Erfinv()
        self.dense = keras.layers.Dense(2)

    def call(self, pixels):
        x = keras.ops.reshape(pixels, (-1, 8 * 8 * 3)) / 255.0
        return keras.ops.softmax(self.dense(self.odd(x)))


def test_graph_that_needs_flex_ops_fails_naming_the_op():
    with pytest.raises(tflite.ExportError, match="no TFLite builtin: Erfinv"):
        tflite.convert(NeedsFlex(), "float32")


def test_predict_bad_inputs(exported, tmp_path, capsys):
    from export import predict

    out, _ = exported
    model = out / "model_int8.tflite"
    (tmp_path / "notes.tflite").write_text("not a model")
    code, _, err = run_cli(predict.main, [tmp_path / "notes.tflite", model], capsys)
    assert code == 1 and "is not a TFLite model" in err and "\n" not in err
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(model.read_bytes()[:2000])
    code, _, err = run_cli(predict.main, [corrupt, model], capsys)
    assert code == 1 and err.startswith(f"error: {corrupt}") and "\n" not in err
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    code, _, err = run_cli(predict.main, [model, tmp_path / "broken.jpg"], capsys)
    assert code == 1 and err.startswith(f"error: Cannot read image {tmp_path / 'broken.jpg'}")
    code, _, err = run_cli(predict.main, [model, tmp_path / "nope.png"], capsys)
    assert code == 1 and err == f"error: Image file {tmp_path / 'nope.png'} does not exist"
    code, _, err = run_cli(predict.main, [tmp_path / "missing.tflite", "x.png"], capsys)
    assert code == 1 and err == f"error: Model file {tmp_path / 'missing.tflite'} does not exist"
    with pytest.raises(ModelFileError, match="is not a TFLite model"):
        Classifier(tmp_path / "notes.tflite")
    for flag in ("--threads", "--top-k"):
        with pytest.raises(SystemExit) as exit_info:
            predict.main([str(model), str(tmp_path / "x.png"), flag, "0"])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert exit_info.value.code == 2 and f"{flag}: must be at least 1, got 0" in err
    with pytest.raises(ValueError, match="num_threads must be None or at least 1, got 0"):
        Classifier(model, num_threads=0)


def test_evaluate_cli(exported, checkpoint, capsys):
    from export import evaluate_tflite as evaluate

    out, report = exported
    code, stdout, err = run_cli(
        evaluate.main, [out / "model_int8.tflite", checkpoint, "--threads", "1"], capsys
    )
    assert code == 0, err
    accuracy = entry(report, "model_int8.tflite")["accuracy"]
    assert re.search(rf"TFLite accuracy +{100 * accuracy:.2f} %", stdout)


def test_evaluate_and_export_name_a_broken_model_keras(exported, checkpoint, tmp_path, capsys):
    from export import evaluate_tflite as evaluate

    out, _ = exported
    broken = _copy_checkpoint(checkpoint, tmp_path / "broken", {"source": "digits"})
    (broken / "model.keras").write_bytes((checkpoint / "model.keras").read_bytes()[:3000])
    cause = "it is truncated or not a Keras archive"
    expected = f"error: Cannot load {broken / 'model.keras'}: {cause}"
    code, _, err = run_cli(evaluate.main, [out / "model_int8.tflite", broken], capsys)
    assert code == 1 and err.startswith(expected) and "\n" not in err, err
    code, _, err = run_cli(tflite.main, [broken, "--output", tmp_path / "o"], capsys)
    assert code == 1 and err.startswith(expected) and "\n" not in err, err
    assert not (tmp_path / "o").exists()


def test_edgetpu_check_cli(exported, capsys, tmp_path):
    out, _ = exported
    code, stdout, _ = run_cli(edgetpu_check.main, [out / "model_edgetpu_int8.tflite"], capsys)
    assert code == 0 and "ops are in the Edge TPU table" in stdout
    code, stdout, _ = run_cli(edgetpu_check.main, [out / "model_int8.tflite", "--json"], capsys)
    parsed = json.loads(stdout)
    assert parsed["first_unsupported_op"]["name"] == "RESHAPE"
    assert len(parsed["ops"]) == parsed["num_ops"]
    (tmp_path / "x.tflite").write_bytes(b"\x00" * 16)
    code, _, err = run_cli(edgetpu_check.main, [tmp_path / "x.tflite"], capsys)
    assert code == 1 and "is not a TFLite model" in err


def test_float_compute_op_definition(exported_every_mode):
    out, _ = exported_every_mode
    dynamic = tflite_reader.read_summary((out / "model_dynamic.tflite").read_bytes())
    names = {op.name for op in analysis.float_compute_ops(dynamic)}
    assert "FULLY_CONNECTED" in names  # int8 weights, float activations
    int16 = tflite_reader.read_summary((out / "model_int16x8.tflite").read_bytes())
    # float32 I/O: only the boundary QUANTIZE / DEQUANTIZE touch floats, and they do not count.
    boundary = [op for op in int16.operators if op.name in ("QUANTIZE", "DEQUANTIZE")]
    assert boundary and analysis.float_compute_ops(int16) == []


def test_private_converter_hooks_of_the_int8_path_exist(tmp_path):
    """The int8 path relies on two private TensorFlow hooks: fail loudly if one goes away."""
    import tensorflow as tf

    graph = PixelClassifier(keras_vit.ViT(num_classes=2, **TINY), [127.5] * 3, [127.5] * 3)
    conversion.write_saved_model(graph, tmp_path / "sm")
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "sm"))
    conversion.check_private_converter_hooks(converter)  # raises ExportError naming the hook

    class Bare:  # a converter without the calibrate-only switch
        pass

    with pytest.raises(tflite.ExportError, match="_experimental_calibrate_only"):
        conversion.check_private_converter_hooks(Bare())


def test_files_of_one_graph_share_one_saved_model(tmp_path, monkeypatch):
    # One block: the test converts five times and writes four SavedModels.
    sizes = dict(TINY, num_layers=1)
    graph = PixelClassifier(keras_vit.ViT(num_classes=2, seed=0, **sizes), [127.5] * 3, [127.5] * 3)
    other = PixelClassifier(keras_vit.ViT(num_classes=3, seed=0, **sizes), [127.5] * 3, [127.5] * 3)
    written = []
    write = conversion.write_saved_model
    monkeypatch.setattr(
        conversion, "write_saved_model", lambda c, d: (written.append((c, d)), write(c, d))
    )
    store = conversion.SavedModels(tmp_path / "store")
    shared = [conversion.convert(graph, q, saved_models=store) for q in ("float32", "dynamic")]
    assert [c for c, _ in written] == [graph]
    assert conversion.convert(other, "float32", saved_models=store) != shared[0]
    assert [c for c, _ in written] == [graph, other]
    # The same bytes as conversions that write a SavedModel of their own.
    assert shared == [conversion.convert(graph, q) for q in ("float32", "dynamic")]
    assert len(written) == 4 and store.path(graph) == written[0][1]


def test_cli_shows_progress_and_hides_converter_logs(checkpoint, tmp_path, capfd, monkeypatch):
    from keras_vit import console

    # As for a user who set no log level (TensorFlow and JAX are imported already here).
    monkeypatch.setattr(console, "USER_LOG_LEVEL", None)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    capfd.readouterr()
    argv = [checkpoint, "--output", tmp_path / "q", "--quantize", "float32", "int8"]
    code = tflite.main([str(a) for a in [*argv, "--calibration-samples", "8", "--no-eval"]])
    _, err = capfd.readouterr()
    assert code == 0, err
    lines = err.splitlines()
    for step in ("Converting model_float32.tflite", "Calibrating int8 on 8 images"):
        assert step in lines
    noise = [
        line
        for line in lines
        if re.match(r"[IWE]\d{4} |INFO|WARNING|fully_quantize", line)
        or "keras_vit_export_" in line
        or ".tmp" in line
    ]
    assert noise == []
    monkeypatch.setattr(console, "USER_LOG_LEVEL", "0")  # the user's own choice
    assert not console.quiet_requested(verbose=False)


def test_native_stderr_is_replayed_only_when_a_step_fails(capfd):
    from keras_vit.console import native_stderr_captured

    with native_stderr_captured():
        os.write(2, b"converter chatter\n")
    assert "converter chatter" not in capfd.readouterr().err
    with pytest.raises(RuntimeError), native_stderr_captured():
        os.write(2, b"why the conversion failed\n")
        raise RuntimeError("conversion failed")
    assert "why the conversion failed" in capfd.readouterr().err
    with pytest.raises(ValueError), native_stderr_captured(expected_errors=(ValueError,)):
        os.write(2, b"noise before a user error\n")
        raise ValueError("bad argument")
    assert "noise before a user error" not in capfd.readouterr().err


def _converter_min_runtime(content: bytes) -> str:
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    (entry,) = [m for m in model.metadata if m.name == b"min_runtime_version"]
    return bytes(model.buffers[entry.buffer].data).rstrip(b"\0").decode()


def test_report_gives_each_files_oldest_runtime(exported_every_mode):
    from export.runtime_versions import minimum_runtime, parse_version

    out, report = exported_every_mode
    for e in report["files"]:
        content = (out / e["file"]).read_bytes()
        requirement = minimum_runtime(tflite_reader.read_summary(content))
        assert e["min_runtime"] == requirement.runtime
        assert e["min_runtime_op"] == f"{requirement.op} v{requirement.version}"
        # Never older than what the converter itself wrote into the file.
        assert parse_version(e["min_runtime"]) >= parse_version(_converter_min_runtime(content))
    # int16x8 runs int16 RSQRT, which needs the kernel of RSQRT version 3.
    assert entry(report, "model_int16x8.tflite")["min_runtime_op"] == "RSQRT v3"
    table = tflite.format_table(report)
    assert f">={entry(report, 'model_dynamic.tflite')['min_runtime']}" in table


@pytest.mark.parametrize("name", ["model_dynamic.tflite", "model_int16x8.tflite"])
def test_predict_names_the_op_an_old_runtime_lacks(exported_every_mode, monkeypatch, capsys, name):
    import types

    from export import predict, runtime
    from export.runtime_versions import minimum_runtime

    class OldInterpreter:  # what tflite-runtime 2.14 does with a newer operator version
        def __init__(self, **kwargs):
            raise ValueError("Didn't find op for builtin opcode, or INT16 unsupported")

    module = types.ModuleType("tflite_runtime.interpreter")
    module.Interpreter = OldInterpreter
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", module)
    monkeypatch.setattr(runtime, "BACKENDS", (("tflite_runtime.interpreter", "Interpreter"),))
    monkeypatch.setattr(runtime, "backend_version", lambda module_name: "2.14.0")
    out, _ = exported_every_mode
    model = out / name
    needed = minimum_runtime(tflite_reader.read_summary(model.read_bytes()))
    code, _, err = run_cli(predict.main, [model, out / "labels.txt"], capsys)
    assert code == 1 and "\n" not in err, err
    assert err == (
        f"error: {model} cannot run here: {needed}, but tflite-runtime 2.14.0 is installed: "
        "pip install ai-edge-litert"
    )


# === A hybrid (ResNet stem + ViT) ======================================================


@pytest.fixture(scope="module")
def hybrid_exported(tmp_path_factory):
    """A tiny hybrid (root block and one stage, width 0.5) trained on digits, then exported.

    Its weights are a committed fixture (`tests/fixtures/make_trained.py`), so the
    agreement figures do not move with the CPU or thread count of the test machine.
    """
    model = trained.load("hybrid")
    path = tmp_path_factory.mktemp("hybrid") / "ckpt"
    write_checkpoint(path, model, LABELS, dataset={"source": "digits"})
    report = tflite.export_tflite(
        path,
        path.parent / "tflite",
        quantize=["float32", "int8", "int8_cpu", "int16x8"],
        calibration_samples=64,
        edgetpu=True,
        latency_runs=1,
    )
    return model, Path(report["output_dir"]), report


def test_hybrid_float32_and_int8_files(hybrid_exported):
    model, _, report = hybrid_exported
    # One GroupNorm after every StdConv2D; the 1x1-patch embedding is a FULLY_CONNECTED.
    convs = sum(name.endswith("/kernel") for name in model.stem.weights_by_name())
    f32 = entry(report, "model_float32.tflite")
    assert f32["top1_agreement"] == 1.0 and f32["max_abs_prob_diff"] < 1e-4
    # Weight standardisation is folded into the kernels: one CONV_2D per convolution and
    # no op left computing the kernels (MEAN only in the 2 LayerNorm / GroupNorm statistics).
    assert f32["op_histogram"]["CONV_2D"] == convs
    norms = 2 * model.num_layers + 1 + convs
    assert f32["op_histogram"]["MEAN"] == 2 * norms
    int8 = entry(report, "model_int8.tflite")
    assert int8["float_compute_ops"] == 0 and "DEQUANTIZE" not in int8["op_histogram"]
    assert int8["input"][0]["dtype"] == "uint8" and int8["output"][0]["dtype"] == "uint8"
    assert int8["top1_agreement"] >= 0.99
    cpu = entry(report, "model_int8_cpu.tflite")
    assert set(cpu["float_compute_op_names"]) <= {
        *tflite.FLOAT_ISLAND_OPS,
        "DEQUANTIZE",
        "QUANTIZE",
    }
    assert cpu["top1_agreement"] >= 0.99
    int16 = entry(report, "model_int16x8.tflite")
    assert int16["float_compute_ops"] == 0 and int16["top1_agreement"] >= 0.99


def test_hybrid_edgetpu_file_maps_every_op(hybrid_exported):
    from export.runtime_versions import parse_version

    _, out, report = hybrid_exported
    e = entry(report, "model_edgetpu_int8.tflite")
    assert e["float_compute_ops"] == 0
    assert e["edgetpu"]["first_unsupported"] is None
    assert edgetpu_check.check_file(out / "model_edgetpu_int8.tflite").first_unsupported is None
    assert "MEAN" not in e["op_histogram"] and "BATCH_MATMUL" not in e["op_histogram"]
    # No op version newer than the tflite-runtime 2.5 that Coral's Edge TPU runtime ships.
    assert parse_version(e["min_runtime"]) <= parse_version("2.5.0")
    assert e["top1_agreement"] >= 0.98


def test_hybrid_float16_and_dynamic_files_agree_with_keras(hybrid_exported, tmp_path):
    model, out, first = hybrid_exported
    report = tflite.export_tflite(
        out.parent / "ckpt", tmp_path / "tflite", quantize=["float16", "dynamic"], latency_runs=1
    )
    convs = sum(name.endswith("/kernel") for name in model.stem.weights_by_name())
    float32_bytes = entry(first, "model_float32.tflite")["size_bytes"]
    f16 = entry(report, "model_float16.tflite")
    # float16 weights, dequantized once at load; the stem stays one CONV_2D per convolution.
    assert "DEQUANTIZE" in f16["op_histogram"] and f16["op_histogram"]["CONV_2D"] == convs
    assert f16["top1_agreement"] >= 0.99 and f16["max_abs_prob_diff"] < 1e-2
    assert f16["input"][0]["dtype"] == "float32"
    dynamic = entry(report, "model_dynamic.tflite")
    assert dynamic["op_histogram"]["CONV_2D"] == convs
    assert dynamic["top1_agreement"] >= 0.99
    # Half- and quarter-size weights (the fixed part of a file this small weighs in too).
    assert dynamic["size_bytes"] < f16["size_bytes"] < 0.75 * float32_bytes
    summary = tflite_reader.read_summary((tmp_path / "tflite" / dynamic["file"]).read_bytes())
    assert "FULLY_CONNECTED" in {op.name for op in analysis.float_compute_ops(summary)}


def test_report_gives_fidelity_figures_for_every_file(exported_every_mode):
    _, report = exported_every_mode
    for e in report["files"]:
        for key in ("max_logit_error", "mean_logit_error", "ranking_agreement"):
            assert key in e, (e["file"], key)
        assert 0.0 <= e["mean_logit_error"] <= e["max_logit_error"], e["file"]
        assert 0.0 <= e["ranking_agreement"] <= 1.0
    float32 = entry(report, "model_float32.tflite")
    assert float32["max_logit_error"] < 1e-4 and float32["ranking_agreement"] == 1.0
    assert "worst_layers" not in float32
    for name in ("model_int8.tflite", "model_int8_cpu.tflite"):
        e = entry(report, name)
        assert e["max_logit_error"] > float32["max_logit_error"]
        worst = e["worst_layers"]
        assert worst and {"op", "tensor", "error", "gain"} <= set(worst[0])
    # No float32 file of the Edge TPU graph to compare with: no per-layer figures.
    assert "worst_layers" not in entry(report, "model_edgetpu_int8.tflite")
    table = tflite.format_table(report)
    assert "rank %" in table and "max err" in table and "op adding the most error" in table


def test_cli_int8_options_mse_calibration_smoothing_and_spans(
    checkpoint, exported, tmp_path, capsys
):
    _, default = exported
    options = ["--calibration", "mse", "--smooth-alpha", "0.5", "--calibration-samples", "64"]
    options += ["--mlp-spans", "4", "--weight-rounding", "gptq"]
    code, _, err = run_cli(
        tflite.main,
        [checkpoint, "--output", tmp_path / "out", "--quantize", "float32", "int8", *options],
        capsys,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["calibration"]["calibration_method"] == "mse"
    assert report["calibration"]["smooth_alpha"] == 0.5
    assert report["calibration"]["mlp_spans"] == 4
    assert report["calibration"]["weight_rounding"] == "gptq"
    # GPTQ rounds the int8 file's weights only: the float32 file is the exact model.
    assert entry(report, "model_float32.tflite")["max_logit_error"] < 1e-4
    e = entry(report, "model_int8.tflite")
    assert e["float_compute_ops"] == 0
    assert e["top1_agreement"] >= 0.97
    assert (tmp_path / "out" / "model_int8.tflite").read_bytes() != (
        exported[0] / "model_int8.tflite"
    ).read_bytes()
    assert default["calibration"]["calibration_method"] == "minmax"
    assert default["calibration"]["smooth_alpha"] is None
    assert default["calibration"]["mlp_spans"] == 1
    assert default["calibration"]["weight_rounding"] == "nearest"


def test_report_names_the_calibration_sample_of_a_dynamic_export_that_reads_one(
    checkpoint, tmp_path
):
    # No calibrated file, but smoothing and GPTQ read training images: the report says which.
    report = tflite.export_tflite(
        checkpoint,
        tmp_path / "out",
        quantize=["dynamic"],
        calibration_samples=16,
        smooth_alpha=0.5,
        weight_rounding="gptq",
        evaluate=False,
        latency_runs=1,
    )
    assert report["calibration"]["samples"] == 16
    assert report["calibration"]["split"] == "train"
    assert report["calibration"]["weight_rounding"] == "gptq"
    plain = tflite.export_tflite(
        checkpoint, tmp_path / "plain", quantize=["dynamic"], evaluate=False, latency_runs=1
    )
    assert plain["calibration"] is None


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--smooth-alpha", "1.5"], "error: --smooth-alpha must be between 0 and 1, got 1.5"),
        (["--percentile", "10"], "error: --percentile must be above 50 and at most 100, got 10.0"),
        (
            ["--weight-rounding", "best"],
            "error: Unknown --weight-rounding 'best'; expected one of nearest, gptq",
        ),
    ],
)
def test_cli_bad_int8_options(checkpoint, tmp_path, capsys, flags, message):
    code, _, err = run_cli(tflite.main, [checkpoint, "--output", tmp_path / "o", *flags], capsys)
    assert code == 1 and err == message
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        tflite.main([str(checkpoint), "--calibration", "kl"])
    assert "invalid choice: 'kl'" in capsys.readouterr().err
