"""The encoder block: pre-LN self-attention and GELU MLP with residuals (`TransformerBlock`)."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.forms import (
    GELU_FORMS,
    GeluForm,
    GraphForm,
    attention_output_spec,
    dense_apply,
    first_tokens,
    gelu,
    token_axis,
)
from keras_vit.layers.normalization import LayerNorm
from keras_vit.validation import check_positive_int, check_rate, sub_seed


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
        check_rate("rate", rate)
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
        check_positive_int("num_heads", num_heads)
        check_positive_int("mlp_dim", mlp_dim)
        check_rate("dropout", dropout)
        check_rate("attention_dropout", attention_dropout)
        check_rate("drop_path_rate", drop_path_rate)
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
            num_heads, attention_dropout, seed=sub_seed(seed, 0), dtype=policy, name="attention"
        )
        self.attention_output_dropout = keras.layers.Dropout(
            dropout, seed=sub_seed(seed, 10), dtype=policy, name="attention_output_dropout"
        )
        self.norm2 = LayerNorm(layer_norm_epsilon, dtype=policy, name="norm2")
        self.mlp_dense1 = keras.layers.Dense(
            mlp_dim,
            kernel_initializer=keras.initializers.GlorotUniform(seed=sub_seed(seed, 11)),
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6, seed=sub_seed(seed, 12)),
            dtype=policy,
            name="mlp_dense1",
        )
        self.mlp_dropout1 = keras.layers.Dropout(
            dropout, seed=sub_seed(seed, 13), dtype=policy, name="mlp_dropout1"
        )
        self.mlp_dense2 = None  # built in build(), its width is the input width
        self.mlp_dropout2 = keras.layers.Dropout(
            dropout, seed=sub_seed(seed, 16), dtype=policy, name="mlp_dropout2"
        )
        self.drop_path = DropPath(
            drop_path_rate, seed=sub_seed(seed, 17), dtype=policy, name="drop_path"
        )
        # Contiguous `(start, stop)` spans of hidden units the export graphs run as separate
        # MLPs (`export.mlp_spans`); None: one MLP. Not part of the config.
        self.mlp_spans: tuple[tuple[int, int], ...] | None = None

    def build(self, input_shape):
        hidden_size = input_shape[-1]
        self.mlp_dense2 = keras.layers.Dense(
            hidden_size,
            kernel_initializer=keras.initializers.GlorotUniform(seed=sub_seed(self.seed, 14)),
            bias_initializer=keras.initializers.RandomNormal(
                stddev=1e-6, seed=sub_seed(self.seed, 15)
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
            x = first_tokens(x, 1, form)
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

        y = self._mlp(self.norm2(x, form=form), form, training)
        x = x + self.drop_path(y, training=training)
        if return_attention_scores:
            return x, scores
        return x

    def _mlp(self, x, form: GraphForm, training):
        """`Dense -> GELU -> Dropout -> Dense -> Dropout`; in export forms, per unit span.

        With `mlp_spans` set (export graphs only), each span of hidden units runs as its
        own first Dense, GELU and second Dense, and the parts are summed: the same
        function, but every span gets its own quantization ranges.
        """
        spans = self.mlp_spans if form != "keras" else None
        if not spans:
            y = dense_apply(self.mlp_dense1, x, form)
            y = self.mlp_dropout1(gelu(y, self.gelu), training=training)
            return self.mlp_dropout2(dense_apply(self.mlp_dense2, y, form), training=training)
        total = None
        for span in spans:
            y = gelu(dense_apply(self.mlp_dense1, x, form, columns=span), self.gelu)
            y = dense_apply(self.mlp_dense2, y, form, rows=span, bias=total is None)
            total = y if total is None else total + y
        return total

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
        shape[token_axis(form)] = 1
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
        return attention_output_spec(self, x, shape, return_attention_scores)

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
