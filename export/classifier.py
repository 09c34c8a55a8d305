"""The export graph: a trained ViT with its preprocessing and softmax inside.

Every exported file (SavedModel-converted TFLite, Edge TPU) is `PixelClassifier`: the
model's own layers, run by `VisionTransformer.forward` with export options, between RGB
pixels as they come from an image decoder (0..255; uint8 in the integer files, float32 in
the float ones) and class probabilities. What the export adds to the model:

- the normalisation `(pixel - mean) / std` of the checkpoint's `preprocessing` spec,
  folded into the patch projection, a linear layer that sees each pixel once
  (`fold_normalisation`):

      W' = W / std[c(i)],    b' = b - sum_i W[i] * mean[c(i)] / std[c(i)]

  for row `i` of the `(P * P * C, D)` kernel and its channel `c(i) = i mod C` (patches are
  flattened row, column, channel). The graph does the same arithmetic as the Keras model
  on normalised images without any op for it, and an integer file carries the pixels
  exactly (uint8 scale 1, zero point 0), so image bytes go in as they are. A hybrid's
  projection reads the ResNet stem's feature map, and its first convolution pads with
  zeros in normalised units (a fold into it would pad with `mean`), so there the
  normalisation stays in the graph: one SUB and one MUL before the stem;
- block 0's first LayerNorm of the class-token row, which no image changes, as a constant
  computed in float (`TransformerBlock`'s `class_row_norm`);
- the last block computing the class token only (with class-token pooling);
- the op formulation of a profile (`keras_vit.layers.GRAPH_FORMS`): `"default"` builds
  the `"tflite"` form, `"edgetpu"` the `"edgetpu"` form with the logistic GELU;
- a softmax at the end, unless the model ends in one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import keras
import numpy as np

from keras_vit.model import VisionTransformer

logger = logging.getLogger(__name__)

Profile = Literal["default", "edgetpu"]
PROFILES: tuple[str, ...] = ("default", "edgetpu")


def channel_rows(values: Sequence[float], rows: int) -> np.ndarray:
    """Per-channel `values` repeated over a patch projection kernel's `rows`, which run in
    (row, column, channel) order; float64."""
    return np.tile(np.asarray(values, np.float64), rows // len(values))


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
    mean_rows = channel_rows(mean, kernel.shape[0])
    std_rows = channel_rows(std, kernel.shape[0])
    scaled = kernel.astype(np.float64) / std_rows[:, None]
    folded_bias = bias.astype(np.float64) - (scaled * mean_rows[:, None]).sum(axis=0)
    return scaled.astype(np.float32), folded_bias.astype(np.float32)


def rebuild(model: VisionTransformer, **overrides) -> VisionTransformer:
    """The same network, rebuilt from its config with `overrides`, float32, same weights.

    `gelu="logistic"` gives the same function with another op formulation, for example.
    The blocks' `mlp_spans` (an export-time split of the MLPs) are kept.
    """
    if not isinstance(model, VisionTransformer):
        raise TypeError(f"Expected a keras_vit VisionTransformer. Received: {type(model).__name__}")
    config = {**model.get_config(), "dtype": None, **overrides}
    clone = VisionTransformer.from_config(config)
    clone.set_weights([np.asarray(w, np.float32) for w in model.get_weights()])
    for layer in model.layers:  # export-time MLP spans (`export.mlp_spans`) carry over
        if getattr(layer, "mlp_spans", None):
            clone.get_layer(layer.name).mlp_spans = layer.mlp_spans
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


# Not registered for serialization: an export-time view of a saved ViT, never saved itself.
class PixelClassifier(keras.Model):
    """A trained ViT as exported: RGB pixels 0..255 in, class probabilities out.

    A float32 copy of `model` whose patch projection has the normalisation folded in,
    run by its own `forward` with the export options of `profile` (see the module
    docstring).

    Args:
        model: a trained `VisionTransformer` with a classification head.
        mean / std: the checkpoint's per-channel normalisation.
        profile: `"default"` (the TFLite graph) or `"edgetpu"` (ops the Coral Edge TPU
            maps, tokens laid out `[1, 1, tokens, width]`, GELU in its logistic form; a
            model trained with the exact erf GELU gets the tanh approximation, with a
            warning).
        gelu: rebuild with this GELU form (e.g. `"logistic"`), or None for the profile's.
        **kwargs: standard model arguments such as `name`.

    Call arguments:
        pixels: float32 `(batch, height, width, channels)` with values 0..255.

    Returns:
        float32 probabilities `(batch, num_classes)`.

    Example:
    >>> exported = PixelClassifier(model, mean=[127.5] * 3, std=[127.5] * 3)
    >>> exported(np.zeros((1, 32, 32, 3), np.float32)).shape
    TensorShape([1, 10])
    """

    def __init__(
        self,
        model: VisionTransformer,
        mean: Sequence[float],
        std: Sequence[float],
        profile: Profile = "default",
        gelu: str | None = None,
        **kwargs,
    ):
        if profile not in PROFILES:
            raise ValueError(f"Unknown profile {profile!r}; expected 'default' or 'edgetpu'")
        kwargs.setdefault("name", f"{model.name}_{'pixels' if profile == 'default' else profile}")
        super().__init__(**kwargs)
        check_classifier(model)
        if profile == "edgetpu" and gelu is None:
            gelu = "logistic"
            if model.gelu == "erf":
                logger.warning(
                    "Model '%s' uses the exact (erf) GELU; the Edge TPU graph computes the "
                    "tanh approximation; its parity figures show the cost",
                    model.name,
                )
        self.profile = profile
        self.form = "tflite" if profile == "default" else "edgetpu"
        # The fold below does the pixel scaling, so a `preprocessing` layer is left out.
        overrides = {"include_preprocessing": False, **({"gelu": gelu} if gelu else {})}
        self.vit = rebuild(model, **overrides)
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        encoder = self.vit.get_layer("patch_encoder")
        self.pixel_scale = None
        if self.vit.stem is None:
            kernel, bias = fold_normalisation(
                keras.ops.convert_to_numpy(encoder.projection.kernel),
                keras.ops.convert_to_numpy(encoder.projection.bias),
                self.mean,
                self.std,
            )
            encoder.projection.kernel.assign(kernel)
            encoder.projection.bias.assign(bias)
        else:
            self.pixel_scale = (
                np.asarray(self.mean, np.float32),
                (1.0 / np.asarray(self.std, np.float64)).astype(np.float32),
            )
        self.class_row_norm = None
        if encoder.use_class_token:
            row = encoder.class_token + encoder.position_embedding[:, :1]
            normed = self.vit.get_layer("encoderblock_0").norm1(row)
            self.class_row_norm = keras.ops.convert_to_numpy(normed)[0, 0]
        self.image_size = self.vit.image_size
        self.num_channels = self.vit.num_channels

    def call(self, pixels):
        vit = self.vit
        if self.pixel_scale is not None:
            mean, inverse_std = self.pixel_scale
            pixels = (pixels - mean) * inverse_std
        outputs = vit.forward(
            pixels,
            training=False,
            class_token_only_last=vit.pooling == "token",
            form=self.form,
            class_row_norm=self.class_row_norm,
        )
        if vit.classifier_activation == "softmax":
            return outputs
        return keras.ops.softmax(outputs, axis=-1)
