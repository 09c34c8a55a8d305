"""keras_vit.inference and the model's inference call: the class-token-only last block
equals the full functional graph; `model.fit` runs the full graph."""

import keras
import numpy as np
import pytest
from conftest import TINY

import keras_vit
from keras_vit import layers
from keras_vit.inference import predict_function
from keras_vit.model import VisionTransformer


@pytest.mark.parametrize("jit_compile", [True, False])
def test_predict_function_equals_the_model(jit_compile, rng):
    model = keras_vit.ViT(num_classes=5, seed=0, **TINY)
    for variable in model.get_layer("head").weights:
        variable.assign(rng.normal(0.0, 0.5, variable.shape).astype("float32"))
    predict = predict_function(model, jit_compile=jit_compile)
    for batch in (1, 3):
        images = rng.uniform(-1, 1, (batch, 32, 32, 3)).astype("float32")
        np.testing.assert_allclose(predict(images), full_graph(model, images), atol=1e-5)
    assert predict.jit_compile is jit_compile


def test_predict_function_bad_input():
    model = keras_vit.ViT(num_classes=5, seed=0, **TINY)
    predict = predict_function(model)
    with pytest.raises(ValueError, match=r"Expected images of shape \(batch, 32, 32, 3\)"):
        predict(np.zeros((1, 16, 16, 3), np.float32))
    with pytest.raises(TypeError, match="Expected a keras_vit VisionTransformer"):
        predict_function(keras.Sequential([keras.layers.Dense(2)]))


def full_graph(model, images):
    """The functional graph as built, every token through every block."""
    return keras.ops.convert_to_numpy(super(VisionTransformer, model).call(images, training=False))


def spy_on_blocks(monkeypatch) -> list:
    """Records `(block name, class_token_only)` for every TransformerBlock call (or trace)."""
    calls = []
    block_call = layers.TransformerBlock.call

    def spy(self, x, *args, class_token_only=False, **kwargs):
        calls.append((self.name, class_token_only))
        return block_call(self, x, *args, class_token_only=class_token_only, **kwargs)

    monkeypatch.setattr(layers.TransformerBlock, "call", spy)
    return calls


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"pooling": "gap"},
        {"representation_size": 16, "classifier_activation": "softmax"},
        {"include_top": False},
        {"dtype": "mixed_bfloat16"},
    ],
    ids=["token", "gap", "pre_logits-softmax", "features", "mixed"],
)
def test_inference_call_equals_the_functional_graph(overrides, rng, monkeypatch):
    """The model's layers in order; with token pooling the last block computes token 0 only."""
    model = keras_vit.ViT(**{"num_classes": 5, "seed": 0, **TINY, **overrides})
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.2, weight.shape).astype("float32"))
    images = rng.uniform(-1, 1, (3, 32, 32, 3)).astype("float32")
    expected = full_graph(model, images)
    calls = spy_on_blocks(monkeypatch)
    actual = keras.ops.convert_to_numpy(model(images, training=False))
    atol = 2e-2 if "dtype" in overrides else 1e-5
    np.testing.assert_allclose(actual, expected, atol=atol)
    token = model.pooling == "token"
    assert calls == [("encoderblock_0", False), ("encoderblock_1", token)]
    calls.clear()
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)), expected, atol=atol)
    assert calls == [("encoderblock_0", False), ("encoderblock_1", token)]


def test_fit_runs_the_full_graph_predict_and_evaluate_the_class_token(rng, monkeypatch):
    model = keras_vit.ViT(num_classes=5, seed=0, **TINY)
    images = rng.uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 5, 8)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    calls = spy_on_blocks(monkeypatch)
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert set(calls) == {("encoderblock_0", False), ("encoderblock_1", False)}
    calls.clear()
    predicted = model.predict(images, batch_size=4, verbose=0)
    assert set(calls) == {("encoderblock_0", False), ("encoderblock_1", True)}
    np.testing.assert_allclose(predicted, full_graph(model, images), atol=1e-5)
    calls.clear()
    model.evaluate(images, labels, batch_size=4, verbose=0)
    assert set(calls) == {("encoderblock_0", False), ("encoderblock_1", True)}


def test_train_class_token_only_fits_on_the_class_token_with_the_same_gradients(rng, monkeypatch):
    import tensorflow as tf

    model = keras_vit.ViT(num_classes=5, seed=0, train_class_token_only=True, **TINY)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.2, weight.shape).astype("float32"))
    images = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 5, 4)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_and_gradients(forward):
        with tf.GradientTape() as tape:
            loss = loss_fn(labels, forward(images, training=True))
        return loss, tape.gradient(loss, model.trainable_weights)

    loss, gradients = loss_and_gradients(model)
    full_loss, full_gradients = loss_and_gradients(super(VisionTransformer, model).call)
    np.testing.assert_allclose(loss, full_loss, rtol=1e-5)
    assert len(gradients) == len(full_gradients) > 0
    for weight, grad, full in zip(model.trainable_weights, gradients, full_gradients, strict=True):
        np.testing.assert_allclose(grad, full, atol=1e-5, err_msg=weight.path)

    model.compile("adam", loss_fn)
    calls = spy_on_blocks(monkeypatch)
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    assert set(calls) == {("encoderblock_0", False), ("encoderblock_1", True)}
    clone = VisionTransformer.from_config(model.get_config())
    assert clone.train_class_token_only is True


def test_train_class_token_only_bad_values():
    with pytest.raises(ValueError, match=r"needs pooling='token'.*pooling='gap'"):
        keras_vit.ViT(num_classes=5, pooling="gap", train_class_token_only=True, **TINY)
    with pytest.raises(ValueError, match="Expected `train_class_token_only` to be True or False"):
        keras_vit.ViT(num_classes=5, train_class_token_only="yes", **TINY)


def test_forward_with_defaults_is_the_functional_graph(rng, monkeypatch):
    model = keras_vit.ViT(num_classes=5, seed=0, representation_size=16, **TINY)
    for weight in model.weights:
        weight.assign(rng.normal(0.0, 0.2, weight.shape).astype("float32"))
    images = rng.uniform(-1, 1, (3, 32, 32, 3)).astype("float32")
    calls = spy_on_blocks(monkeypatch)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.forward(images)), full_graph(model, images)
    )
    assert calls == [("encoderblock_0", False), ("encoderblock_1", False)] * 2


def test_forward_class_token_only_last_needs_token_pooling(rng):
    model = keras_vit.ViT(num_classes=5, pooling="gap", **TINY)
    images = rng.uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    with pytest.raises(ValueError, match=r"class_token_only_last=True. needs pooling='token'"):
        model.forward(images, class_token_only_last=True)
    with pytest.raises(ValueError, match="Expected `form` to be one of"):
        model.forward(images, form="coral")


def test_forward_returns_every_blocks_attention_scores(rng):
    model = keras_vit.ViT(num_classes=5, seed=0, **TINY)
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    outputs, scores = model.forward(images, return_attention_scores=True)
    np.testing.assert_allclose(outputs, full_graph(model, images), atol=1e-6)
    assert [tuple(s.shape) for s in scores] == [(2, 2, 17, 17)] * 2
    np.testing.assert_allclose(keras.ops.sum(scores[1], axis=-1), 1.0, atol=1e-5)
    _, last_only = model.forward(images, class_token_only_last=True, return_attention_scores=True)
    assert tuple(last_only[1].shape) == (2, 2, 1, 17)
    np.testing.assert_allclose(last_only[1], scores[1][:, :, :1], atol=1e-5)
