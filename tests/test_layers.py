import keras
import numpy as np
import pytest
from helpers import check_config_roundtrip, check_saving_roundtrip, wrap_layer

from keras_vit import layers


def numpy_patches(images: np.ndarray, patch: int) -> np.ndarray:
    """Reference: loops over rows, then columns; flattens each patch in (row, col, ch)."""
    batch, height, width, _ = images.shape
    out = []
    for b in range(batch):
        rows = []
        for i in range(0, height, patch):
            for j in range(0, width, patch):
                rows.append(images[b, i : i + patch, j : j + patch, :].reshape(-1))
        out.append(np.stack(rows))
    return np.stack(out)


@pytest.mark.parametrize("shape,patch", [((2, 8, 8, 3), 4), ((1, 8, 12, 3), 4), ((3, 6, 9, 1), 3)])
def test_patches_match_numpy_loop(shape, patch, rng):
    images = rng.normal(size=shape).astype("float32")
    actual = keras.ops.convert_to_numpy(layers.Patches(patch)(images))
    np.testing.assert_array_equal(actual, numpy_patches(images, patch))


def test_patches_flatten_like_a_conv_kernel(rng):
    """A Dense over patches with a reshaped conv kernel equals the strided conv."""
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    kernel = rng.normal(size=(4, 4, 3, 5)).astype("float32")
    conv = keras.ops.conv(images, kernel, strides=4, padding="valid")
    dense = keras.ops.matmul(layers.Patches(4)(images), kernel.reshape(-1, 5))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(dense),
        keras.ops.convert_to_numpy(conv).reshape(2, 6, 5),
        atol=1e-5,
    )


def test_patches_rejects_indivisible_size():
    with pytest.raises(ValueError, match=r"divisible by patch_size=4.*10x8"):
        layers.Patches(4)(np.zeros((1, 10, 8, 3)))


@pytest.mark.parametrize(
    "layer",
    [
        lambda: layers.MultiHeadSelfAttention(num_heads=4),
        lambda: layers.TransformerBlock(num_heads=4, mlp_dim=8),
    ],
    ids=["attention", "block"],
)
def test_heads_must_split_the_width(layer):
    with pytest.raises(ValueError, match=r"hidden_size divisible by num_heads.*=6, num_heads=4"):
        layer()(np.zeros((1, 3, 6), "float32"))


def test_patch_encoder_prepends_class_token_and_adds_position(rng):
    encoder = layers.PatchEncoder(num_patches=6, hidden_size=8)
    patches = rng.normal(size=(2, 6, 12)).astype("float32")
    out = keras.ops.convert_to_numpy(encoder(patches))
    assert out.shape == (2, 7, 8)
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in encoder.projection.weights)
    position = keras.ops.convert_to_numpy(encoder.position_embedding)[0]
    cls = keras.ops.convert_to_numpy(encoder.class_token)[0, 0]
    np.testing.assert_allclose(out[:, 0], np.broadcast_to(cls + position[0], (2, 8)), atol=1e-6)
    np.testing.assert_allclose(out[:, 1:], patches @ kernel + bias + position[1:], atol=1e-5)


def test_patch_encoder_initialisation():
    encoder = layers.PatchEncoder(num_patches=196, hidden_size=64, seed=1)
    encoder.build((None, 196, 48))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(encoder.class_token), 0.0)
    position = keras.ops.convert_to_numpy(encoder.position_embedding)
    assert position.shape == (1, 197, 64)
    assert abs(position.std() - 0.02) < 0.002


def test_patch_encoder_without_class_token(rng):
    encoder = layers.PatchEncoder(num_patches=6, hidden_size=8, use_class_token=False)
    assert encoder(rng.normal(size=(2, 6, 12))).shape == (2, 6, 8)
    assert [w.name for w in encoder.weights if "token" in w.name] == []


def test_patch_encoder_rejects_wrong_patch_count():
    with pytest.raises(ValueError, match="expected 6 patches"):
        layers.PatchEncoder(num_patches=6, hidden_size=8)(np.zeros((1, 5, 12)))


