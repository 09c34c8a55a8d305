"""MLP unit spans (export.mlp_spans): the binning, the same function in Keras and TFLite,
one FULLY_CONNECTED pair per span, and what the split does for int8 on the stress model."""

import itertools

import numpy as np
import pytest
from helpers import benchmark_module

from export import analysis, edgetpu_check, fidelity, smoothing, tflite_fidelity, tflite_reader
from export.classifier import PixelClassifier, rebuild
from export.convert import convert
from export.mlp_spans import split_mlps, unit_spans

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
PREPROCESSING = {"mean": [127.5] * 3, "std": [127.5] * 3}


def test_unit_spans_sort_the_units_and_cut_equal_log_bins():
    ranges = np.array([1000.0, 2.0, 300.0, 0.5, 20.0, 3.0, 1e-6])
    # Three bins of a factor 10 each below the largest range; 1e-6 is under the floor.
    order, spans = unit_spans(ranges, max_spans=3, floor=1e-3)
    assert order.tolist() == [0, 2, 4, 5, 1, 3, 6]
    assert spans == [(0, 2), (2, 3), (3, 7)]
    # A bin with no unit gives no span.
    order, spans = unit_spans(np.array([1.0, 0.9, 0.002]), max_spans=3, floor=1e-3)
    assert spans == [(0, 2), (2, 3)]


def test_unit_spans_one_span_when_asked_or_without_range():
    ranges = np.array([5.0, 1.0, 0.01])
    assert unit_spans(ranges, 1)[1] == [(0, 3)]
    assert unit_spans(np.zeros(4), 4)[1] == [(0, 4)]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "4"])
def test_unit_spans_refuse_a_bad_count(bad):
    with pytest.raises(ValueError, match="max_spans"):
        unit_spans(np.ones(3), bad)


@pytest.fixture(scope="module")
def stressed(tiny_vit):
    """The tiny stress model with its LayerNorm outputs smoothed, and calibration images."""
    model, _ = tiny_vit
    calibration = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    normalised = (calibration.astype(np.float32) - 127.5) / 127.5
    model = smoothing.smooth(benchmark_module("stress").stress(model, seed=0), normalised, 1.0)
    return model, calibration, normalised


def fully_connected(content: bytes) -> int:
    return tflite_reader.read_summary(content).op_histogram().get("FULLY_CONNECTED", 0)


def test_split_mlps_compute_the_same_function_with_one_op_pair_per_span(stressed):
    model, _, normalised = stressed
    split = split_mlps(model, normalised, max_spans=4)
    blocks = [layer for layer in split.layers if layer.name.startswith("encoderblock_")]
    spans = [block.mlp_spans for block in blocks]
    assert all(len(s) > 1 and s[0][0] == 0 and s[-1][1] == TINY["mlp_dim"] for s in spans)
    assert all(a[1] == b[0] for s in spans for a, b in itertools.pairwise(s))  # contiguous
    # Keras (which ignores the spans) and the float32 file (which runs them) agree.
    np.testing.assert_allclose(split(normalised), model(normalised), atol=1e-5, rtol=1e-5)
    pixels = np.random.default_rng(3).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    reference = tflite_fidelity.keras_logits(model, pixels, PREPROCESSING)
    files = [convert(PixelClassifier(m, **PREPROCESSING), "float32") for m in (model, split)]
    np.testing.assert_allclose(tflite_fidelity.logits(files[1], pixels), reference, atol=1e-4)
    # Two FULLY_CONNECTED ops per span instead of two per MLP: the spans survive the
    # export wrapper's rebuild.
    extra = sum(2 * (len(s) - 1) for s in spans)
    assert fully_connected(files[1]) == fully_connected(files[0]) + extra
    assert [b.mlp_spans for b in rebuild(split).layers if b.name.startswith("encoderblock_")] == (
        spans
    )
    # Hidden units sorted by falling range: the permutation was applied.
    recorded = smoothing.output_ranges(split, normalised, [b.mlp_dense1 for b in blocks])
    for values in recorded.values():
        assert np.all(np.diff(values) <= 1e-6 * values.max())


def test_split_mlps_narrow_the_int8_error_on_the_stress_model(stressed):
    model, calibration, normalised = stressed
    held_out = np.random.default_rng(4).integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    reference = tflite_fidelity.keras_logits(model, held_out, PREPROCESSING)
    split = split_mlps(model, normalised, max_spans=4)
    errors = {}
    for name, m in (("one MLP", model), ("spans", split)):
        graph = PixelClassifier(m, **PREPROCESSING)
        logits = tflite_fidelity.logits(convert(graph, "dynamic"), held_out)
        errors[name] = fidelity.logit_error(reference, logits)["mean"]
    assert errors["spans"] < 0.85 * errors["one MLP"], errors
    # The full-int8 file stays integer-only.
    content = convert(PixelClassifier(split, **PREPROCESSING), "int8", calibration)
    assert not analysis.float_compute_ops(tflite_reader.read_summary(content))


def test_split_mlps_edgetpu_graph_maps_every_op(stressed):
    model, calibration, normalised = stressed
    split = split_mlps(model, normalised, max_spans=3)
    graph = PixelClassifier(split, **PREPROCESSING, profile="edgetpu")
    report = edgetpu_check.check(tflite_reader.read_summary(convert(graph, "int8", calibration)))
    assert report.first_unsupported is None, report.unsupported_names
