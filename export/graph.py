"""Inference graphs for export: the checkpoint's ViT with its preprocessing and softmax inside.

Every exported file takes RGB pixels as they come from an image decoder (0..255; uint8 in
the integer files, float32 in the float ones) and returns class probabilities. The
normalisation `(pixel - mean) / std` of the checkpoint's `preprocessing` spec is folded
into the patch projection, a linear layer that sees each pixel once:

    W' = W / std[c(i)],    b' = b - sum_i W[i] * mean[c(i)] / std[c(i)]

for row `i` of the `(P * P * C, D)` kernel and its channel `c(i) = i mod C` (patches are
flattened row, column, channel). The graph does the same arithmetic as the Keras model on
normalised images without any op for it, and an integer file can carry the pixels exactly
(uint8 scale 1, zero point 0), so image bytes go in as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np

from keras_vit.model import VisionTransformer


def fold_normalisation(
    kernel: np.ndarray, bias: np.ndarray, mean: Sequence[float], std: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Folds `(pixel - mean) / std` into a patch projection that acts on raw pixels.

    Args:
        kernel: `(P * P * C, D)` projection kernel, rows in (row, column, channel) order.
        bias: `(D,)` projection bias.
        mean / std: per-channel normalisation, `C` values each.

    Returns:
        `(kernel, bias)` for pixel inputs, float32.
    """
    channels = len(mean)
    if len(std) != channels or kernel.shape[0] % channels:
        raise ValueError(
            f"Expected {channels} std values and a kernel with a multiple of {channels} rows. "
            f"Received: std={list(std)}, kernel shape={kernel.shape}"
        )
    mean_rows = np.tile(np.asarray(mean, np.float64), kernel.shape[0] // channels)
    std_rows = np.tile(np.asarray(std, np.float64), kernel.shape[0] // channels)
    scaled = kernel.astype(np.float64) / std_rows[:, None]
    folded_bias = bias.astype(np.float64) - (scaled * mean_rows[:, None]).sum(axis=0)
    return scaled.astype(np.float32), folded_bias.astype(np.float32)


def rebuild(model: VisionTransformer, **overrides) -> VisionTransformer:
    """The same network, rebuilt from its config with `overrides`, float32, same weights.

    `gelu="logistic"` gives the same function with another op formulation, for example.
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"Expected a keras_vit VisionTransformer. Received: {type(model).__name__}")
    config = {**model.get_config(), "dtype": None, **overrides}
    clone = VisionTransformer.from_config(config)
    clone.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    return clone


def check_classifier(model: VisionTransformer) -> None:
    """Raises ValueError unless `model` ends in a classification head."""
    if not model.include_top:
        raise ValueError(
            f"Model '{model.name}' has no classification head (include_top=False); "
            "export needs a classifier"
        )
    if model.classifier_activation not in (None, "softmax", "linear"):
        raise ValueError(
            f"Model '{model.name}' ends in classifier_activation="
            f"{model.classifier_activation!r}; export expects logits or softmax"
        )


def _class_row_norm(model: VisionTransformer) -> np.ndarray | None:
    """`norm1` of block 0 applied to the class-token row, which no image changes."""
    encoder = model.get_layer("patch_encoder")
    if not encoder.use_class_token:
        return None
    row = (
        keras.ops.convert_to_numpy(encoder.class_token)[0]
        + keras.ops.convert_to_numpy(encoder.position_embedding)[0, :1]
    )
    normed = model.get_layer("encoderblock_0").norm1(row[None])
    return keras.ops.convert_to_numpy(normed)[0, 0]


def layer_norm(norm, x):
    """`norm(x)` for a `keras_vit.layers.LayerNorm`, with the variance as a mean of products.

    The same arithmetic as the layer; written with `centered * centered` because the
    converter fuses the layer's `square(x - mean)` into SQUARED_DIFFERENCE, which the int16
    kernels lack.
    """
    mean = keras.ops.mean(x, axis=-1, keepdims=True)
    centered = x - mean
    variance = keras.ops.mean(centered * centered, axis=-1, keepdims=True)
    y = centered * keras.ops.rsqrt(variance + norm.epsilon)
    return y * norm.gamma + norm.beta


def block_forward(block, x, normed=None, class_token_only=False):
    """Inference forward of a `TransformerBlock`, optionally with `norm1(x)` given.

    The same arithmetic as `TransformerBlock.call(x, training=False, class_token_only=...)`
    (dropout and drop-path are the identity at inference); tests check the two agree.
    """
    from keras_vit.layers import gelu

    if normed is None:
        normed = layer_norm(block.norm1, x)
    if class_token_only:
        x = x[:, :1]
    x = x + block.attention(normed, num_queries=1 if class_token_only else None)
    y = gelu(block.mlp_dense1(layer_norm(block.norm2, x)), block.gelu)
    return x + block.mlp_dense2(y)


# Not registered for serialization: an export-time view of a saved ViT, never saved itself.
class PixelClassifier(keras.Model):
    """A trained ViT as exported: RGB pixels 0..255 in, class probabilities out.

    The normalisation is folded into the patch projection (`fold_normalisation`). Block 0's
    first LayerNorm of the class-token row, which depends on no image, is a constant
    computed in float: in an integer graph the class row there has a standard deviation
    far below the patch rows', so a shared 8-bit scale left it about one step wide and the
    LayerNorm amplified that error into the token the classifier reads.

    Args:
        model: a trained `VisionTransformer` with a classification head.
        mean / std: the checkpoint's per-channel normalisation.
        gelu: rebuild with this GELU form (e.g. `"logistic"`), or None to keep the model's.
        **kwargs: standard model arguments such as `name`.

    Call arguments:
        pixels: float32 `(batch, height, width, channels)` with values 0..255.

    Returns:
        float32 probabilities `(batch, num_classes)`.
    """

    def __init__(
        self,
        model: VisionTransformer,
        mean: Sequence[float],
        std: Sequence[float],
        gelu: str | None = None,
        **kwargs,
    ):
        kwargs.setdefault("name", f"{model.name}_pixels")
        super().__init__(**kwargs)
        check_classifier(model)
        self.vit = rebuild(model, **({"gelu": gelu} if gelu else {}))
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        projection = self.vit.get_layer("patch_encoder").projection
        kernel, bias = fold_normalisation(
            keras.ops.convert_to_numpy(projection.kernel),
            keras.ops.convert_to_numpy(projection.bias),
            self.mean,
            self.std,
        )
        projection.kernel.assign(kernel)
        projection.bias.assign(bias)
        self.class_row_norm = _class_row_norm(self.vit)
        self.image_size = self.vit.image_size
        self.num_channels = self.vit.num_channels

    def call(self, pixels):
        vit = self.vit
        x = vit.get_layer("patch_encoder")(vit.get_layer("patches")(pixels))
        for i in range(vit.num_layers):
            block = vit.get_layer(f"encoderblock_{i}")
            normed = None
            if i == 0 and self.class_row_norm is not None:
                row = keras.ops.convert_to_tensor(self.class_row_norm[None, None])
                row = keras.ops.tile(row, (keras.ops.shape(x)[0], 1, 1))
                normed = keras.ops.concatenate([row, layer_norm(block.norm1, x[:, 1:])], axis=1)
            last = i == vit.num_layers - 1
            x = block_forward(block, x, normed, class_token_only=last and vit.pooling == "token")
        x = vit.get_layer("pooling")(layer_norm(vit.get_layer("encoder_norm"), x))
        if vit.representation_size is not None:
            x = vit.get_layer("pre_logits")(x)
        x = vit.get_layer("head")(x)
        if vit.classifier_activation == "softmax":
            return x
        return keras.ops.softmax(x, axis=-1)