def test_layer_norm_matches_keras(rng):
    x = rng.normal(3.0, 2.0, size=(2, 5, 16)).astype("float32")
    ours = layers.LayerNorm(epsilon=1e-6)
    ref = keras.layers.LayerNormalization(epsilon=1e-6)
    ours.build(x.shape)
    ref.build(x.shape)
    gamma, beta = rng.normal(size=(2, 16)).astype("float32")
    ours.set_weights([gamma, beta])
    ref.set_weights([gamma, beta])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)), keras.ops.convert_to_numpy(ref(x)), atol=1e-5
    )


def test_layer_norm_mixed_precision_computes_in_float32(rng):
    norm = layers.LayerNorm(dtype="mixed_bfloat16")
    x = rng.normal(size=(2, 4, 8)).astype("float32")
    out = norm(x)
    assert out.dtype == "bfloat16"
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out).astype("float32"), expected, atol=2e-2
    )


def test_gelu_forms(rng):
    x = np.linspace(-6, 6, 1001).astype("float32")
    tanh = keras.ops.convert_to_numpy(layers.gelu(x, "tanh"))
    logistic = keras.ops.convert_to_numpy(layers.gelu(x, "logistic"))
    erf = keras.ops.convert_to_numpy(layers.gelu(x, "erf"))
    from scipy.special import erf as scipy_erf

    np.testing.assert_allclose(erf, 0.5 * x * (1 + scipy_erf(x / np.sqrt(2))), atol=1e-6)
    np.testing.assert_allclose(logistic, tanh, atol=2e-6)
    # The approximation differs from the exact form by at most ~5e-4 (in the tails).
    assert 1e-4 < np.abs(tanh - erf).max() < 1e-3
    with pytest.raises(ValueError, match="form='relu'"):
        layers.gelu(x, "relu")


def numpy_attention(x, dense_weights, num_heads):
    """Reference multi-head self-attention from the weights of the four Dense layers."""
    (wq, bq), (wk, bk), (wv, bv), (wo, bo) = dense_weights
    batch, tokens, width = x.shape
    head = width // num_heads

    def split(t):
        return t.reshape(batch, tokens, num_heads, head).transpose(0, 2, 1, 3)

    q, k, v = split(x @ wq + bq), split(x @ wk + bk), split(x @ wv + bv)
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(head)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, tokens, width)
    return out @ wo + bo, probs


def test_attention_matches_numpy(rng):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    attention = layers.MultiHeadSelfAttention(num_heads=4, seed=3)
    attention.build(x.shape)
    for dense in (attention.query, attention.key, attention.value, attention.out):
        dense.bias.assign(rng.normal(size=16).astype("float32"))
    out, probs = attention(x, return_attention_scores=True)
    weights = [
        [keras.ops.convert_to_numpy(w) for w in d.weights]
        for d in (attention.query, attention.key, attention.value, attention.out)
    ]
    ref_out, ref_probs = numpy_attention(x, weights, 4)
    assert probs.shape == (2, 4, 5, 5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref_out, atol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs), ref_probs, atol=1e-6)


def numpy_block(x, block: layers.TransformerBlock):
    def norm(t, layer):
        gamma, beta = (keras.ops.convert_to_numpy(w) for w in layer.weights)
        return (t - t.mean(-1, keepdims=True)) / np.sqrt(
            t.var(-1, keepdims=True) + 1e-6
        ) * gamma + beta

    def dense(t, layer):
        kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.weights)
        return t @ kernel + bias

    att = block.attention
    weights = [
        [keras.ops.convert_to_numpy(w) for w in d.weights]
        for d in (att.query, att.key, att.value, att.out)
    ]
    x = x + numpy_attention(norm(x, block.norm1), weights, block.num_heads)[0]
    h = dense(norm(x, block.norm2), block.mlp_dense1)
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    return x + dense(h, block.mlp_dense2)


def test_transformer_block_matches_numpy(rng):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    block = layers.TransformerBlock(num_heads=4, mlp_dim=32, seed=0)
    block.build(x.shape)
    for weight in block.weights:  # non-trivial LayerNorm and bias values
        weight.assign(weight + rng.normal(scale=0.1, size=weight.shape).astype("float32"))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(block(x)), numpy_block(x, block), atol=1e-5
    )


