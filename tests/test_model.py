import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import check_config_roundtrip, check_saving_roundtrip, constructor_params

import keras_vit
from keras_vit.model import VisionTransformer


def randomize(model, rng):
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.2, size=weight.shape).astype("float32"))


def test_builds_a_functional_model(tiny_config):
    model = keras_vit.ViT(num_classes=10, **tiny_config)
    assert isinstance(model, keras.Model) and isinstance(model, VisionTransformer)
    names = [layer.name for layer in model.layers]
    assert names == [
        "images",
        "patches",
        "patch_encoder",
        "embedding_dropout",
        "encoderblock_0",
        "encoderblock_1",
        "encoder_norm",
        "pooling",
        "head",
    ]
    assert model(np.zeros((3, 32, 32, 3))).shape == (3, 10)


def test_vit_signature_is_the_class_arguments_plus_weights(tiny_config):
    # One argument list: `ViT` forwards to the class, and shows the class's signature.
    builder = inspect.signature(keras_vit.ViT).parameters
    assert constructor_params(VisionTransformer) == set(builder) - {"weights"}
    assert list(builder)[:2] == ["image_size", "patch_size"]
    positional = keras_vit.ViT(32, 8, 32, 2, 2, 64, num_classes=3)
    assert positional.get_config() == keras_vit.ViT(num_classes=3, **tiny_config).get_config()


def test_initial_head_is_zero_so_initial_logits_are_zero(tiny_config, rng):
    model = keras_vit.ViT(num_classes=5, **tiny_config)
    logits = keras.ops.convert_to_numpy(model(rng.normal(size=(2, 32, 32, 3))))
    np.testing.assert_array_equal(logits, 0.0)


def test_token_and_gap_pooling(tiny_config, rng):
    images = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    token = keras_vit.ViT(num_classes=4, pooling="token", **tiny_config)
    gap = keras_vit.ViT(num_classes=4, pooling="gap", **tiny_config)
    assert token.get_layer("patch_encoder").position_embedding.shape == (1, 17, 32)
    assert gap.get_layer("patch_encoder").position_embedding.shape == (1, 16, 32)
    assert token(images).shape == gap(images).shape == (2, 4)
    assert gap.count_params() == token.count_params() - 32 - 32  # no class token, one less position


def test_include_top_false_returns_pooled_features(tiny_config, rng):
    images = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    model = keras_vit.ViT(include_top=False, **tiny_config)
    assert model(images).shape == (2, 32)
    with_repr = keras_vit.ViT(include_top=False, representation_size=24, **tiny_config)
    features = keras.ops.convert_to_numpy(with_repr(images))
    assert features.shape == (2, 24) and np.abs(features).max() <= 1.0  # tanh


def test_pooled_features_are_the_encoder_output(tiny_config, rng):
    images = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    model = keras_vit.ViT(pooling="gap", include_top=False, **tiny_config)
    randomize(model, rng)
    tokens = keras.Model(model.input, model.get_layer("encoder_norm").output)(images)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(images)),
        keras.ops.convert_to_numpy(tokens).mean(axis=1),
        atol=1e-5,
    )


def test_non_square_images_end_to_end(tiny_config, rng, tmp_path):
    config = dict(tiny_config, image_size=(24, 40))
    model = keras_vit.ViT(num_classes=3, classifier_activation="softmax", **config)
    assert model.grid_size == (3, 5)
    assert model.get_layer("patch_encoder").position_embedding.shape == (1, 16, 32)
    randomize(model, rng)
    images = rng.normal(size=(2, 24, 40, 3)).astype("float32")
    probs = keras.ops.convert_to_numpy(model(images))
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(images, np.array([0, 2]), epochs=1, verbose=0)
    check_saving_roundtrip(model, images, tmp_path)


def test_representation_layer_and_softmax(tiny_config, rng):
    model = keras_vit.ViT(
        num_classes=7, representation_size=16, classifier_activation="softmax", **tiny_config
    )
    assert model.get_layer("pre_logits").kernel.shape == (32, 16)
    assert model.get_layer("head").kernel.shape == (16, 7)
    out = keras.ops.convert_to_numpy(model(rng.normal(size=(1, 32, 32, 3))))
    np.testing.assert_allclose(out, np.full((1, 7), 1 / 7), atol=1e-6)


