"""`MultiHeadSelfAttention`, in the standard form and the Edge TPU form."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers.forms import (
    GraphForm,
    attention_output_spec,
    check_form,
    check_num_queries,
    dense_apply,
    token_axis,
)
from keras_vit.validation import check_positive_int, check_rate, sub_seed


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
        check_positive_int("num_heads", num_heads)
        check_rate("dropout", dropout)
        self.num_heads = num_heads
        self.dropout = dropout
        self.seed = seed
        self.attention_dropout = keras.layers.Dropout(
            dropout, seed=sub_seed(seed, 4), dtype=self.dtype_policy, name="attention_dropout"
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
                kernel_initializer=keras.initializers.GlorotUniform(seed=sub_seed(self.seed, i)),
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
        check_form(form)
        tokens = x.shape[token_axis(form)]
        queries = tokens if num_queries is None else check_num_queries(num_queries, tokens)
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
        axis = token_axis(form)
        if num_queries is None:
            return tuple(input_shape)
        queries = check_num_queries(num_queries, input_shape[axis])
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
        return attention_output_spec(self, x, shape, return_attention_scores)

    def get_config(self):
        config = super().get_config()
        config.update({"num_heads": self.num_heads, "dropout": self.dropout, "seed": self.seed})
        return config