def test_transformer_block_initialisation():
    block = layers.TransformerBlock(num_heads=4, mlp_dim=512, seed=0)
    block.build((None, 5, 256))
    kernel = keras.ops.convert_to_numpy(block.mlp_dense1.kernel)
    limit = np.sqrt(6 / (256 + 512))  # Xavier uniform
    assert (
        kernel.max() <= limit and kernel.min() >= -limit and kernel.std() > 0.5 * limit / np.sqrt(3)
    )
    assert np.abs(keras.ops.convert_to_numpy(block.mlp_dense1.bias)).max() < 1e-5
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(block.attention.query.bias), 0.0)


def test_drop_path_is_identity_at_inference_and_random_in_training(rng):
    x = rng.normal(size=(64, 3, 4)).astype("float32")
    drop = layers.DropPath(0.5, seed=0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(drop(x, training=False)), x)
    out = keras.ops.convert_to_numpy(drop(x, training=True))
    kept = np.all(out != 0, axis=(1, 2))
    dropped = np.all(out == 0, axis=(1, 2))
    assert np.all(kept | dropped), "each sample is kept or dropped whole"
    assert 10 < dropped.sum() < 54
    np.testing.assert_allclose(out[kept], 2 * x[kept], rtol=1e-6)


def test_transformer_block_drop_path_only_in_training(rng):
    x = rng.normal(size=(8, 5, 16)).astype("float32")
    block = layers.TransformerBlock(num_heads=2, mlp_dim=32, drop_path_rate=0.5, seed=0)
    plain = layers.TransformerBlock(num_heads=2, mlp_dim=32, seed=0)
    block.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(block.get_weights())
    inference = keras.ops.convert_to_numpy(block(x, training=False))
    np.testing.assert_allclose(inference, keras.ops.convert_to_numpy(plain(x)), atol=1e-6)
    training = keras.ops.convert_to_numpy(block(x, training=True))
    assert np.abs(training - inference).max() > 1e-3


def test_transformer_block_returns_attention_scores(rng):
    block = layers.TransformerBlock(num_heads=2, mlp_dim=32)
    out, scores = block(rng.normal(size=(1, 5, 16)), return_attention_scores=True)
    assert out.shape == (1, 5, 16) and scores.shape == (1, 2, 5, 5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(scores).sum(-1), 1.0, atol=1e-5)


def test_attention_num_queries_computes_the_first_rows(rng):
    x = rng.normal(size=(2, 5, 16)).astype("float32")
    attention = layers.MultiHeadSelfAttention(num_heads=4, seed=3)
    full, full_probs = attention(x, return_attention_scores=True)
    out, probs = attention(x, return_attention_scores=True, num_queries=2)
    assert out.shape == (2, 2, 16) and probs.shape == (2, 4, 2, 5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(out), keras.ops.convert_to_numpy(full)[:, :2], atol=1e-6
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(probs), keras.ops.convert_to_numpy(full_probs)[:, :, :2]
    )


@pytest.mark.parametrize(
    "num_queries,match", [(0, "num_queries=0"), (6, "num_queries=6, tokens=5"), (1.0, "1.0")]
)
def test_attention_rejects_bad_num_queries(num_queries, match, rng):
    attention = layers.MultiHeadSelfAttention(num_heads=2)
    with pytest.raises(ValueError, match=match):
        attention(rng.normal(size=(1, 5, 8)), num_queries=num_queries)


