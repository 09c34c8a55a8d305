"""Fidelity figures (export.fidelity), robust calibration ranges, LayerNorm smoothing, the
stress model, and the figures measured on a tiny exported model."""

from dataclasses import replace

import numpy as np
import pytest
from helpers import benchmark_module

from export import calibration, fidelity, smoothing
from export.errors import ExportError

# === export.fidelity on synthetic arrays ===

FLOAT = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 4.0]])


def test_logit_error_is_relative_to_each_inputs_spread_and_ignores_a_shift():
    quantized = FLOAT + np.array([[0.1, 0.0, -0.1], [1.0, 1.0, 1.0]])
    error = fidelity.logit_error(FLOAT, quantized)
    # Row 0: |[0.1, 0, -0.1]| / 2; row 1: a shift of every class, no error.
    assert error["max"] == pytest.approx(0.05)
    assert error["mean"] == pytest.approx((0.05 + 0.05) / 6)
    assert fidelity.logit_error(FLOAT, FLOAT + 7.0) == {"max": 0.0, "mean": 0.0}


def test_inputs_without_spread_are_left_out():
    flat = np.zeros((1, 3))
    error = fidelity.logit_error(flat, flat + np.array([[1.0, 0.0, 0.0]]))
    assert np.isnan(error["max"]) and np.isnan(error["mean"])


def test_ranking_agreement_sees_what_a_class_bias_hides():
    # Class 0 wins every input by its bias; the input moves it by +-1. The quantized
    # logits lost the input's part: top-1 still agrees everywhere, the ranking does not.
    float_logits = np.array([[11.0, 0.0], [9.0, 0.0], [11.0, 0.0], [9.0, 0.0]])
    quantized = np.array([[10.0, 0.0]] * 4)
    assert fidelity.top1_agreement(float_logits, quantized) == 1.0
    # Centred: float argmax [0, 1, 0, 1]; quantized all ties -> class 0.
    assert fidelity.ranking_agreement(float_logits, quantized) == 0.5
    assert fidelity.ranking_agreement(float_logits, float_logits * 2.0) == 1.0


