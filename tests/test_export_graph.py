"""The export graphs compute the checkpoint model's function on raw pixels."""

import keras
import numpy as np
import pytest

import keras_vit
from export.edge import EdgeTPUClassifier
from export.graph import PixelClassifier, block_forward, fold_normalisation, layer_norm

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
    [{}, {"pooling": "gap"}, {"representation_size": 16, "gelu": "erf"}],
    ids=["token", "gap", "pre_logits-erf"],
)
def test_pixel_classifier_matches_the_model(tiny_config, rng, overrides):
    model = keras_vit.ViT(num_classes=5, **{**tiny_config, **overrides})
    randomize(model, rng)
    pixels = rng.uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
    exported = PixelClassifier(model, MEAN, STD)
    actual = keras.ops.convert_to_numpy(exported(pixels))
    np.testing.assert_allclose(actual, reference(model, pixels), atol=2e-5)


def test_block_forward_and_layer_norm_match_the_layers(tiny_config, rng):
    model = keras_vit.ViT(num_classes=5, **tiny_config)
    randomize(model, rng)
    block = model.get_layer("encoderblock_0")
    x = rng.normal(size=(2, 17, 32)).astype("float32")
    np.testing.assert_allclose(layer_norm(block.norm1, x), block.norm1(x), atol=1e-5)
    np.testing.assert_allclose(block_forward(block, x), block(x, training=False), atol=1e-5)
    np.testing.assert_allclose(
        block_forward(block, x, class_token_only=True),
        block(x, training=False, class_token_only=True),
        atol=1e-5,
    )


@pytest.mark.parametrize("overrides", [{}, {"pooling": "gap"}], ids=["token", "gap"])
def test_edgetpu_classifier_matches_the_model(tiny_config, rng, overrides):
    # The model uses the tanh GELU; the Edge TPU graph its logistic form, the same function.
    model = keras_vit.ViT(num_classes=5, **{**tiny_config, **overrides})
    randomize(model, rng)
    pixels = rng.uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    edge = EdgeTPUClassifier(model, MEAN, STD)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(edge(pixels)), reference(model, pixels), atol=2e-5
    )


def test_export_graphs_need_a_classifier(tiny_config):
    features = keras_vit.ViT(include_top=False, **tiny_config)
    with pytest.raises(ValueError, match="has no classification head"):
        PixelClassifier(features, MEAN, STD)
    sigmoid = keras_vit.ViT(num_classes=2, classifier_activation="sigmoid", **tiny_config)
    with pytest.raises(ValueError, match="expects logits or softmax"):
        EdgeTPUClassifier(sigmoid, MEAN, STD)
