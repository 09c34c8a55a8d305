"""GPTQ weight rounding (export.weight_rounding): the converter's grid, exact LayerNorm folding,
and a dynamic-range file that holds the rounded weights unchanged."""

import numpy as np
import pytest

from export import tflite_reader
from export.classifier import PixelClassifier
from export.convert import convert
from export.weight_rounding import (
    dense_inputs,
    dense_layers,
    fold_norms,
    gptq_round,
    nearest_round,
    round_weights,
    weight_grid,
)

PREPROCESSING = {"mean": [127.5] * 3, "std": [127.5] * 3}


def test_gptq_rounding_keeps_the_converter_grid_and_lowers_the_output_error():
    rng = np.random.default_rng(0)
    # Correlated inputs of falling variance, as a layer's are.
    mixing = rng.normal(size=(64, 64)) * np.exp(-np.arange(64) / 8.0)[:, None]
    inputs = rng.normal(size=(1024, 64)) @ mixing
    kernel = rng.normal(size=(64, 16)) * rng.uniform(0.5, 2.0, size=16)
    spans = [(0, 24), (24, 64)]
    steps = weight_grid(kernel, spans)
    rounded = gptq_round(kernel, steps, inputs.T @ inputs)
    levels = rounded / steps
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-9)  # on the grid
    for start, stop in spans:  # each span's channel keeps its largest weight: same step
        np.testing.assert_allclose(np.abs(levels[start:stop]).max(axis=0), 127.0)
    nearest = nearest_round(kernel, steps)
    error_gptq = np.linalg.norm(inputs @ (rounded - kernel))
    error_nearest = np.linalg.norm(inputs @ (nearest - kernel))
    assert error_gptq < 0.75 * error_nearest  # 0.40 on this machine


def test_fold_norms_is_the_same_function(tiny_vit):
    model, images = tiny_vit
    folded = fold_norms(model)
    np.testing.assert_allclose(
        folded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-4
    )
    for layer in folded.layers:
        if layer.name.startswith("encoderblock_"):
            np.testing.assert_array_equal(layer.norm1.gamma.numpy(), 1.0)
            np.testing.assert_array_equal(layer.norm2.beta.numpy(), 0.0)


@pytest.fixture(scope="module")
def rounded(tiny_vit):
    model, images = tiny_vit
    return round_weights(model, images, "gptq")


def test_round_weights_puts_every_kernel_on_the_grid(tiny_vit, rounded):
    model, images = tiny_vit
    layers = dense_layers(rounded)
    assert layers[0][0].path.startswith("patch_encoder") and layers[-1][0].name == "head"
    for dense, spans in layers:
        kernel = np.asarray(dense.kernel.numpy(), np.float64)
        levels = kernel / weight_grid(kernel, spans)
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
        np.testing.assert_allclose(np.abs(levels).max(axis=0), 127.0, atol=1e-3)
    # Rounded, not replaced: the logits move by rounding amounts.
    difference = np.abs(rounded.predict(images, verbose=0) - model.predict(images, verbose=0))
    assert 0.0 < difference.max() < 0.1
    with pytest.raises(ValueError, match="method"):
        round_weights(model, images, "best")


def test_the_dynamic_range_file_holds_the_rounded_weights(rounded):
    content = convert(PixelClassifier(rounded, **PREPROCESSING), "dynamic")
    summary = tflite_reader.read_summary(content)
    from ai_edge_litert.tools import flatbuffer_utils

    flat = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    tensors = flat.subgraphs[0].tensors
    block = rounded.get_layer("encoderblock_0")
    expected = np.asarray(block.mlp_dense1.kernel.numpy(), np.float64).T  # (out, in) in the file
    matched = 0
    for i, info in enumerate(summary.tensors):
        if info.dtype != "int8" or tuple(info.shape) != expected.shape:
            continue
        values = np.frombuffer(bytes(flat.buffers[tensors[i].buffer].data), np.int8)
        values = values.reshape(expected.shape) * np.asarray(info.scale)[:, None]
        if np.allclose(values, expected, rtol=0, atol=1e-6):
            matched += 1
    assert matched == 1  # the converter kept GPTQ's rounding, not its own


def test_dense_inputs_wraps_the_calls_for_the_block_only(tiny_vit):
    model, images = tiny_vit
    before = model.predict(images, verbose=0)
    seen = []

    def zeros(dense, spans, x):
        seen.append(dense.path)
        return x * 0.0

    with dense_inputs(model, zeros):
        inside = model(images, training=False).numpy()
    assert "head" in seen[-1] and len(set(seen)) == len(dense_layers(model))
    # Every Dense reads zeros: the logits are the head's bias, the same for every image.
    np.testing.assert_allclose(
        inside, model.get_layer("head").bias.numpy()[None].repeat(len(images), 0), atol=1e-6
    )

    def failing(dense, spans, x):
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"), dense_inputs(model, failing):
        model(images, training=False)
    # The class's own call is back after the block, also after an error.
    assert all("call" not in vars(dense) for dense, _ in dense_layers(model))
    np.testing.assert_allclose(model.predict(images, verbose=0), before, atol=1e-6)


def test_the_projection_is_rounded_on_the_grid_of_the_folded_kernel(tiny_vit):
    # PixelClassifier divides the projection's rows by each channel's std; given that std,
    # the rounded kernel lands on the grid of the kernel the file holds.
    model, images = tiny_vit
    mean, std = [120.0, 110.0, 100.0], [40.0, 70.0, 127.5]

    def folded_levels(rounded):
        graph = PixelClassifier(rounded, mean=mean, std=std)
        kernel = np.asarray(graph.vit.get_layer("patch_encoder").projection.kernel.numpy())
        return kernel.astype(np.float64) / weight_grid(kernel.astype(np.float64), None)

    levels = folded_levels(round_weights(model, images, "gptq", std=std))
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    np.testing.assert_allclose(np.abs(levels).max(axis=0), 127.0, atol=1e-3)
    unaware = folded_levels(round_weights(model, images, "gptq"))
    assert np.abs(unaware - np.round(unaware)).max() > 0.1  # off the grid: rounded again
