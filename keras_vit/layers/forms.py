"""The op formulations shared by the layers: GELU forms, graph forms, token layouts.

`GRAPH_FORMS` names the three formulations of the one inference computation (training
graph, TFLite export graph, Coral Edge TPU graph); the layers take `form=` and this module
holds what they share: the GELU forms, `dense_apply` (a Dense layer in any token layout)
and the token-layout helpers.
"""

from __future__ import annotations

import math
from typing import Literal

import keras
from keras import ops

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


def check_num_queries(num_queries, tokens) -> int:
    """`num_queries` checked against the token count (None means every token)."""
    if isinstance(num_queries, bool) or not isinstance(num_queries, int) or num_queries < 1:
        raise ValueError(f"Expected `num_queries` to be a positive int. Received: {num_queries!r}")
    if tokens is not None and num_queries > tokens:
        raise ValueError(
            f"Expected `num_queries` <= the number of tokens. "
            f"Received: num_queries={num_queries}, tokens={tokens}"
        )
    return num_queries


def attention_output_spec(layer, x, shape, return_attention_scores: bool):
    """The output spec `shape` of an attention layer or block, and its probabilities'."""
    output = keras.KerasTensor(shape, dtype=layer.compute_dtype)
    if not return_attention_scores:
        return output
    scores_shape = (x.shape[0], layer.num_heads, shape[1], x.shape[1])
    return output, keras.KerasTensor(scores_shape, dtype=layer.compute_dtype)


def check_form(form) -> None:
    """Raises ValueError unless `form` is one of `GRAPH_FORMS`."""
    if form not in GRAPH_FORMS:
        raise ValueError(f"Expected `form` to be one of {GRAPH_FORMS}. Received: form={form!r}")


def token_axis(form: GraphForm) -> int:
    """The axis that indexes tokens in the layout of `form`."""
    return 2 if form == "edgetpu" else 1


def first_tokens(x, count: int, form: GraphForm = "keras"):
    """The first `count` tokens of `x`, in the token layout of `form` (see `GRAPH_FORMS`)."""
    if form == "edgetpu":
        return x[:, :, :count]
    return x[:, :count]


def dense_apply(
    dense,
    x,
    form: GraphForm = "keras",
    scale: float | None = None,
    columns: tuple[int, int] | None = None,
    rows: tuple[int, int] | None = None,
    bias: bool = True,
):
    """`dense(x)` (times `scale`), in the token layout of `form`, or a slice of it.

    In the `"edgetpu"` layout `(batch, 1, tokens, width)` the Dense layer runs as a 1x1
    CONV_2D of its own kernel (the Edge TPU maps FULLY_CONNECTED only with a 1-D output),
    with `scale` folded into the kernel and bias; otherwise it is the layer's own call,
    then a multiplication by `scale`.

    `columns=(start, stop)` computes only those output units; `rows=(start, stop)` reads
    only those input units (`x` holds just them) and gives that part of the sum over
    inputs; `bias=False` leaves the bias out (for the parts after the first). Summing the
    row parts, one with the bias, gives the full output: export graphs use this to run a
    layer as several ops, each with its own quantization ranges.

    Args:
        dense: a built `keras.layers.Dense` without activation when sliced.
        x: its input, in the layout of `form`.
        form: one of `GRAPH_FORMS`.
        scale: a constant factor on the output, or None.
        columns / rows: `(start, stop)` unit ranges of the kernel, or None for all.
        bias: whether to add the bias (or its `columns` slice).

    Returns:
        The output, in the layout of `form`.
    """
    sliced = columns is not None or rows is not None or not bias
    if form != "edgetpu" and not sliced:
        y = dense(x)
        return y if scale is None else y * scale
    kernel, offset = dense.kernel, dense.bias
    if columns is not None:
        kernel, offset = kernel[:, columns[0] : columns[1]], offset[columns[0] : columns[1]]
    if rows is not None:
        kernel = kernel[rows[0] : rows[1]]
    if scale is not None:
        kernel, offset = kernel * scale, offset * scale
    if form == "edgetpu":
        y = ops.conv(x, kernel[None, None], strides=1, padding="valid")
    else:
        y = ops.matmul(x, kernel)
    y = y + offset if bias else y
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