def test_centred_error_is_relative_to_what_the_input_changes():
    # Class 0 carries a bias of 10 that no input changes; the inputs move the logits by 1.
    float_logits = np.array([[10.0, 1.0, 0.0], [10.0, 0.0, 1.0], [10.0, 0.5, 0.5]])
    quantized = float_logits + np.array([[0.0, 0.2, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    raw = fidelity.logit_error(float_logits, quantized)["max"]
    centred = fidelity.centred_logit_error(float_logits, quantized)["max"]
    assert raw < 0.02 and centred > 0.08  # the spread it is measured against: 10 vs 1
    assert fidelity.centred_logit_error(float_logits, float_logits)["max"] == 0.0
    assert np.isnan(fidelity.centred_logit_error(float_logits[:1], quantized[:1])["max"])


def test_fidelity_names_every_figure_and_log_probabilities_lose_nothing():
    logits = np.array([[1.0, 3.0, -2.0], [0.5, 0.0, 0.25]])
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    figures = fidelity.fidelity(logits, fidelity.log_probabilities(probabilities))
    assert set(figures) == {
        "max_logit_error",
        "mean_logit_error",
        "max_centred_error",
        "mean_centred_error",
        "ranking_agreement",
        "top1_agreement",
    }
    assert figures["max_logit_error"] < 1e-12
    assert figures["ranking_agreement"] == figures["top1_agreement"] == 1.0
    assert np.isfinite(fidelity.log_probabilities(np.zeros((1, 2)))).all()


def test_shapes_that_do_not_match_are_refused():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(2, 2\)"):
        fidelity.logit_error(FLOAT, FLOAT[:, :2])
    with pytest.raises(ValueError, match="same shape"):
        fidelity.relative_rms_error(np.zeros(2), np.zeros(3))


def test_pixels_are_quantized_for_an_integer_input_as_its_parameters_say():
    from export.tflite_fidelity import feed_pixels

    class Recorder:
        def set_tensor(self, index, value):
            self.value = value

    image = np.array([[[0, 127, 128, 255]]], np.uint8)
    fed = Recorder()
    cases = [  # (dtype, (scale, zero point), what the input must hold)
        (np.uint8, (1.0, 0), [0, 127, 128, 255]),
        (np.uint8, (0.0, 0), [0, 127, 128, 255]),
        (np.int8, (1.0, -128), [-128, -1, 0, 127]),  # not the wrapped pixel.astype(int8)
        (np.int8, (2.0, 0), [0, 64, 64, 127]),  # 127.5 saturates
        (np.float32, (0.0, 0), [0.0, 127.0, 128.0, 255.0]),
    ]
    for dtype, quantization, expected in cases:
        feed_pixels(fed, {"index": 0, "dtype": dtype, "quantization": quantization}, image)
        assert fed.value.dtype == dtype and fed.value.shape == (1, 1, 1, 4)
        np.testing.assert_array_equal(fed.value.reshape(-1), expected)
    details = {"index": 3, "name": "pixels", "dtype": np.int8, "quantization": (0.0, 0)}
    with pytest.raises(ValueError, match="'pixels' is int8 without quantization"):
        feed_pixels(fed, details, image)


def test_layer_errors_attribute_error_to_the_op_that_adds_it():
    reference = {"x": np.array([3.0, 4.0]), "y": np.array([6.0, 8.0]), "m": np.array([0.0, 0.0])}
    values = {"x": np.array([3.0, 4.0]), "y": np.array([6.0, 8.0 + 5.0]), "m": np.array([0.5, 0])}
    ops = [("INPUT", [], ["x"]), ("MUL", ["x", "w"], ["y"]), ("MEAN", ["y"], ["m"])]
    rows = fidelity.layer_errors(reference, values, ops)
    by_op = {row["op"]: row for row in rows}
    assert by_op["INPUT"]["error"] == 0.0
    # rms(y) = sqrt(50); error rms = sqrt(25 / 2); relative = 0.5.
    assert by_op["MUL"]["error"] == pytest.approx(0.5)
    assert by_op["MUL"]["gain"] == pytest.approx(0.5)
    # m is small beside its input: its error is scaled by the input's rms, sqrt(50).
    assert by_op["MEAN"]["error"] == pytest.approx(np.sqrt(0.125) / np.sqrt(50.0))
    assert fidelity.worst_layers(rows, 1)[0]["op"] == "MUL"
    # A tensor only one run has (q) passes its input's error on.
    chain = [("INPUT", [], ["x"]), ("MUL", ["x"], ["y"]), ("QUANTIZE", ["y"], ["q"])]
    chain.append(("MEAN", ["q"], ["m"]))
    reference = {**reference, "m": np.array([1.0, 1.0])}
    by_op = {row["op"]: row for row in fidelity.layer_errors(reference, values, chain)}
    assert "QUANTIZE" not in by_op
    # m: rms error sqrt(((0.5 - 1) ** 2 + 1) / 2) over rms 1; less q's carried 0.5.
    assert by_op["MEAN"]["error"] == pytest.approx(np.sqrt(0.625))
    assert by_op["MEAN"]["gain"] == pytest.approx(np.sqrt(0.625) - 0.5)


# === export.calibration ===


def test_percentile_range_drops_a_lone_outlier():
    counts = np.zeros(100, np.int64)
    counts[:10] = 1000
    counts[99] = 1  # one value near 100, beside 10,000 below 10
    assert calibration.percentile_range(counts, 0.0, 100.0, 99.99) == (0.0, 10.0)
    assert calibration.percentile_range(counts, 0.0, 100.0, 100.0) == (0.0, 100.0)
    # Zero stays inside a range that had it.
    assert calibration.percentile_range(counts, -50.0, 50.0, 99.99)[0] == -50.0


def test_mse_range_narrows_for_an_outlier_and_keeps_a_uniform_range():
    uniform = np.full(2048, 10, np.int64)
    assert calibration.mse_range(uniform, -1.0, 1.0) == (-1.0, 1.0)
    peaked = np.zeros(2048, np.int64)
    peaked[1000:1048] = 10_000
    peaked[0] = 1
    low, high = calibration.mse_range(peaked, -1.0, 1.0)
    assert -1.0 < low < 0.0 < high < 1.0


def test_unknown_calibration_method_and_bad_percentile_are_refused():
    with pytest.raises(ValueError, match="Unknown calibration 'kl'"):
        calibration.robust_ranges(b"", np.zeros((1, 2, 2, 3), np.uint8), "kl")
    with pytest.raises(ValueError, match="percentile"):
        calibration.robust_ranges(b"", np.zeros((1, 2, 2, 3), np.uint8), "percentile", 40.0)
    assert calibration.robust_ranges(b"same", np.zeros((1, 2, 2, 3)), "minmax") == b"same"


# === smoothing and the stress model (tiny ViTs) ===

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)


def test_smoothing_keeps_the_float_outputs_and_evens_the_channels(tiny_vit):
    stress = benchmark_module("stress")
    model, images = tiny_vit
    stressed = stress.stress(model, seed=0)
    smoothed = smoothing.smooth(stressed, images, alpha=0.5)
    np.testing.assert_allclose(
        np.asarray(smoothed(images)), np.asarray(stressed(images)), atol=1e-5, rtol=1e-5
    )

    def spread(ranges):  # largest channel over the median channel, worst LayerNorm
        return max(float(v.max() / np.median(v)) for v in ranges.values())

    before = spread(smoothing.norm_output_ranges(stressed, images))
    after = spread(smoothing.norm_output_ranges(smoothed, images))
    assert after < before / 3


def test_smoothed_float32_file_computes_the_unsmoothed_logits(tiny_vit):
    from export import tflite_fidelity
    from export.classifier import PixelClassifier
    from export.convert import convert

    stress = benchmark_module("stress")
    model, images = tiny_vit
    stressed = stress.stress(model, seed=0)
    pixels = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    logits = [
        tflite_fidelity.logits(
            convert(PixelClassifier(m, [127.5] * 3, [127.5] * 3), "float32"), pixels
        )
        for m in (stressed, smoothing.smooth(stressed, images, alpha=1.0))
    ]
    np.testing.assert_allclose(logits[1], logits[0], atol=1e-5, rtol=1e-5)


def test_smoothing_alpha_out_of_range_is_refused(tiny_vit):
    model, images = tiny_vit
    with pytest.raises(ValueError, match="alpha between 0 and 1"):
        smoothing.smooth(model, images, alpha=1.5)


def test_stress_model_has_outlier_channels_after_every_layernorm(tiny_vit):
    stress = benchmark_module("stress")
    model, images = tiny_vit
    stressed = stress.stress(model, seed=0)
    ranges = smoothing.norm_output_ranges(stressed, images)
    assert len(ranges) == 2 * TINY["num_layers"] + 1
    for name, values in ranges.items():
        rest = np.median(np.delete(values, stressed.stress_channels))
        ratios = values[stressed.stress_channels] / rest
        assert ratios.max() >= 10.0, name
    # The LayerNorm part alone is the same function in float.
    scaled_only = stress.stress(model, seed=0, massive=0.0, attention_sigma=0.0, gelu_sigma=0.0)
    np.testing.assert_allclose(
        np.asarray(scaled_only(images)), np.asarray(model(images)), atol=1e-5, rtol=1e-5
    )


# === on a tiny exported model ===


@pytest.fixture(scope="module")
def tiny_files(tiny_vit):
    from export.classifier import PixelClassifier
    from export.convert import convert

    model, _ = tiny_vit
    rng = np.random.default_rng(1)
    calibration_images = rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    held_out = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    graph = PixelClassifier(model, [127.5] * 3, [127.5] * 3)
    files = {
        "float32": convert(graph, "float32"),
        "int8": convert(graph, "int8", calibration_images),
        "int8_mse": convert(graph, "int8", calibration_images, calibration_method="mse"),
        "int8_percentile": convert(
            graph, "int8", calibration_images, calibration_method="percentile"
        ),
    }
    return model, held_out, files, calibration_images, graph


def test_file_logits_match_keras_and_the_quantized_figures_are_sane(tiny_files):
    from export import tflite_fidelity, tflite_reader

    model, held_out, files, _, _ = tiny_files
    preprocessing = {"mean": [127.5] * 3, "std": [127.5] * 3}
    reference = tflite_fidelity.keras_logits(model, held_out, preprocessing)
    float_logits = tflite_fidelity.logits(files["float32"], held_out)
    np.testing.assert_allclose(float_logits, reference, atol=1e-4)
    assert fidelity.fidelity(reference, float_logits)["ranking_agreement"] == 1.0
    for name in ("int8", "int8_mse", "int8_percentile"):
        figures = fidelity.fidelity(reference, tflite_fidelity.logits(files[name], held_out))
        assert 0.0 < figures["max_logit_error"] < 1.0, name
        assert figures["mean_logit_error"] <= figures["max_logit_error"]
        assert figures["top1_agreement"] >= 0.5, name
    layers = tflite_fidelity.layer_report(files["float32"], files["int8"], held_out[:2])
    assert layers["matched"] > 20
    assert len(layers["worst"]) == 3 and layers["worst"][0]["gain"] > 0
    # Every op up to the logits, none after (the softmax, the uint8 probabilities).
    summary = tflite_reader.read_summary(files["int8"])
    compared = tflite_fidelity.layer_report(files["float32"], files["int8"], held_out[:2], 10**4)
    tensors = {row["tensor"] for row in compared["worst"]}
    assert summary.tensors[tflite_fidelity.logits_tensor(summary)].name in tensors
    assert not tensors & {summary.tensors[i].name for i in summary.outputs}


def test_the_logits_output_leaves_the_probabilities_unchanged(tiny_files):
    from ai_edge_litert.interpreter import Interpreter

    from export import tflite_reader
    from export.flatbuffer_edits import with_outputs
    from export.tflite_fidelity import logits_tensor

    _, held_out, files, _, _ = tiny_files
    content = files["int8"]
    index = logits_tensor(tflite_reader.read_summary(content))
    outputs = []
    for model in (content, with_outputs(content, [index])):
        interpreter = Interpreter(model_content=model)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], held_out[:1])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    with pytest.raises(ValueError, match="No tensor 100000"):
        with_outputs(content, [100000])
    with pytest.raises(ValueError, match="no SOFTMAX"):
        logits_tensor(replace(tflite_reader.read_summary(files["float32"]), operators=()))


