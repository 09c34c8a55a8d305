"""`LayerNorm`, written from mean and variance so it quantizes to integer ops."""

from __future__ import annotations

import keras
from keras import ops

from keras_vit.layers.forms import (
    GraphForm,
    check_form,
)


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
        check_form(form)
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