def test_drop_path_grows_linearly_with_depth(tiny_config):
    model = keras_vit.ViT(drop_path_rate=0.3, **dict(tiny_config, num_layers=4))
    rates = [model.get_layer(f"encoderblock_{i}").drop_path_rate for i in range(4)]
    np.testing.assert_allclose(rates, [0.0, 0.1, 0.2, 0.3])


def test_dropout_and_drop_path_only_change_training_outputs(tiny_config, rng):
    model = keras_vit.ViT(num_classes=4, dropout=0.2, drop_path_rate=0.2, seed=1, **tiny_config)
    randomize(model, rng)
    images = rng.normal(size=(4, 32, 32, 3)).astype("float32")
    first = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_array_equal(first, keras.ops.convert_to_numpy(model(images)))
    trained = keras.ops.convert_to_numpy(model(images, training=True))
    assert np.abs(trained - first).max() > 1e-3


def test_seed_makes_initialisation_reproducible(tiny_config):
    a = keras_vit.ViT(seed=7, **tiny_config).get_weights()
    b = keras_vit.ViT(seed=7, **tiny_config).get_weights()
    c = keras_vit.ViT(seed=8, **tiny_config).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_mixed_precision_policy_keeps_float32_logits(tiny_config, rng):
    model = keras_vit.ViT(num_classes=3, dtype="mixed_bfloat16", **tiny_config)
    assert model.get_layer("encoderblock_0").compute_dtype == "bfloat16"
    assert model.get_layer("encoderblock_0").attention.query.kernel.dtype == "float32"
    assert model(rng.normal(size=(1, 32, 32, 3))).dtype == "float32"


def test_model_config_roundtrip(tiny_config):
    model = keras_vit.ViT(
        num_classes=3,
        pooling="gap",
        representation_size=8,
        dropout=0.1,
        gelu="erf",
        seed=3,
        name="custom",
        **dict(tiny_config, image_size=(24, 32)),
    )
    check_config_roundtrip(model)


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_model_saving_roundtrip(tiny_config, rng, tmp_path, pooling):
    model = keras_vit.ViT(num_classes=3, pooling=pooling, representation_size=8, **tiny_config)
    randomize(model, rng)
    check_saving_roundtrip(model, rng.normal(size=(2, 32, 32, 3)).astype("float32"), tmp_path)
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(restored, VisionTransformer) and restored.pooling == pooling


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(image_size=30), "image_size=30x30, patch_size=8"),
        (dict(image_size=(32, 36)), "image_size=32x36, patch_size=8"),
        (dict(num_heads=3), "hidden_size=32, num_heads=3"),
        (dict(pooling="max"), "pooling='max'"),
        (dict(hidden_size=0), "hidden_size=0"),
        (dict(num_layers=-1), "num_layers=-1"),
        (dict(patch_size=0), "patch_size=0"),
        (dict(image_size=(32,)), r"image_size=\(32,\)"),
        (dict(num_classes=0), "num_classes=0"),
        (dict(dropout=1.0), "dropout=1.0"),
        (dict(gelu="relu"), "gelu='relu'"),
    ],
)
def test_bad_arguments_raise_one_clear_line(tiny_config, overrides, match):
    with pytest.raises(ValueError, match=match) as info:
        keras_vit.ViT(**dict(tiny_config, **overrides))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("shape", [(2, 16, 16, 3), (2, 32, 32, 1), (32, 32, 3)])
def test_wrong_image_shape_at_call_time(tiny_config, shape):
    model = keras_vit.ViT(num_classes=2, **tiny_config)
    images = np.zeros(shape, "float32")
    for call in (model, lambda x: model.predict(x, verbose=0)):
        with pytest.raises(
            ValueError, match=r"Expected images of shape \(batch, 32, 32, 3\)"
        ) as info:
            call(images)
        assert "\n" not in str(info.value)


# === Bad input and input dtypes ===============================================================


@pytest.mark.parametrize(
    "overrides,match",
    [
        (dict(dtype="int32"), "dtype='int32'"),
        (dict(dtype="not-a-dtype"), "dtype='not-a-dtype'"),
        (dict(seed="abc"), "seed='abc'"),
        (dict(seed=1.5), "seed=1.5"),
        (dict(include_preprocessing="yes"), "include_preprocessing='yes'"),
    ],
)
def test_bad_dtype_seed_and_flags_raise_one_line(tiny_config, overrides, match):
    with pytest.raises(ValueError, match=match) as info:
        keras_vit.ViT(**dict(tiny_config, **overrides))
    assert "\n" not in str(info.value)