def test_minmax_calibration_is_the_default_file_bit_for_bit(tiny_files):
    from export.convert import convert

    _, _, files, calibration_images, graph = tiny_files
    assert convert(graph, "int8", calibration_images, calibration_method="minmax") == files["int8"]
    assert files["int8_mse"] != files["int8"]
    with pytest.raises(ExportError, match="Unknown calibration 'kl'"):
        convert(graph, "int8", calibration_images, calibration_method="kl")


@pytest.mark.integration
def test_quick_fidelity_benchmark_writes_every_row(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    output = str(tmp_path / "fidelity")
    script = str(root / "benchmarks" / "fidelity.py")
    # One variant per preparation path: the default calibration, smoothing, smoothing with
    # MLP spans (the calibration methods have their own tests), on the stress model (the
    # random model's rows come from the next test's run).
    variants = ["minmax", "smooth0.5+mse", "smooth1+spans4+mse"]
    options = ["--quick", "--models", "stress", "--variants", *variants]
    result = subprocess.run(
        [sys.executable, script, *options, "--output", output],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(Path(output + ".json").read_text())["rows"]
    bench = benchmark_module("fidelity")
    assert set(variants) < set(bench.VARIANTS)
    per_model = 1 + len(variants) * len(bench.QUANTIZATIONS)
    assert len(rows) == per_model
    assert {r["model"] for r in rows} == {"stress tiny"}
    for r in rows:
        assert set(r["latency_ms"]) == {"1", "2"}
        assert 0.0 <= r["ranking_agreement"] <= 1.0
    assert "| stress tiny | int8 | smooth0.5+mse |" in Path(output + ".md").read_text()
    missing = str(tmp_path / "missing" / "fidelity")
    result = subprocess.run(
        [sys.executable, script, "--quick", "--output", missing],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: --output: folder {tmp_path / 'missing'} does not exist"
    )


def test_quick_fidelity_benchmark_variants_int16x8_and_dynamic(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    output = str(tmp_path / "fidelity")
    command = [sys.executable, str(root / "benchmarks" / "fidelity.py"), "--quick"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    options = ["--models", "random", "--variants", "mse", "--int16x8", "--dynamic"]
    options += ["--weight-rounding", "nearest", "gptq", "--quantizations", "int8"]
    options += ["--output", output]
    result = subprocess.run(command + options, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(Path(output + ".json").read_text())["rows"]
    assert [(r["file"], r["variant"]) for r in rows] == [
        ("float32", "-"),
        ("int8", "mse"),
        ("int8", "mse+gptq"),
        ("int16x8", "minmax"),
        ("dynamic", "-"),
        ("dynamic", "gptq"),
    ]
    assert all(0.0 <= r["max_centred_error"] for r in rows[1:])
    # Float activations between int8 matmuls: closer to the float model than static int8.
    assert rows[4]["mean_logit_error"] < rows[1]["mean_logit_error"]
    # The same dynamic-range graph with GPTQ-rounded weights follows the float model closer.
    assert rows[5]["mean_logit_error"] < rows[4]["mean_logit_error"]
    assert "| random tiny | int16x8 | minmax |" in Path(output + ".md").read_text()
    result = subprocess.run(
        [*command, "--variants", "kl", "--output", output],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 2 and "--variants: invalid choice: 'kl'" in result.stderr


def test_fidelity_benchmark_size_picks_the_probe_variant():
    bench = benchmark_module("fidelity")
    chosen = bench.models(["random"], False, np.random.default_rng(0), 1, 2, size="S/16")
    ((name, (model, calibration, held_out)),) = chosen.items()
    assert name == "random S/16"
    assert (model.hidden_size, model.num_layers, model.image_size) == (384, 12, (224, 224))
    assert calibration.shape == (1, 224, 224, 3) and held_out.shape == (2, 224, 224, 3)
