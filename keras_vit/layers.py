"""Keras layers that make up a Vision Transformer.

The layers follow the computation of the original JAX code (google-research/
vision_transformer, `vit_jax/models_vit.py`) so that Google's checkpoints load without
numerical drift, and they are written with graph export in mind: every operation lowers to
a TFLite builtin op (no `tf.image.extract_patches`, no Lambda layers, a LayerNorm written
from mean and variance so it quantizes to integer ops).

Every layer is registered with Keras under the package name ``keras_vit`` and names its
sublayers and weights explicitly; checkpoint mapping relies on those names.
"""

from __future__ import annotations

import math
from typing import Literal

import keras
from keras import ops

# Local short names for the shared checks (the public ones live in keras_vit.validation).
from keras_vit.validation import check_positive_int as _check_positive_int
from keras_vit.validation import check_rate as _check_rate
from keras_vit.validation import sub_seed as _sub_seed

GeluForm = Literal["tanh", "erf", "logistic"]
GELU_FORMS: tuple[str, ...] = ("tanh", "erf", "logistic")

GraphForm = Literal["keras", "tflite", "edgetpu"]
GRAPH_FORMS: tuple[str, ...] = ("keras", "tflite", "edgetpu")
"""The op formulations of the inference computation, one function in three graphs.

- `"keras"`: the training and inference graph; tokens `(batch, tokens, width)`.
- `"tflite"`: the TFLite export graph. As `"keras"`, but LayerNorm's variance is the mean
  of `centered * centered`: the converter fuses `square(x - mean)` into SQUARED_DIFFERENCE,
  which the int16 kernels lack.
- `"edgetpu"`: ops in the Coral Edge TPU's table, every tensor 4-D at most and tokens laid
  out as an image one pixel high, `(batch, 1, tokens, width)`: the patch embedding is a
  strided CONV_2D, token-wise Dense layers are 1x1 CONV_2D (`dense_apply`), LayerNorm's
  means are SUM times `1 / width` (MEAN may reduce only the spatial axes) and attention
  runs without BATCH_MATMUL, SOFTMAX or EXP (`MultiHeadSelfAttention`).
"""

# sqrt(2 / pi), the constant of the tanh approximation of GELU.
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _check_num_queries(num_queries, tokens) -> int:
    if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
        raise ValueError(f"Expected `num_queries` to be a positive int. Received: {num_queries!r}")
    if tokens is not None and num_queries > tokens:
        raise ValueError(
            f"Expected `num_queries` <= the number of tokens. "
            f"Received: num_queries={num_queries}, tokens={tokens}"
        )
    return num_queries


def _attention_output_spec(layer, x, shape, return_attention_scores: bool):
    """The output spec `shape` of an attention layer or block, and its probabilities'."""
    output = keras.KerasTensor(shape, dtype=layer.compute_dtype)
    if not return_attention_scores:
        return output
    scores_shape = (x.shape[0], layer.num_heads, shape[1], x.shape[1])
    return output, keras.KerasTensor(scores_shape, dtype=layer.compute_dtype)


def _check_form(form) -> None:
    if form not in GRAPH_FORMS:
        raise ValueError(f"Expected `form` to be one of {GRAPH_FORMS}. Received: form={form!r}")


def _token_axis(form: GraphForm) -> int:
    return 2 if form == "edgetpu" else 1


def _first_tokens(x, count: int, form: GraphForm = "keras"):
    """The first `count` tokens of `x`, in the token layout of `form` (see `GRAPH_FORMS`)."""
    if form == "edgetpu":
        return x[:, :, :count]
    return x[:, :count]


