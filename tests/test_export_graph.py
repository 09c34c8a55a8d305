"""The export graph computes the checkpoint model's function on raw pixels."""

import importlib
import sys

import keras
import numpy as np
import pytest

import keras_vit
from export.classifier import PixelClassifier, fold_normalisation

MEAN, STD = [127.5] * 3, [127.5] * 3


def randomize(model, rng, scale=0.2):
    for weight in model.weights:
        weight.assign(rng.normal(scale=scale, size=weight.shape).astype("float32"))


def reference(model, pixels):
    """softmax(model((pixels - 127.5) / 127.5)), the checkpoint contract."""
    logits = model((pixels - 127.5) / 127.5)
    return keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))


def test_fold_normalisation_matches_normalising_first(rng):
    kernel = rng.normal(size=(4 * 4 * 3, 5)).astype("float32")
    bias = rng.normal(size=(5,)).astype("float32")
    mean, std = [120.0, 110.0, 100.0], [60.0, 50.0, 40.0]
    pixels = rng.uniform(0, 255, size=(7, 4 * 4 * 3))
    # Rows are (row, column, channel): channel = row index mod 3.
    normalised = (pixels - np.tile(mean, 16)) / np.tile(std, 16)
    folded_kernel, folded_bias = fold_normalisation(kernel, bias, mean, std)
    np.testing.assert_allclose(
        pixels @ folded_kernel + folded_bias, normalised @ kernel + bias, rtol=1e-4, atol=1e-4
    )
    with pytest.raises(ValueError, match="Expected 3 std values"):
        fold_normalisation(kernel, bias, mean, std[:2])


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pooling": "gap"},
        {"representation_size": 16, "gelu": "erf"},
        {"classifier_activation": "softmax"},
    ],
    ids=["token", "gap", "pre_logits-erf", "softmax"],
)
def test_pixel_classifier_matches_the_model(tiny_config, rng, overrides):
    model = keras_vit.ViT(num_classes=5, **{**tiny_config, **overrides})
    randomize(model, rng)
    pixels = rng.uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
    exported = PixelClassifier(model, MEAN, STD)
    actual = keras.ops.convert_to_numpy(exported(pixels))
    expected = reference(model, pixels)
    if model.classifier_activation == "softmax":  # the model's outputs are probabilities
        expected = keras.ops.convert_to_numpy(model((pixels - 127.5) / 127.5))
    np.testing.assert_allclose(actual, expected, atol=2e-5)
    np.testing.assert_allclose(actual.sum(axis=-1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "overrides",
    [{}, {"pooling": "gap"}, {"representation_size": 16}],
    ids=["token", "gap", "pre_logits"],
)
def test_edgetpu_classifier_matches_the_model(tiny_config, rng, overrides):
    # The model uses the tanh GELU; the Edge TPU graph its logistic form, the same function.
    model = keras_vit.ViT(num_classes=5, **{**tiny_config, **overrides})
    randomize(model, rng)
    pixels = rng.uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    edge = PixelClassifier(model, MEAN, STD, profile="edgetpu")
    assert edge.vit.gelu == "logistic" and edge.form == "edgetpu"
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(edge(pixels)), reference(model, pixels), atol=2e-5
    )


def test_class_row_norm_is_block_0_norm1_of_the_class_row(tiny_config, rng):
    model = keras_vit.ViT(num_classes=5, **tiny_config)
    randomize(model, rng)
    exported = PixelClassifier(model, MEAN, STD)
    encoder = model.get_layer("patch_encoder")
    row = keras.ops.convert_to_numpy(encoder.class_token + encoder.position_embedding[:, :1])
    block = model.get_layer("encoderblock_0")
    expected = keras.ops.convert_to_numpy(block.norm1(row))[0, 0]
    np.testing.assert_allclose(exported.class_row_norm, expected, atol=1e-6)
    gap = keras_vit.ViT(num_classes=5, pooling="gap", **tiny_config)
    assert PixelClassifier(gap, MEAN, STD).class_row_norm is None


def test_export_graphs_need_a_classifier_and_a_known_profile(tiny_config):
    features = keras_vit.ViT(include_top=False, **tiny_config)
    with pytest.raises(ValueError, match="has no classification head"):
        PixelClassifier(features, MEAN, STD)
    sigmoid = keras_vit.ViT(num_classes=2, classifier_activation="sigmoid", **tiny_config)
    with pytest.raises(ValueError, match="expects logits or softmax"):
        PixelClassifier(sigmoid, MEAN, STD, profile="edgetpu")
    model = keras_vit.ViT(num_classes=2, **tiny_config)
    with pytest.raises(ValueError, match="Unknown profile 'coral'; expected 'default' or"):
        PixelClassifier(model, MEAN, STD, profile="coral")


def test_erf_gelu_warns_on_the_edgetpu_profile(tiny_config, caplog):
    model = keras_vit.ViT(num_classes=2, gelu="erf", **tiny_config)
    with caplog.at_level("WARNING", logger="export.classifier"):
        PixelClassifier(model, MEAN, STD, profile="edgetpu")
    assert "exact (erf) GELU" in caplog.text


@pytest.mark.parametrize("module", ["export.graph", "export.edge"])
def test_deprecated_modules_warn_and_alias_the_classifier(module):
    sys.modules.pop(module, None)
    with pytest.warns(DeprecationWarning, match=f"{module} is deprecated"):
        alias = importlib.import_module(module)
    if module == "export.graph":
        assert alias.PixelClassifier is PixelClassifier
        assert alias.fold_normalisation is fold_normalisation
    else:
        assert issubclass(alias.EdgeTPUClassifier, PixelClassifier)


def test_deprecated_graph_helpers_are_the_tflite_form(tiny_config, rng):
    with pytest.warns(DeprecationWarning):
        sys.modules.pop("export.graph", None)
        graph = importlib.import_module("export.graph")
    model = keras_vit.ViT(num_classes=5, **tiny_config)
    randomize(model, rng)
    block = model.get_layer("encoderblock_0")
    x = rng.normal(size=(2, 17, 32)).astype("float32")
    np.testing.assert_allclose(graph.layer_norm(block.norm1, x), block.norm1(x), atol=1e-5)
    np.testing.assert_allclose(
        graph.block_forward(block, x, class_token_only=True),
        block(x, training=False, class_token_only=True),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="no longer supported"):
        graph.block_forward(block, x, normed=x)


@pytest.mark.parametrize("profile", ["default", "edgetpu"])
def test_export_graph_traces_as_for_conversion(tiny_config, rng, profile):
    import tensorflow as tf

    model = keras_vit.ViT(num_classes=5, **tiny_config)
    randomize(model, rng)
    exported = PixelClassifier(model, MEAN, STD, profile=profile)
    pixels = rng.uniform(0, 255, size=(1, 32, 32, 3)).astype("float32")
    traced = tf.function(exported.call, input_signature=[tf.TensorSpec((1, 32, 32, 3))])
    np.testing.assert_allclose(traced(pixels), reference(model, pixels), atol=2e-5)