def test_nested_list_input_is_converted(tiny_config, rng):
    model = keras_vit.ViT(num_classes=3, seed=0, **tiny_config)
    randomize(model, rng)
    images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(images.tolist())), expected, atol=1e-6
    )
    with pytest.raises(ValueError, match=r"Expected images of shape") as info:
        model([[0.0, 1.0]])
    assert "\n" not in str(info.value)


def test_integer_images_are_refused_by_a_float_model(tiny_config, rng):
    model = keras_vit.ViT(num_classes=3, **tiny_config)
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pixels = rng.integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    calls = {
        "call": lambda x: model(x),
        "predict": lambda x: model.predict(x, verbose=0),
        "evaluate": lambda x: model.evaluate(x, np.zeros(2), verbose=0),
        "dataset": lambda x: model.predict(
            tf.data.Dataset.from_tensor_slices(x).batch(2), verbose=0
        ),
        "int list": lambda x: model(x.astype(int).tolist()),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"include_preprocessing=True") as info:
            call(pixels)
        assert "\n" not in str(info.value), name
        assert "(x - 127.5) / 127.5" in str(info.value)


def test_float_inputs_still_work_everywhere(tiny_config, rng):
    model = keras_vit.ViT(num_classes=3, dtype="mixed_bfloat16", **tiny_config)
    images = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    assert model.predict(images, verbose=0).shape == (4, 3)
    assert model(images.astype("float16")).shape == (4, 3)
    dataset = tf.data.Dataset.from_tensor_slices((images, np.arange(4) % 3)).batch(2)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(dataset, epochs=1, verbose=0)


# === include_preprocessing ====================================================================


def test_include_preprocessing_takes_pixels(tiny_config, rng, tmp_path):
    plain = keras_vit.ViT(num_classes=3, **tiny_config)
    randomize(plain, rng)
    model = keras_vit.ViT(num_classes=3, include_preprocessing=True, **tiny_config)
    model.set_weights(plain.get_weights())
    assert model.layers[1].name == "preprocessing" and not model.layers[1].weights
    pixels = rng.integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    scaled = (pixels.astype("float32") - 127.5) / 127.5
    expected = keras.ops.convert_to_numpy(plain(scaled))
    for images in (pixels, pixels.astype("float32")):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(images)), expected)
    # predict runs a compiled graph: the same to float rounding.
    np.testing.assert_allclose(model.predict(pixels, verbose=0), expected, atol=1e-6)
    check_config_roundtrip(model)
    check_saving_roundtrip(model, pixels, tmp_path)
    restored = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert restored.include_preprocessing


def test_include_preprocessing_under_mixed_precision(tiny_config, rng):
    model = keras_vit.ViT(
        num_classes=3, include_preprocessing=True, dtype="mixed_bfloat16", **tiny_config
    )
    assert model.get_layer("preprocessing").compute_dtype == "float32"
    pixels = rng.integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    assert model(pixels).dtype == "float32"


# === compile: logits need a from_logits loss ==================================================


@pytest.mark.parametrize(
    "loss",
    [
        "sparse_categorical_crossentropy",
        "categorical_crossentropy",
        "SparseCategoricalCrossentropy",
        keras.losses.SparseCategoricalCrossentropy(),
        keras.losses.CategoricalCrossentropy(from_logits=False),
        keras.losses.sparse_categorical_crossentropy,
    ],
)
def test_compile_refuses_a_probability_loss_on_logits(tiny_config, loss):
    model = keras_vit.ViT(num_classes=3, **tiny_config)
    for call in (lambda: model.compile("adam", loss), lambda: model.compile(loss=loss)):
        with pytest.raises(ValueError, match=r"from_logits=True") as info:
            call()
        assert "\n" not in str(info.value)
    softmax = keras_vit.ViT(num_classes=3, classifier_activation="softmax", **tiny_config)
    softmax.compile("adam", loss)  # probabilities: the loss fits


def test_logits_model_learns_with_from_logits_loss(tiny_config, rng, tmp_path):
    model = keras_vit.ViT(num_classes=3, seed=0, **tiny_config)
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    images = rng.uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    labels = np.arange(8) % 3
    history = model.fit(images, labels, epochs=5, batch_size=8, verbose=0).history["loss"]
    assert history[-1] < history[0] - 0.05
    model.save(tmp_path / "compiled.keras")
    restored = keras.saving.load_model(tmp_path / "compiled.keras", safe_mode=True)
    assert restored.compiled and restored.loss.get_config()["from_logits"]
