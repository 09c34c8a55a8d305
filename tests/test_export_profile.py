"""Per-op profiles (export.profile), the XNNPACK-friendly int8 matmul ranges and `int8_cpu`."""

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import TINY
from helpers import benchmark_module

import keras_vit
from export import analysis, flatbuffer_edits, profile, tflite, tflite_reader
from export import convert as conversion
from export.classifier import PixelClassifier


@pytest.fixture(scope="module")
def classifier_and_float32(tmp_path_factory):
    """A TINY ViT (with a random head) as a pixel classifier, 8 calibration images and its
    float32 file."""
    model = keras_vit.ViT(num_classes=10, seed=3, **TINY)
    rng = np.random.default_rng(0)
    for variable in model.get_layer("head").weights:
        variable.assign(rng.normal(0.0, 0.1, variable.shape).astype("float32"))
    classifier = PixelClassifier(model, [127.5] * 3, [127.5] * 3)
    calibration = rng.integers(0, 256, (8, 32, 32, 3)).astype(np.uint8)
    float32 = tmp_path_factory.mktemp("profile") / "float32.tflite"
    float32.write_bytes(tflite.convert(classifier, "float32", calibration, True))
    return classifier, calibration, float32


@pytest.fixture(scope="module")
def float32_file(classifier_and_float32):
    return classifier_and_float32[2]


@pytest.fixture(scope="module")
def files(classifier_and_float32):
    """The float32 file and the int8 files (with and without symmetric matmul ranges, with
    and without the no-op ADDs) and int8_cpu file of the same ViT."""
    classifier, calibration, float32 = classifier_and_float32
    out = float32.parent
    paths = {"float32": float32}
    for label, symmetric in (("int8", True), ("int8_plain", False)):
        paths[label] = out / f"{label}.tflite"
        paths[label].write_bytes(tflite.convert(classifier, "int8", calibration, symmetric))
    paths["int8_cpu"] = out / "int8_cpu.tflite"
    paths["int8_cpu"].write_bytes(tflite.convert(classifier, "int8_cpu", calibration))
    paths["int8_with_adds"] = out / "int8_with_adds.tflite"
    with mock.patch.object(conversion, "drop_noop_adds", lambda content: content):
        paths["int8_with_adds"].write_bytes(tflite.convert(classifier, "int8", calibration))
    return paths


def matmul_right_zero_points(content: bytes) -> list[int]:
    summary = tflite_reader.read_summary(content)
    return [
        summary.tensors[op.inputs[1]].zero_point[0]
        for op in summary.operators
        if op.name == "BATCH_MATMUL"
    ]


def test_int8_matmuls_have_zero_point_zero_right_operands_and_run_on_xnnpack(files):
    content = files["int8"].read_bytes()
    assert matmul_right_zero_points(content) == [0] * (2 * TINY["num_layers"])
    ops = profile.profile_ops(content, runs=1, warmup=0)
    matmuls = [p for p in ops if p.name == "BATCH_MATMUL"]
    assert len(matmuls) == 2 * TINY["num_layers"] and all(p.delegated for p in matmuls)
    assert all(p.dtype == "int8" for p in matmuls)


def test_without_symmetric_ranges_xnnpack_refuses_the_int8_matmuls(files):
    content = files["int8_plain"].read_bytes()
    zero_points = matmul_right_zero_points(content)
    ops = profile.profile_ops(content, runs=1, warmup=0)
    delegated = [p.delegated for p in ops if p.name == "BATCH_MATMUL"]
    # XNNPACK takes a matmul exactly when its right operand's zero point is 0.
    assert delegated == [z == 0 for z in zero_points]
    assert not all(delegated)


def test_symmetric_ranges_change_only_the_matmul_operands(files):
    """Same ops, same tensors; outputs of the two int8 files agree closely on images."""
    from export.runtime import Classifier

    new, old = files["int8"].read_bytes(), files["int8_plain"].read_bytes()
    a, b = tflite_reader.read_summary(new), tflite_reader.read_summary(old)
    assert [op.name for op in a.operators] == [op.name for op in b.operators]
    changed = {
        i for i, (x, y) in enumerate(zip(a.tensors, b.tensors, strict=True)) if x.scale != y.scale
    }
    matmul_chains = set()
    for op in a.operators:
        if op.name == "BATCH_MATMUL":
            matmul_chains.add(op.inputs[1])
    producers = {out: op for op in a.operators for out in op.outputs}
    for index in list(matmul_chains):
        while index in producers and producers[index].name in ("RESHAPE", "TRANSPOSE"):
            index = producers[index].inputs[0]
            matmul_chains.add(index)
    assert changed and changed <= matmul_chains
    images = np.random.default_rng(1).integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
    p_new = Classifier(files["int8"]).predict(images)
    p_old = Classifier(files["int8_plain"]).predict(images)
    assert np.abs(p_new - p_old).max() < 0.1


def test_dropping_the_epsilon_adds_changes_no_output(files):
    """LayerNorm's `variance + 1e-6` ADDs are gone and the outputs are the same integers."""
    from export.runtime import Classifier
    from keras_vit import data

    with_adds = tflite_reader.read_summary(files["int8_with_adds"].read_bytes())
    without = tflite_reader.read_summary(files["int8"].read_bytes())
    removed = with_adds.op_histogram()["ADD"] - without.op_histogram()["ADD"]
    assert removed == 2 * TINY["num_layers"] + 1  # one per LayerNorm
    assert with_adds.op_histogram()["RSQRT"] == without.op_histogram()["RSQRT"] == removed
    digits, _ = data.digits_arrays("test", TINY["image_size"])
    noise = np.random.default_rng(2).integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)
    for images in (digits, noise):
        # Dequantized with the same scale: equal floats are equal integers.
        a = Classifier(files["int8"]).predict(images)
        b = Classifier(files["int8_with_adds"]).predict(images)
        assert np.array_equal(a, b)