def test_transformer_block_class_token_only_is_the_first_row(rng):
    """Same numbers as row 0 of the full block, forward and gradient (dropout off)."""
    import tensorflow as tf

    x = tf.constant(rng.normal(size=(3, 6, 16)).astype("float32"))
    block = layers.TransformerBlock(num_heads=4, mlp_dim=32, seed=0)
    block.build(x.shape)
    for weight in block.weights:
        weight.assign(weight + rng.normal(scale=0.1, size=weight.shape).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        full, full_scores = block(x, return_attention_scores=True)
        first, scores = block(x, return_attention_scores=True, class_token_only=True)
        full_loss = tf.reduce_sum(tf.sin(full[:, :1]))
        loss = tf.reduce_sum(tf.sin(first))
    assert first.shape == (3, 1, 16) and scores.shape == (3, 4, 1, 6)
    np.testing.assert_allclose(first.numpy(), full.numpy()[:, :1], atol=1e-6)
    np.testing.assert_allclose(scores.numpy(), full_scores.numpy()[:, :, :1], atol=1e-7)
    for wrt in [x, *block.trainable_weights]:
        np.testing.assert_allclose(
            tape.gradient(loss, wrt), tape.gradient(full_loss, wrt), atol=1e-5, rtol=1e-5
        )


def test_transformer_block_class_token_only_in_a_functional_graph():
    tokens = keras.Input((7, 16))
    block = layers.TransformerBlock(num_heads=2, mlp_dim=32)
    assert block(tokens, class_token_only=True).shape == (None, 1, 16)
    out, scores = block(tokens, class_token_only=True, return_attention_scores=True)
    assert out.shape == (None, 1, 16) and scores.shape == (None, 2, 1, 7)
    assert block.compute_output_shape((None, 7, 16)) == (None, 7, 16)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(num_heads=0, mlp_dim=8), "num_heads=0"),
        (dict(num_heads=2, mlp_dim=8, dropout=1.5), "dropout=1.5"),
        (dict(num_heads=2, mlp_dim=8, gelu="relu"), "gelu='relu'"),
    ],
)
def test_transformer_block_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        layers.TransformerBlock(**kwargs)


def test_transformer_block_rejects_indivisible_width():
    with pytest.raises(ValueError, match="hidden_size=10, num_heads=4"):
        layers.TransformerBlock(num_heads=4, mlp_dim=8)(np.zeros((1, 3, 10)))


def test_token_pooling(rng):
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layers.TokenPooling("token")(x)), x[:, 0]
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layers.TokenPooling("gap")(x)), x.mean(1), atol=1e-6
    )
    with pytest.raises(ValueError, match="pooling='max'"):
        layers.TokenPooling("max")


LAYER_CASES = [
    (layers.Patches(patch_size=4, name="patches"), (8, 12, 3)),
    (layers.PatchEncoder(num_patches=6, hidden_size=8, seed=1, name="enc"), (6, 12)),
    (layers.PatchEncoder(6, 8, use_class_token=False, name="enc"), (6, 12)),
    (layers.LayerNorm(epsilon=1e-5, name="norm"), (5, 8)),
    (layers.MultiHeadSelfAttention(num_heads=2, dropout=0.1, seed=2, name="att"), (5, 8)),
    (layers.DropPath(rate=0.2, seed=3, name="drop"), (5, 8)),
    (
        layers.TransformerBlock(
            num_heads=2,
            mlp_dim=16,
            dropout=0.1,
            attention_dropout=0.1,
            drop_path_rate=0.1,
            layer_norm_epsilon=1e-5,
            gelu="erf",
            seed=4,
            name="block",
        ),
        (5, 8),
    ),
    (layers.TokenPooling(pooling="gap", name="pool"), (5, 8)),
]


@pytest.mark.parametrize("layer,input_shape", LAYER_CASES, ids=lambda v: getattr(v, "name", ""))
def test_layer_config_roundtrip(layer, input_shape):
    check_config_roundtrip(layer)


@pytest.mark.parametrize("layer,input_shape", LAYER_CASES, ids=lambda v: getattr(v, "name", ""))
def test_layer_saving_roundtrip(layer, input_shape, tmp_path, rng):
    model = wrap_layer(type(layer).from_config(layer.get_config()), input_shape)
    for weight in model.weights:  # make every weight matter
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    check_saving_roundtrip(model, rng.normal(size=(2, *input_shape)).astype("float32"), tmp_path)


def image_layout(x):
    """`(batch, tokens, width)` -> the Edge TPU layout `(batch, 1, tokens, width)`."""
    return np.asarray(x)[:, None]


def randomized(layer, rng, scale=0.3):
    for weight in layer.weights:
        weight.assign(rng.normal(scale=scale, size=weight.shape).astype("float32"))
    return layer


