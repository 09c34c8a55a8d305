"""The ViT formulated for the Coral Edge TPU: the same function, from ops it maps.

The Edge TPU compiler maps a graph only up to its first unsupported op (see
`export.edgetpu_check` for the published table), and the default export graph stops it at
the patch reshape (a 6-D tensor). This graph computes the same function as the checkpoint's
model (up to float rounding) from ops in the table, every tensor 4-D at most with batch 1
and tokens laid out as an image one pixel high, `[1, 1, tokens, width]`:

- patches: a strided CONV_2D whose kernel is the patch projection reshaped to
  `(P, P, C, D)` (the same weights; normalisation folded in, see `export.graph`);
- class token and position embedding: PAD a zero token in front, ADD one constant (the
  table allows a constant CONCATENATION input only if it is all zeros);
- token-wise Dense layers: 1x1 CONV_2D (FULLY_CONNECTED must have a one-dimensional
  output);
- LayerNorm: SUM over channels times `1 / D` (MEAN may reduce only x / y), SUB, MUL, RSQRT;
  block 0's class-row LayerNorm, which no image changes, is a constant (as in `graph`);
- attention, per head, without BATCH_MATMUL: scores `SUM(MUL(q[t, 1, d], k[1, s, d]))` over
  `d`; softmax without SOFTMAX (it must be one-dimensional) or EXP (not in the table):
  `e = exp(z)` for `z = s - max(s) <= 0` is `sigmoid(z) / sigmoid(-z)`, the division a
  square of RSQRT; the weighted sum of values `SUM(MUL(e[t, s, 1], v[1, s, d]))` over `s`
  is divided by `sum(e)` after the sum (each row of `e` has its maximum at exactly 1, so 8
  bits resolve it well);
- GELU: the logistic form `x * sigmoid(2u)` (LOGISTIC, MUL, ADD; the same function as the
  tanh form, which the converter fuses into a GELU op the Edge TPU lacks; a model trained
  with the exact erf GELU gets the tanh approximation here, with a warning).

Every step is exact arithmetic on real numbers; the cost is precision in 8 bits, which the
export report measures (parity and accuracy of `model_edgetpu_int8.tflite`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from export.graph import check_classifier, fold_normalisation, rebuild

logger = logging.getLogger(__name__)

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _np(variable) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(variable), np.float32)


def _dense_as_conv(dense, scale: float = 1.0) -> dict:
    kernel = _np(dense.kernel) * scale
    return {"kernel": kernel[None, None], "bias": _np(dense.bias) * scale}


def _norm(norm) -> dict:
    return {"gamma": _np(norm.gamma), "beta": _np(norm.beta), "epsilon": float(norm.epsilon)}


class EdgeTPUClassifier(keras.Model):
    """A trained ViT as an Edge TPU graph: RGB pixels 0..255 in, probabilities out.

    Not registered for serialization: an export-time view of a saved ViT, whose weights it
    holds as constants.

    Args:
        model: a trained `VisionTransformer` with a classification head.
        mean / std: the checkpoint's per-channel normalisation.
        **kwargs: standard model arguments such as `name`.

    Call arguments:
        pixels: float32 `(batch, height, width, channels)`, values 0..255 (the TFLite
            file has batch 1).

    Returns:
        float32 probabilities `(batch, num_classes)`.
    """

    def __init__(self, model, mean: Sequence[float], std: Sequence[float], **kwargs):
        kwargs.setdefault("name", f"{model.name}_edgetpu")
        super().__init__(**kwargs)
        check_classifier(model)
        if model.gelu == "erf":
            logger.warning(
                "Model '%s' uses the exact (erf) GELU; the Edge TPU graph computes the tanh "
                "approximation (at most 4.7e-4 apart); its parity figures show the cost",
                model.name,
            )
        vit = rebuild(model, gelu="logistic")
        self.image_size = vit.image_size
        self.num_channels = vit.num_channels
        self.patch_size = vit.patch_size
        self.hidden_size = vit.hidden_size
        self.num_heads = vit.num_heads
        self.pooling = vit.pooling
        self.classifier_activation = vit.classifier_activation

        encoder = vit.get_layer("patch_encoder")
        kernel, bias = fold_normalisation(
            _np(encoder.projection.kernel), _np(encoder.projection.bias), mean, std
        )
        p, c = vit.patch_size, vit.num_channels
        self.patch_kernel = kernel.reshape(p, p, c, vit.hidden_size)
        self.patch_bias = bias
        position = _np(encoder.position_embedding)[0]
        self.has_class_token = encoder.use_class_token
        if self.has_class_token:
            position = position.copy()
            position[0] += _np(encoder.class_token)[0, 0]
        self.embedding = position[None, None]  # (1, 1, T, D)

        head_dim = vit.hidden_size // vit.num_heads
        self.blocks = []
        for i in range(vit.num_layers):
            block = vit.get_layer(f"encoderblock_{i}")
            attention = block.attention
            self.blocks.append(
                {
                    "norm1": _norm(block.norm1),
                    "norm2": _norm(block.norm2),
                    "query": _dense_as_conv(attention.query, head_dim**-0.5),
                    "key": _dense_as_conv(attention.key),
                    "value": _dense_as_conv(attention.value),
                    "out": _dense_as_conv(attention.out),
                    "mlp1": _dense_as_conv(block.mlp_dense1),
                    "mlp2": _dense_as_conv(block.mlp_dense2),
                }
            )
        self.class_row_norm = None
        if self.has_class_token:
            norm = self.blocks[0]["norm1"]
            row = self.embedding[0, 0, :1]
            centered = row - row.mean(-1, keepdims=True)
            variance = (centered * centered).mean(-1, keepdims=True)
            normed = centered / np.sqrt(variance + norm["epsilon"]) * norm["gamma"] + norm["beta"]
            padded = np.zeros_like(self.embedding)
            padded[0, 0, 0] = normed[0]
            self.class_row_norm = padded
        self.encoder_norm = _norm(vit.get_layer("encoder_norm"))
        self.pre_logits = None
        if vit.representation_size is not None:
            layer = vit.get_layer("pre_logits")
            self.pre_logits = (_np(layer.kernel), _np(layer.bias))
        head = vit.get_layer("head")
        self.head = (_np(head.kernel), _np(head.bias))

    # --- pieces ---

    @staticmethod
    def _conv1x1(x, weights):
        return ops.conv(x, weights["kernel"], strides=1, padding="valid") + weights["bias"]

    @staticmethod
    def _layer_norm(x, norm):
        inverse_width = 1.0 / x.shape[-1]
        mean = ops.sum(x, axis=-1, keepdims=True) * inverse_width
        centered = x - mean
        variance = ops.sum(centered * centered, axis=-1, keepdims=True) * inverse_width
        return centered * ops.rsqrt(variance + norm["epsilon"]) * norm["gamma"] + norm["beta"]

    @staticmethod
    def _gelu(x):
        inner = x + 0.044715 * (x * x * x)
        return x * ops.sigmoid((2.0 * _SQRT_2_OVER_PI) * inner)

    def _attention(self, x, weights, class_token_only=False):
        queries = x[:, :, :1] if class_token_only else x
        tokens = queries.shape[2]
        query = ops.split(self._conv1x1(queries, weights["query"]), self.num_heads, axis=-1)
        key = ops.split(self._conv1x1(x, weights["key"]), self.num_heads, axis=-1)
        value = ops.split(self._conv1x1(x, weights["value"]), self.num_heads, axis=-1)
        heads = []
        for q, k, v in zip(query, key, value, strict=True):
            # q: (1, 1, Q, d) -> (1, Q, 1, d); scores (1, Q, T) = sum_d q[t, d] k[s, d].
            q = ops.reshape(q, (-1, tokens, 1, q.shape[-1]))
            scores = ops.sum(q * k, axis=-1)
            peak = ops.max(scores, axis=-1, keepdims=True)
            # exp(z) = sigmoid(z) / sigmoid(-z), z <= 0; 1 / a = rsqrt(a) ** 2.
            inverse = ops.rsqrt(ops.sigmoid(peak - scores))
            weights_ = ops.sigmoid(scores - peak) * inverse * inverse
            norm = ops.rsqrt(ops.sum(weights_, axis=-1, keepdims=True))  # (1, Q, 1)
            # sum_s e[t, s] v[s, :]: (1, Q, T, 1) * (1, 1, T, d) summed over s.
            mixed = ops.sum(ops.expand_dims(weights_, -1) * v, axis=2)  # (1, Q, d)
            heads.append(ops.reshape(mixed * norm * norm, (-1, 1, tokens, v.shape[-1])))
        return self._conv1x1(ops.concatenate(heads, axis=-1), weights["out"])

    def call(self, pixels):
        x = ops.conv(pixels, self.patch_kernel, strides=self.patch_size, padding="valid")
        x = x + self.patch_bias
        grid = x.shape[1] * x.shape[2]
        x = ops.reshape(x, (-1, 1, grid, self.hidden_size))
        if self.has_class_token:
            x = ops.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))
        x = x + self.embedding
        for i, weights in enumerate(self.blocks):
            if i == 0 and self.class_row_norm is not None:
                normed = self._layer_norm(x[:, :, 1:], weights["norm1"])
                normed = ops.pad(normed, ((0, 0), (0, 0), (1, 0), (0, 0)))
                normed = normed + self.class_row_norm
            else:
                normed = self._layer_norm(x, weights["norm1"])
            # As keras_vit.inference: with token pooling the last block computes token 0 only.
            class_token_only = self.pooling == "token" and i == len(self.blocks) - 1
            if class_token_only:
                x = x[:, :, :1]
            x = x + self._attention(normed, weights, class_token_only)
            hidden = self._conv1x1(self._layer_norm(x, weights["norm2"]), weights["mlp1"])
            hidden = self._gelu(hidden)
            x = x + self._conv1x1(hidden, weights["mlp2"])
        if self.pooling == "token":
            x = self._layer_norm(x[:, :, :1], self.encoder_norm)
        else:
            x = ops.mean(self._layer_norm(x, self.encoder_norm), axis=2, keepdims=True)
        x = ops.reshape(x, (-1, self.hidden_size))
        if self.pre_logits is not None:
            x = ops.tanh(ops.matmul(x, self.pre_logits[0]) + self.pre_logits[1])
        logits = ops.matmul(x, self.head[0]) + self.head[1]
        if self.classifier_activation == "softmax":
            return logits
        return ops.softmax(logits, axis=-1)