def dense_apply(dense, x, form: GraphForm = "keras", scale: float | None = None):
    """`dense(x)` (times `scale`), in the token layout of `form`.

    In the `"edgetpu"` layout `(batch, 1, tokens, width)` the Dense layer runs as a 1x1
    CONV_2D of its own kernel (the Edge TPU maps FULLY_CONNECTED only with a 1-D output),
    with `scale` folded into the kernel and bias; otherwise it is the layer's own call,
    then a multiplication by `scale`.

    Args:
        dense: a built `keras.layers.Dense`.
        x: its input, in the layout of `form`.
        form: one of `GRAPH_FORMS`.
        scale: a constant factor on the output, or None.

    Returns:
        The output, in the layout of `form`.
    """
    if form != "edgetpu":
        y = dense(x)
        return y if scale is None else y * scale
    kernel, bias = dense.kernel, dense.bias
    if scale is not None:
        kernel, bias = kernel * scale, bias * scale
    y = ops.conv(x, kernel[None, None], strides=1, padding="valid") + bias
    return dense.activation(y)


def gelu(x, form: GeluForm = "tanh"):
    """Gaussian Error Linear Unit in one of three numerically chosen forms.

    Args:
        x: a tensor.
        form: `"tanh"`, the tanh approximation used by `flax.linen.gelu` (the default of
            Google's ViT checkpoints); `"erf"`, the exact form used by PyTorch ports;
            `"logistic"`, the tanh approximation rewritten with the identity
            `0.5 * (1 + tanh(u)) == sigmoid(2u)`. It is the same function as `"tanh"` but
            lowers to LOGISTIC, MUL and ADD ops, which accelerators such as the Edge TPU
            map, instead of a single GELU op they reject.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    if form == "tanh":
        return ops.gelu(x, approximate=True)
    if form == "erf":
        return ops.gelu(x, approximate=False)
    if form == "logistic":
        inner = x + 0.044715 * (x * x * x)
        return x * ops.sigmoid((2.0 * _SQRT_2_OVER_PI) * inner)
    raise ValueError(f"Expected `form` to be one of {GELU_FORMS}. Received: form={form!r}")


@keras.saving.register_keras_serializable(package="keras_vit")
class Patches(keras.layers.Layer):
    """Cuts images into non-overlapping square patches and flattens each one.

    Patches are ordered row by row, then column by column; each patch is flattened in
    (row, column, channel) order, which is the order of a convolution kernel of shape
    `(patch_size, patch_size, channels, features)` reshaped to two dimensions. Only
    reshape and transpose ops are used, so the layer converts to TFLite builtins.

    Args:
        patch_size: side of a square patch, in pixels.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Input shape:
        `(batch, height, width, channels)`, height and width divisible by `patch_size`.

    Output shape:
        `(batch, (height // patch_size) * (width // patch_size),
        patch_size * patch_size * channels)`.

    Example:
    >>> patches = keras_vit.layers.Patches(patch_size=4)
    >>> patches(np.zeros((2, 8, 12, 3))).shape
    (2, 6, 48)
    """

    def __init__(self, patch_size: int, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("patch_size", patch_size)
        self.patch_size = patch_size
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _grid(self, input_shape) -> tuple[int, int]:
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(
                "Patches needs a static image height and width. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Expected image height and width divisible by patch_size={self.patch_size}. "
                f"Received: image size {height}x{width}"
            )
        return height // self.patch_size, width // self.patch_size

    def build(self, input_shape):
        self._grid(input_shape)
        self.built = True

    def call(self, images):
        grid_h, grid_w = self._grid(images.shape)
        size = self.patch_size
        channels = images.shape[-1]
        x = ops.reshape(images, (-1, grid_h, size, grid_w, size, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, grid_h * grid_w, size * size * channels))

    def compute_output_shape(self, input_shape):
        grid_h, grid_w = self._grid(input_shape)
        channels = input_shape[-1]
        return (input_shape[0], grid_h * grid_w, self.patch_size * self.patch_size * channels)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size})
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchEncoder(keras.layers.Layer):
    """Projects flattened patches, prepends a class token and adds position embeddings.

    The projection is a Dense layer whose kernel is the original patch-embedding
    convolution kernel `(P, P, C, D)` reshaped to `(P * P * C, D)`. The class token is a
    learned vector (initialised to zeros); the position embedding is a learned
    `(1, num_patches + 1, D)` tensor (normal, stddev 0.02), one row per token.

    Args:
        num_patches: number of patches per image.
        hidden_size: width `D` of the token embeddings.
        use_class_token: prepend the learned class token. Models pooled by global average
            (the original `classifier="gap"`) have none.
        seed: seed for the initialisers, or None.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Input shape:
        `(batch, num_patches, patch_dim)`.

    Output shape:
        `(batch, num_patches + 1, hidden_size)`, or `(batch, num_patches, hidden_size)`
        without a class token.

    Call arguments:
        patches: `(batch, num_patches, patch_dim)`; with `form="edgetpu"`, the images
            `(batch, height, width, channels)` themselves.
        form: the op formulation, one of `GRAPH_FORMS`. `"edgetpu"` cuts the patches
            with a strided convolution and returns `(batch, 1, tokens, hidden_size)`.

    Example:
    >>> encoder = keras_vit.layers.PatchEncoder(num_patches=6, hidden_size=32)
    >>> encoder(np.zeros((2, 6, 48))).shape
    (2, 7, 32)
    """

    def __init__(
        self,
        num_patches: int,
        hidden_size: int,
        use_class_token: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("num_patches", num_patches)
        _check_positive_int("hidden_size", hidden_size)
        self.num_patches = num_patches
        self.hidden_size = hidden_size
        self.use_class_token = bool(use_class_token)
        self.seed = seed
        self.projection = keras.layers.Dense(
            hidden_size,
            kernel_initializer=keras.initializers.LecunNormal(seed=_sub_seed(seed, 0)),
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="projection",
        )

    @property
    def num_tokens(self) -> int:
        return self.num_patches + int(self.use_class_token)

    def build(self, input_shape):
        if input_shape[1] is not None and input_shape[1] != self.num_patches:
            raise ValueError(
                f"PatchEncoder expected {self.num_patches} patches. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.projection.build(input_shape)
        if self.use_class_token:
            self.class_token = self.add_weight(
                shape=(1, 1, self.hidden_size), initializer="zeros", name="class_token"
            )
        self.position_embedding = self.add_weight(
            shape=(1, self.num_tokens, self.hidden_size),
            initializer=keras.initializers.RandomNormal(stddev=0.02, seed=_sub_seed(self.seed, 1)),
            name="position_embedding",
        )
        self.built = True

    def call(self, patches, form: GraphForm = "keras"):
        _check_form(form)
        if form == "edgetpu":
            return self._edgetpu_call(patches)
        x = self.projection(patches)
        if self.use_class_token:
            class_token = ops.cast(self.class_token, x.dtype)
            class_token = ops.tile(class_token, (ops.shape(x)[0], 1, 1))
            x = ops.concatenate([class_token, x], axis=1)
        return x + ops.cast(self.position_embedding, x.dtype)

    def _edgetpu_call(self, images):
        """The embedding of `images` in the layout `(batch, 1, tokens, hidden_size)`.

        The projection runs as a CONV_2D with stride `patch_size` on the images themselves
        (its kernel reshaped to `(P, P, C, D)`), as no 6-D patch reshape is in the Edge TPU
        table; a zero token PADded in front and one constant ADD (class token plus position
        embedding) complete it, since a constant CONCATENATION input must be all zeros.
        """
        channels = images.shape[-1]
        size = math.isqrt(self.projection.kernel.shape[0] // channels)
        kernel = ops.reshape(self.projection.kernel, (size, size, channels, self.hidden_size))
        x = ops.conv(images, kernel, strides=size, padding="valid") + self.projection.bias
        x = ops.reshape(x, (-1, 1, x.shape[1] * x.shape[2], self.hidden_size))
        embedding = self.position_embedding
        if self.use_class_token:
            x = ops.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))
            class_row = ops.pad(self.class_token, ((0, 0), (0, self.num_patches), (0, 0)))
            embedding = embedding + class_row
        return x + embedding[None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_tokens, self.hidden_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_patches": self.num_patches,
                "hidden_size": self.hidden_size,
                "use_class_token": self.use_class_token,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class LayerNorm(keras.layers.Layer):
    """Layer normalisation over the last axis, written from mean and variance.

    Numerically the same as `keras.layers.LayerNormalization(epsilon=...)` (biased
    variance, epsilon inside the square root), but built from plain mean, subtract,
    multiply and rsqrt ops. The Keras layer converts to a TFLite graph that full-integer
    quantization leaves with float islands; this form quantizes to integer ops throughout.
    Under a mixed-precision policy the statistics are computed in float32.

    Args:
        epsilon: small constant added to the variance.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Call arguments:
        x: a tensor, normalised over its last axis.
        form: the op formulation, one of `GRAPH_FORMS`: the variance as the mean of
            `square(x - mean)` (`"keras"`), as the mean of `centered * centered`
            (`"tflite"`), or both means as SUM times `1 / width` (`"edgetpu"`).

    Example:
    >>> norm = keras_vit.layers.LayerNorm(epsilon=1e-6)
    >>> norm(np.random.rand(2, 5, 8)).shape
    (2, 5, 8)
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(epsilon, (int, float)) or epsilon <= 0:
            raise ValueError(f"Expected `epsilon` to be a positive float. Received: {epsilon!r}")
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def build(self, input_shape):
        dim = input_shape[-1]
        self.gamma = self.add_weight(shape=(dim,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(dim,), initializer="zeros", name="beta")
        self.built = True

    def call(self, x, form: GraphForm = "keras"):
        _check_form(form)
        dtype = x.dtype
        if dtype in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")
        if form == "edgetpu":
            inverse_width = 1.0 / x.shape[-1]
            mean = ops.sum(x, axis=-1, keepdims=True) * inverse_width
            centered = x - mean
            variance = ops.sum(centered * centered, axis=-1, keepdims=True) * inverse_width
        else:
            mean = ops.mean(x, axis=-1, keepdims=True)
            centered = x - mean
            squares = ops.square(centered) if form == "keras" else centered * centered
            variance = ops.mean(squares, axis=-1, keepdims=True)
        y = centered * ops.rsqrt(variance + self.epsilon)
        y = y * ops.cast(self.gamma, y.dtype) + ops.cast(self.beta, y.dtype)
        return ops.cast(y, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class MultiHeadSelfAttention(keras.layers.Layer):
    """Multi-head scaled dot-product self-attention.

    Query, key, value and output projections are Dense layers of width `hidden_size`
    (`hidden_size = num_heads * head_dim`); the original checkpoints store them as
    `(D, heads, head_dim)` and `(heads, head_dim, D)` kernels, which reshape to these.
    The query is scaled by `head_dim ** -0.5` before the dot product, as in
    `flax.linen.dot_product_attention`; the softmax runs in float32 under mixed precision.

    Args:
        num_heads: number of attention heads.
        dropout: dropout rate on the attention probabilities.
        seed: seed for initialisers and dropout, or None.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Call arguments:
        x: `(batch, tokens, hidden_size)`.
        training: whether dropout is active.
        return_attention_scores: also return the attention probabilities,
            `(batch, num_heads, queries, tokens)`.
        num_queries: only the first `num_queries` tokens attend (are queries); keys and
            values are still all tokens, and the output is `(batch, num_queries,
            hidden_size)`. None (the default): every token.
        form: the op formulation, one of `GRAPH_FORMS`. `"edgetpu"` takes and returns
            the layout `(batch, 1, tokens, hidden_size)`, runs the projections as 1x1
            convolutions and the softmax from LOGISTIC and RSQRT (inference only, no
            attention scores returned); the other forms compute the standard way.

    Example:
    >>> attention = keras_vit.layers.MultiHeadSelfAttention(num_heads=4)
    >>> attention(np.zeros((2, 5, 32))).shape
    (2, 5, 32)
    """

    def __init__(self, num_heads: int, dropout: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_positive_int("num_heads", num_heads)
        _check_rate("dropout", dropout)
        self.num_heads = num_heads
        self.dropout = dropout
        self.seed = seed
        self.attention_dropout = keras.layers.Dropout(
            dropout, seed=_sub_seed(seed, 4), dtype=self.dtype_policy, name="attention_dropout"
        )

    def build(self, input_shape):
        hidden_size = input_shape[-1]
        if hidden_size % self.num_heads:
            raise ValueError(
                f"Expected hidden_size divisible by num_heads. "
                f"Received: hidden_size={hidden_size}, num_heads={self.num_heads}"
            )
        self.hidden_size = hidden_size
        self.head_dim = hidden_size // self.num_heads
        self.query, self.key, self.value, self.out = (
            keras.layers.Dense(
                hidden_size,
                kernel_initializer=keras.initializers.GlorotUniform(seed=_sub_seed(self.seed, i)),
                bias_initializer="zeros",
                dtype=self.dtype_policy,
                name=name,
            )
            for i, name in enumerate(("query", "key", "value", "out"))
        )
        for dense in (self.query, self.key, self.value, self.out):
            dense.build(input_shape)
        self.built = True

    def _split_heads(self, x, tokens):
        x = ops.reshape(x, (-1, tokens, self.num_heads, self.head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(
        self,
        x,
        training=None,
        return_attention_scores=False,
        num_queries=None,
        form: GraphForm = "keras",
    ):
        _check_form(form)
        tokens = x.shape[_token_axis(form)]
        queries = tokens if num_queries is None else _check_num_queries(num_queries, tokens)
        if form == "edgetpu":
            if return_attention_scores:
                raise ValueError("`return_attention_scores` is not available with form='edgetpu'.")
            return self._edgetpu_call(x, queries, num_queries is not None)
        query = self.query(x if num_queries is None else x[:, :queries])
        query = self._split_heads(query * (self.head_dim**-0.5), queries)
        key = self._split_heads(self.key(x), tokens)
        value = self._split_heads(self.value(x), tokens)
        scores = ops.matmul(query, ops.transpose(key, (0, 1, 3, 2)))
        probs = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        probs = ops.cast(probs, value.dtype)
        attended = ops.matmul(self.attention_dropout(probs, training=training), value)
        attended = ops.reshape(
            ops.transpose(attended, (0, 2, 1, 3)), (-1, queries, self.hidden_size)
        )
        output = self.out(attended)
        if return_attention_scores:
            return output, probs
        return output

    def _edgetpu_call(self, x, queries: int, sliced: bool):
        """Inference attention on `(batch, 1, tokens, width)` from ops in the Edge TPU table.

        Per head, without BATCH_MATMUL: scores `SUM(MUL(q[t, 1, d], k[1, s, d]))` over `d`;
        softmax without SOFTMAX (it must be one-dimensional) or EXP (not in the table):
        `exp(z)` for `z = s - max(s) <= 0` is `sigmoid(z) / sigmoid(-z)`, the division a
        square of RSQRT; the weighted sum of values `SUM(MUL(e[t, s, 1], v[1, s, d]))` over
        `s` is divided by `sum(e)` after the sum (each row of `e` peaks at exactly 1, which
        8 bits resolve well). The same function as the standard form.
        """
        form = "edgetpu"
        scale = self.head_dim**-0.5
        query = dense_apply(self.query, x[:, :, :queries] if sliced else x, form, scale=scale)
        query = ops.split(query, self.num_heads, axis=-1)
        key = ops.split(dense_apply(self.key, x, form), self.num_heads, axis=-1)
        value = ops.split(dense_apply(self.value, x, form), self.num_heads, axis=-1)
        heads = []
        for q, k, v in zip(query, key, value, strict=True):
            # q: (1, 1, Q, d) -> (1, Q, 1, d); scores (1, Q, T) = sum_d q[t, d] k[s, d].
            q = ops.reshape(q, (-1, queries, 1, q.shape[-1]))
            scores = ops.sum(q * k, axis=-1)
            peak = ops.max(scores, axis=-1, keepdims=True)
            # exp(z) = sigmoid(z) / sigmoid(-z), z <= 0; 1 / a = rsqrt(a) ** 2.
            inverse = ops.rsqrt(ops.sigmoid(peak - scores))
            weights = ops.sigmoid(scores - peak) * inverse * inverse
            norm = ops.rsqrt(ops.sum(weights, axis=-1, keepdims=True))  # (1, Q, 1)
            # sum_s e[t, s] v[s, :]: (1, Q, T, 1) * (1, 1, T, d) summed over s.
            mixed = ops.sum(ops.expand_dims(weights, -1) * v, axis=2)  # (1, Q, d)
            heads.append(ops.reshape(mixed * norm * norm, (-1, 1, queries, v.shape[-1])))
        return dense_apply(self.out, ops.concatenate(heads, axis=-1), form)

    def compute_output_shape(self, input_shape, num_queries=None, form: GraphForm = "keras"):
        axis = _token_axis(form)
        if num_queries is None:
            return tuple(input_shape)
        queries = _check_num_queries(num_queries, input_shape[axis])
        shape = list(input_shape)
        shape[axis] = queries
        return tuple(shape)

    def compute_output_spec(
        self,
        x,
        training=None,
        return_attention_scores=False,
        num_queries=None,
        form: GraphForm = "keras",
    ):
        shape = self.compute_output_shape(x.shape, num_queries, form)
        return _attention_output_spec(self, x, shape, return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "dropout": self.dropout, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops a whole residual branch per sample during training.

    At inference it is the identity. In training each sample's branch is zeroed with
    probability `rate` and the survivors are scaled by `1 / (1 - rate)`.

    Args:
        rate: probability of dropping the branch.
        seed: seed for the random mask, or None.
        **kwargs: standard layer arguments such as `name` and `dtype`.
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_rate("rate", rate)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if rate > 0 else None

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask_shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        noise = keras.random.uniform(mask_shape, dtype=x.dtype, seed=self.seed_generator)
        mask = ops.floor(keep + noise)
        return x * mask / keep

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class TransformerBlock(keras.layers.Layer):
    """Pre-LayerNorm transformer encoder block.

    `x + DropPath(Dropout(Attention(LayerNorm(x))))`, then
    `x + DropPath(MLP(LayerNorm(x)))` with `MLP = Dense(mlp_dim) -> GELU -> Dropout ->
    Dense(hidden_size) -> Dropout`, as `Encoder1DBlock` of the original JAX code. Dense
    kernels are Xavier-uniform, MLP biases normal with stddev 1e-6, attention biases zero.

    Args:
        num_heads: number of attention heads; must divide the token width.
        mlp_dim: hidden width of the MLP.
        dropout: dropout rate after the attention and in the MLP.
        attention_dropout: dropout rate on the attention probabilities.
        drop_path_rate: stochastic-depth rate of both residual branches (training only).
        layer_norm_epsilon: epsilon of both LayerNorms.
        gelu: form of the MLP activation: `"tanh"` (default, as Google's checkpoints were
            trained), `"erf"` (exact, as PyTorch ports) or `"logistic"` (the tanh form
            written with a sigmoid, for accelerators that lack a GELU op). See `gelu()`.
        seed: seed for initialisers, dropout and drop-path, or None.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Call arguments:
        x: `(batch, tokens, hidden_size)`.
        training: whether dropout and drop-path are active.
        return_attention_scores: also return the attention probabilities,
            `(batch, num_heads, tokens, tokens)`, or `(batch, num_heads, 1, tokens)` with
            `class_token_only`.
        class_token_only: compute the output of the first token (the class token) only,
            `(batch, 1, hidden_size)`: it attends to every token, but no other token's query,
            attention output or MLP is computed. The same numbers as `x[:, :1]` of the full
            output to float rounding, for the last block of a forward that reads only the
            class token (`VisionTransformer.forward`).
        form: the op formulation, one of `GRAPH_FORMS`; `"edgetpu"` takes and returns
            the layout `(batch, 1, tokens, hidden_size)`.
        class_row_norm: `norm1` of token 0 as a constant `(hidden_size,)` vector, or None.
            The export graphs give it for the first block, where token 0 is the class
            token with its position embedding, the same for every image: computed in
            float once, it keeps its precision in an integer graph, where the class row's
            spread is far below the patch rows' and a shared 8-bit scale would blur it.

    Example:
    >>> block = keras_vit.layers.TransformerBlock(num_heads=4, mlp_dim=64)
    >>> block(np.zeros((2, 5, 32))).shape
    (2, 5, 32)
    """

    def __init__(
        self,
        num_heads: int,
        mlp_dim: int,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        gelu: GeluForm = "tanh",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_positive_int("num_heads", num_heads)
        _check_positive_int("mlp_dim", mlp_dim)
        _check_rate("dropout", dropout)
        _check_rate("attention_dropout", attention_dropout)
        _check_rate("drop_path_rate", drop_path_rate)
        if gelu not in GELU_FORMS:
            raise ValueError(f"Expected `gelu` to be one of {GELU_FORMS}. Received: gelu={gelu!r}")
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.drop_path_rate = drop_path_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.gelu = gelu
        self.seed = seed

        policy = self.dtype_policy
        self.norm1 = LayerNorm(layer_norm_epsilon, dtype=policy, name="norm1")
        self.attention = MultiHeadSelfAttention(
            num_heads, attention_dropout, seed=_sub_seed(seed, 0), dtype=policy, name="attention"
        )
        self.attention_output_dropout = keras.layers.Dropout(
            dropout, seed=_sub_seed(seed, 10), dtype=policy, name="attention_output_dropout"
        )
        self.norm2 = LayerNorm(layer_norm_epsilon, dtype=policy, name="norm2")
        self.mlp_dense1 = keras.layers.Dense(
            mlp_dim,
            kernel_initializer=keras.initializers.GlorotUniform(seed=_sub_seed(seed, 11)),
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6, seed=_sub_seed(seed, 12)),
            dtype=policy,
            name="mlp_dense1",
        )
        self.mlp_dropout1 = keras.layers.Dropout(
            dropout, seed=_sub_seed(seed, 13), dtype=policy, name="mlp_dropout1"
        )
        self.mlp_dense2 = None  # built in build(), its width is the input width
        self.mlp_dropout2 = keras.layers.Dropout(
            dropout, seed=_sub_seed(seed, 16), dtype=policy, name="mlp_dropout2"
        )
        self.drop_path = DropPath(
            drop_path_rate, seed=_sub_seed(seed, 17), dtype=policy, name="drop_path"
        )

    def build(self, input_shape):
        hidden_size = input_shape[-1]
        if hidden_size % self.num_heads:
            raise ValueError(
                f"Expected hidden_size divisible by num_heads. "
                f"Received: hidden_size={hidden_size}, num_heads={self.num_heads}"
            )
        self.mlp_dense2 = keras.layers.Dense(
            hidden_size,
            kernel_initializer=keras.initializers.GlorotUniform(seed=_sub_seed(self.seed, 14)),
            bias_initializer=keras.initializers.RandomNormal(
                stddev=1e-6, seed=_sub_seed(self.seed, 15)
            ),
            dtype=self.dtype_policy,
            name="mlp_dense2",
        )
        self.norm1.build(input_shape)
        self.attention.build(input_shape)
        self.norm2.build(input_shape)
        self.mlp_dense1.build(input_shape)
        self.mlp_dense2.build((*tuple(input_shape[:-1]), self.mlp_dim))
        self.built = True

    def call(
        self,
        x,
        training=None,
        return_attention_scores=False,
        class_token_only=False,
        form: GraphForm = "keras",
        class_row_norm=None,
    ):
        normed = self._norm1(x, form, class_row_norm)
        if class_token_only:
            x = _first_tokens(x, 1, form)
        attended = self.attention(
            normed,
            training=training,
            return_attention_scores=return_attention_scores,
            num_queries=1 if class_token_only else None,
            form=form,
        )
        if return_attention_scores:
            attended, scores = attended
        attended = self.attention_output_dropout(attended, training=training)
        x = x + self.drop_path(attended, training=training)

        y = dense_apply(self.mlp_dense1, self.norm2(x, form=form), form)
        y = self.mlp_dropout1(gelu(y, self.gelu), training=training)
        y = self.mlp_dropout2(dense_apply(self.mlp_dense2, y, form), training=training)
        x = x + self.drop_path(y, training=training)
        if return_attention_scores:
            return x, scores
        return x

    def _norm1(self, x, form: GraphForm, class_row_norm):
        """`norm1(x)`, or with token 0's row given as the constant `class_row_norm`."""
        if class_row_norm is None:
            return self.norm1(x, form=form)
        row = ops.reshape(ops.cast(class_row_norm, self.compute_dtype), (1, 1, -1))
        if form == "edgetpu":
            # CONCATENATION takes a constant input only if it is all zeros: PAD, then ADD.
            normed = self.norm1(x[:, :, 1:], form=form)
            padding = ((0, 0), (0, 0), (0, x.shape[2] - 1), (0, 0))
            return ops.pad(normed, ((0, 0), (0, 0), (1, 0), (0, 0))) + ops.pad(row[None], padding)
        normed = self.norm1(x[:, 1:], form=form)
        row = ops.tile(row, (ops.shape(x)[0], 1, 1))
        return ops.concatenate([row, normed], axis=1)

    def compute_output_shape(self, input_shape, class_token_only=False, form: GraphForm = "keras"):
        if not class_token_only:
            return tuple(input_shape)
        shape = list(input_shape)
        shape[_token_axis(form)] = 1
        return tuple(shape)

    def compute_output_spec(
        self,
        x,
        training=None,
        return_attention_scores=False,
        class_token_only=False,
        form: GraphForm = "keras",
        class_row_norm=None,
    ):
        shape = self.compute_output_shape(x.shape, class_token_only, form)
        return _attention_output_spec(self, x, shape, return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "dropout": self.dropout,
                "attention_dropout": self.attention_dropout,
                "drop_path_rate": self.drop_path_rate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "gelu": self.gelu,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenPooling(keras.layers.Layer):
    """Pools encoder tokens into one vector per image.

    Args:
        pooling: `"token"` takes the class token (token 0); `"gap"` averages all tokens.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Call arguments:
        x: `(batch, tokens, hidden_size)`, or `(batch, 1, tokens, hidden_size)` with
            `form="edgetpu"`.
        form: the op formulation, one of `GRAPH_FORMS`.

    Output shape:
        `(batch, hidden_size)`.
    """

    def __init__(self, pooling: Literal["token", "gap"] = "token", **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("token", "gap"):
            raise ValueError(
                f"Expected `pooling` to be 'token' or 'gap'. Received: pooling={pooling!r}"
            )
        self.pooling = pooling

    def call(self, x, form: GraphForm = "keras"):
        _check_form(form)
        if form == "edgetpu":
            if self.pooling == "token":
                # No slice when the last block computed the class token only: an identity
                # STRIDED_SLICE would keep the converter from folding the LayerNorm's scale
                # and offset into the head.
                if x.shape[2] != 1:
                    x = _first_tokens(x, 1, form)
            else:
                x = ops.mean(x, axis=2, keepdims=True)
            return ops.reshape(x, (-1, x.shape[-1]))
        if self.pooling == "token":
            return x[:, 0]
        return ops.mean(x, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"pooling": self.pooling})
        return config