@pytest.mark.parametrize("form", ["tflite", "edgetpu"])
def test_layer_norm_forms_compute_the_same(form, rng):
    norm = layers.LayerNorm(1e-6)
    x = rng.normal(2.0, 3.0, size=(2, 5, 8)).astype("float32")
    randomized(norm, rng)(x)
    expected = keras.ops.convert_to_numpy(norm(x))
    actual = keras.ops.convert_to_numpy(norm(image_layout(x), form=form))[:, 0]
    np.testing.assert_allclose(actual, expected, atol=1e-5)
    with pytest.raises(ValueError, match="Expected `form` to be one of"):
        norm(x, form="coral")


def test_dense_apply_as_a_1x1_convolution(rng):
    dense = randomized(keras.layers.Dense(6, activation="tanh"), rng)
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    dense.build(x.shape)
    randomized(dense, rng)
    expected = keras.ops.convert_to_numpy(dense(x)) * 0.5
    np.testing.assert_allclose(layers.dense_apply(dense, x, scale=0.5), expected, atol=1e-6)
    actual = keras.ops.convert_to_numpy(layers.dense_apply(dense, image_layout(x), "edgetpu"))
    np.testing.assert_allclose(actual[:, 0], keras.ops.convert_to_numpy(dense(x)), atol=1e-5)


@pytest.mark.parametrize("num_queries", [None, 1])
def test_attention_edgetpu_form_is_the_standard_function(num_queries, rng):
    attention = layers.MultiHeadSelfAttention(num_heads=4)
    x = rng.normal(size=(1, 7, 32)).astype("float32")
    attention(x)
    randomized(attention, rng)
    expected = keras.ops.convert_to_numpy(attention(x, num_queries=num_queries))
    edge = attention(image_layout(x), num_queries=num_queries, form="edgetpu")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(edge)[:, 0], expected, atol=1e-5)
    with pytest.raises(ValueError, match="not available with form='edgetpu'"):
        attention(image_layout(x), return_attention_scores=True, form="edgetpu")


@pytest.mark.parametrize("form", ["keras", "tflite", "edgetpu"])
@pytest.mark.parametrize("class_token_only", [False, True])
def test_transformer_block_forms_and_constant_class_row(form, class_token_only, rng):
    block = layers.TransformerBlock(num_heads=2, mlp_dim=64, gelu="logistic")
    x = rng.normal(size=(1, 5, 32)).astype("float32")
    block(x)
    randomized(block, rng, 0.2)
    expected = keras.ops.convert_to_numpy(block(x, class_token_only=class_token_only))
    inputs = image_layout(x) if form == "edgetpu" else x
    row = keras.ops.convert_to_numpy(block.norm1(x[:, :1]))[0, 0]
    for class_row_norm in (None, row):
        actual = block(
            inputs, class_token_only=class_token_only, form=form, class_row_norm=class_row_norm
        )
        actual = keras.ops.convert_to_numpy(actual)
        np.testing.assert_allclose(
            actual[:, 0] if form == "edgetpu" else actual, expected, atol=1e-5
        )
    # The constant replaces token 0's norm1 output: a wrong constant changes the result.
    moved = block(inputs, form=form, class_row_norm=row + 1.0)
    assert not np.allclose(keras.ops.convert_to_numpy(moved), block(inputs, form=form), atol=1e-3)


@pytest.mark.parametrize("use_class_token", [True, False])
def test_patch_encoder_edgetpu_form_embeds_the_images(use_class_token, rng):
    images = rng.normal(size=(1, 8, 12, 3)).astype("float32")
    patches = layers.Patches(4)(images)
    encoder = layers.PatchEncoder(6, 16, use_class_token=use_class_token)
    encoder(patches)
    randomized(encoder, rng)
    expected = keras.ops.convert_to_numpy(encoder(patches))
    actual = keras.ops.convert_to_numpy(encoder(images, form="edgetpu"))
    assert actual.shape == (1, 1, encoder.num_tokens, 16)
    np.testing.assert_allclose(actual[:, 0], expected, atol=1e-5)


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_token_pooling_edgetpu_form(pooling, rng):
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    pool = layers.TokenPooling(pooling)
    np.testing.assert_allclose(pool(image_layout(x), form="edgetpu"), pool(x), atol=1e-6)
