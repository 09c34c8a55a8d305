"""Activation-scale migration (SmoothQuant-style) from LayerNorm outputs into the next Dense.

A LayerNorm output channel `c` is `gamma[c] * n[c] + beta[c]`, and every consumer of that
output is a Dense layer, `y = x @ W + b`. Dividing `gamma[c]` and `beta[c]` by `s[c] > 0`
and multiplying row `c` of each consumer's kernel by `s[c]` computes the same `y` in exact
arithmetic (float rounding aside), but the quantized tensor between them has channel `c`
divided by `s[c]`. With SmoothQuant's choice (Xiao et al., 2023)

    s[c] = max|x[:, c]| ** alpha / max_consumers max|W[c, :]| ** (1 - alpha)

large activation channels move part of their range into the weights, which are quantized
per output channel; `alpha` trades the two (0: nothing moves into the weights' range
accounting, 1: every activation channel ends at the same magnitude, the weights take it all).

The pairs, in a `keras_vit` ViT: each block's `norm1` into attention's query, key and value;
`norm2` into `mlp_dense1`; `encoder_norm` into `head` (when there is no `pre_logits`).
The statistics come from the Keras model on calibration images (`norm_output_ranges`).
"""

from __future__ import annotations

import numpy as np

from export.layer_calls import wrapped_calls


def norm_pairs(model) -> list[tuple[object, list[object]]]:
    """`(LayerNorm layer, [the Dense layers that read its output])` of a keras_vit ViT."""
    pairs = []
    for layer in model.layers:
        if layer.name.startswith("encoderblock_"):
            attention = layer.attention
            pairs.append((layer.norm1, [attention.query, attention.key, attention.value]))
            pairs.append((layer.norm2, [layer.mlp_dense1]))
    names = {layer.name for layer in model.layers}
    if "encoder_norm" in names and "head" in names and "pre_logits" not in names:
        pairs.append((model.get_layer("encoder_norm"), [model.get_layer("head")]))
    return pairs


def norm_output_ranges(model, images: np.ndarray, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-channel max |output| of every LayerNorm of `model` on `images` (model's scaling).

    Keys are the layers' paths (`encoderblock_0/norm1`).
    """
    from keras_vit.layers import LayerNorm

    norms = [layer for layer in _sublayers(model) if isinstance(layer, LayerNorm)]
    return output_ranges(model, images, norms, batch_size)


def output_ranges(model, images: np.ndarray, layers, batch_size: int = 16) -> dict[str, np.ndarray]:
    """Per-channel max |output| of each of `layers` (sublayers of `model`) on `images`.

    Keys are the layers' paths; the model runs eagerly with a recording `call` on each
    of the layer instances (`export.layer_calls.wrapped_calls`).
    """
    import keras

    ranges: dict[str, np.ndarray] = {}

    def recording(layer, call):
        def wrapped(x, *args, **kwargs):
            y = call(x, *args, **kwargs)
            value = np.abs(keras.ops.convert_to_numpy(y)).reshape(-1, y.shape[-1]).max(axis=0)
            key = layer.path
            ranges[key] = np.maximum(ranges[key], value) if key in ranges else value
            return y

        return wrapped

    with wrapped_calls(layers, recording):
        for start in range(0, len(images), batch_size):
            model(np.asarray(images[start : start + batch_size], np.float32), training=False)
    return ranges


def _sublayers(model) -> list:
    found, stack = [], list(model.layers)
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack.extend(getattr(layer, "_layers", []))
    return found


def smoothing_scales(
    activation_max: np.ndarray, weight_max: np.ndarray, alpha: float, floor: float = 1e-5
) -> np.ndarray:
    """SmoothQuant's per-channel `s = a ** alpha / w ** (1 - alpha)` (both floored at `floor`)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected a smoothing alpha between 0 and 1. Received: {alpha!r}")
    a = np.maximum(np.asarray(activation_max, np.float64), floor)
    w = np.maximum(np.asarray(weight_max, np.float64), floor)
    return a**alpha / w ** (1.0 - alpha)


def migrate(norm, consumers, scales: np.ndarray) -> None:
    """Divides `norm`'s gamma and beta by `scales` and multiplies the consumers' kernel rows."""
    scales = np.asarray(scales, np.float64)
    for variable in (norm.gamma, norm.beta):
        variable.assign((np.asarray(variable.numpy(), np.float64) / scales).astype(np.float32))
    for dense in consumers:
        kernel = np.asarray(dense.kernel.numpy(), np.float64)
        dense.kernel.assign((kernel * scales[:, None]).astype(np.float32))


def smooth(model, images: np.ndarray, alpha: float):
    """A copy of a keras_vit ViT with LayerNorm output scales migrated into the next Dense.

    Args:
        model: a `VisionTransformer`.
        images: calibration images as the model takes them (already normalised).
        alpha: the migration strength, 0..1 (`smoothing_scales`).

    Returns:
        A new model computing the same function (to float rounding).
    """
    from export.classifier import rebuild

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected a smoothing alpha between 0 and 1. Received: {alpha!r}")
    smoothed = rebuild(model)
    ranges = norm_output_ranges(smoothed, images)
    for norm, consumers in norm_pairs(smoothed):
        weight_max = np.max(
            [np.abs(np.asarray(d.kernel.numpy())).max(axis=1) for d in consumers], axis=0
        )
        migrate(norm, consumers, smoothing_scales(ranges[norm.path], weight_max, alpha))
    return smoothed