def test_an_add_is_a_noop_only_if_every_integer_maps_to_itself():
    # epsilon on a variance whose output range is epsilon wider (a one-row LayerNorm)
    assert flatbuffer_edits.maps_to_itself(
        (0.0037321541, -128), (0.0037321581, -128), np.array([1e-6])
    )
    assert not flatbuffer_edits.maps_to_itself((0.01, -128), (0.01, -127), np.array([0.0]))
    assert not flatbuffer_edits.maps_to_itself((0.01, 0), (0.01, 0), np.array([0.003]))  # 0.3 step
    assert not flatbuffer_edits.maps_to_itself(
        (0.01, 0), (0.0101, 0), np.array([0.0])
    )  # 1 % rescale


def test_drop_noop_adds_keeps_an_add_that_changes_values(files):
    """The residual ADDs (two variable inputs) and the position-embedding ADD stay."""
    content = files["int8"].read_bytes()
    assert tflite.drop_noop_adds(content) == content
    assert tflite_reader.read_summary(content).op_histogram()["ADD"] == 2 * TINY["num_layers"] + 1


def test_int8_cpu_keeps_only_softmax_rsqrt_gelu_in_float_and_runs_on_xnnpack(files):
    content = files["int8_cpu"].read_bytes()
    summary = tflite_reader.read_summary(content)
    float_ops = {op.name for op in analysis.float_compute_ops(summary)}
    assert float_ops == {*tflite.FLOAT_ISLAND_OPS, "DEQUANTIZE", "QUANTIZE"}
    kinds = {
        op.name: summary.tensors[op.outputs[0]].dtype
        for op in summary.operators
        if op.name in ("FULLY_CONNECTED", "BATCH_MATMUL", *tflite.FLOAT_ISLAND_OPS)
    }
    assert kinds == {
        "FULLY_CONNECTED": "int8",
        "BATCH_MATMUL": "int8",
        "SOFTMAX": "float32",
        "RSQRT": "float32",
        "GELU": "float32",
    }
    assert summary.tensors[summary.inputs[0]].dtype == "uint8"
    assert summary.tensors[summary.outputs[0]].dtype == "uint8"
    ops = profile.profile_ops(content, runs=1, warmup=0)
    refused = sorted({p.name for p in ops if not p.delegated})
    # Left to TFLite: only the class token's one-row slice and the graph's I/O requantizing.
    assert set(refused) <= {"STRIDED_SLICE", "QUANTIZE"}
    full = files["int8"].read_bytes()
    assert profile.delegate_partitions(content) <= 2 < profile.delegate_partitions(full)


def test_single_op_models_cover_every_op(float32_file):
    content = float32_file.read_bytes()
    summary = tflite_reader.read_summary(content)
    singles = profile.single_op_models(content)
    assert [s[1] for s in singles] == [op.name for op in summary.operators]
    for index, name, dtype, shape, single in singles[:5]:
        small = tflite_reader.read_summary(single)
        assert [op.name for op in small.operators] == [name]
        first_output = summary.operators[index].outputs[0]
        assert dtype == "float32" and shape == summary.tensors[first_output].shape


def test_profile_model_report(float32_file):
    report = profile.profile_model(float32_file.read_bytes(), num_threads=1, runs=2, warmup=1)
    assert report["num_ops"] == len(report["ops"]) == sum(r["count"] for r in report["by_op"])
    assert report["delegate_partitions"] == profile.delegate_partitions(float32_file.read_bytes())
    assert report["model_ms"] > 0 and report["overhead_ms"] > 0
    # Float32: XNNPACK takes everything but the one-row slice of the class token.
    assert report["ops_not_delegated"] <= 1
    table = profile.format_by_op(report)
    assert table.startswith("| op (output type) |") and "FULLY_CONNECTED (float32)" in table


def test_profile_cli(files, tmp_path, capsys):
    out = tmp_path / "profile.json"
    assert profile.main([str(files["int8"]), "--runs", "1", "--json", str(out)]) == 0
    assert "BATCH_MATMUL (int8)" in capsys.readouterr().out
    assert Path(out).is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.tflite"], "does not exist"),
        (["NOTTFLITE"], "is not a TFLite model"),
        (["MODEL", "--threads", "0"], "--threads and --runs must be at least 1"),
    ],
)
def test_profile_cli_bad_input(float32_file, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    argv = [
        str(tmp_path / a)
        if a == "missing.tflite"
        else str(bad)
        if a == "NOTTFLITE"
        else str(float32_file)
        if a == "MODEL"
        else a
        for a in argv
    ]
    assert profile.main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_benchmark_flop_count_is_the_exported_graphs_matmuls(float32_file):
    """benchmarks/run.py's analytic FLOPs (class-token-only last block) equal twice the
    multiply-adds of the float32 file's matmuls, counted from its tensor shapes."""
    run = benchmark_module("run")
    summary = tflite_reader.read_summary(float32_file.read_bytes())
    matmuls = ("FULLY_CONNECTED", "BATCH_MATMUL", "CONV_2D")
    counted = sum(analysis.macs(summary, op) for op in summary.operators if op.name in matmuls)
    config = {**TINY, "num_classes": 10}
    assert run.forward_flops(config, class_token_only=True) == 2 * counted
    assert run.forward_flops(config) > 2 * counted
