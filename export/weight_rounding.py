"""int8 weight rounding with error feedback (GPTQ), on the converter's own grid.

The converter quantizes each Dense kernel to int8 symmetrically, one step per output channel
(`max |w| / 127`), by rounding every weight to the nearest level. GPTQ (Frantar et al.,
2022, arXiv 2210.17323) rounds the same grid in a better order for the layer's output: the
input rows are rounded one after the other, and each row's rounding error, weighted by the
inverse Hessian `(X^T X)^-1` of the layer's inputs on calibration images, is spread over the
rows not yet rounded. The kernels are written back in float, already on the grid: the
weights that set a channel's step (`|w| = 127` steps) take no feedback, so the converter
derives the same steps and keeps these exact values.

The converter fuses a LayerNorm's gamma into the FULLY_CONNECTED ops that read it, which would
scale the kernel rows off the grid; `fold_norms` folds gamma and beta into those kernels
first (the same function), so there is nothing left to fuse.

This changes the function (the weights are rounded), so only the quantized files are built
from a rounded model; the float files stay exact.
"""

from __future__ import annotations

import numpy as np

from export.layer_calls import wrapped_calls

WEIGHT_ROUNDINGS: tuple[str, ...] = ("nearest", "gptq")


def fold_norms(model):
    """A copy with each LayerNorm's gamma and beta folded into the Dense layers reading it."""
    from export.classifier import rebuild
    from export.smoothing import norm_pairs

    folded = rebuild(model)
    for norm, consumers in norm_pairs(folded):
        gamma = np.asarray(norm.gamma.numpy(), np.float64)
        beta = np.asarray(norm.beta.numpy(), np.float64)
        for dense in consumers:
            kernel = np.asarray(dense.kernel.numpy(), np.float64)
            bias = np.asarray(dense.bias.numpy(), np.float64) + beta @ kernel
            dense.bias.assign(bias.astype(np.float32))
            dense.kernel.assign((gamma[:, None] * kernel).astype(np.float32))
        norm.gamma.assign(np.ones_like(gamma, np.float32))
        norm.beta.assign(np.zeros_like(beta, np.float32))
    return folded


def dense_layers(model) -> list[tuple[object, list[tuple[int, int]] | None]]:
    """`(Dense layer, its input spans or None)` for every Dense of a keras_vit ViT: the patch
    projection, each block's attention and MLP (the second MLP Dense with its unit spans,
    `export.mlp_spans`), `pre_logits` and `head` where present."""
    names = {layer.name for layer in model.layers}
    found = []
    if "patch_encoder" in names:
        found.append((model.get_layer("patch_encoder").projection, None))
    for layer in model.layers:
        if layer.name.startswith("encoderblock_"):
            attention = layer.attention
            for dense in (attention.query, attention.key, attention.value, attention.out):
                found.append((dense, None))
            found.append((layer.mlp_dense1, None))
            found.append((layer.mlp_dense2, list(layer.mlp_spans or []) or None))
    for name in ("pre_logits", "head"):
        if name in names:
            found.append((model.get_layer(name), None))
    return found


def dense_inputs(model, transform):
    """A context manager: within it, each Dense of `model` reads `transform(dense, spans, x)`
    for its input `x` (`spans` as `dense_layers` gives them)."""
    layers = dense_layers(model)
    spans = {id(dense): dense_spans for dense, dense_spans in layers}

    def wrap(dense, call):
        return lambda x, *args, **kwargs: call(
            transform(dense, spans[id(dense)], x), *args, **kwargs
        )

    return wrapped_calls([dense for dense, _ in layers], wrap)


def weight_grid(kernel: np.ndarray, spans) -> np.ndarray:
    """The converter's int8 step per weight: `max |w| / 127` of its output channel (and span)."""
    steps = np.empty_like(kernel, dtype=np.float64)
    for start, stop in spans or [(0, kernel.shape[0])]:
        steps[start:stop] = np.abs(kernel[start:stop]).max(axis=0) / 127.0
    return np.where(steps == 0.0, 1.0, steps)


def nearest_round(kernel: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """`kernel` rounded to the nearest multiple of `steps`, within -127..127 steps."""
    return np.clip(np.round(kernel / steps), -127.0, 127.0) * steps


def gptq_round(kernel: np.ndarray, steps: np.ndarray, hessian: np.ndarray, damp: float = 0.01):
    """`kernel` (inputs x outputs) on the grid `steps`, rounded with GPTQ's error feedback.

    Args:
        kernel: the float kernel, one row per input.
        steps: the grid step of every weight (`weight_grid`).
        hessian: `X^T X` of the layer's inputs `X` (rows: samples).
        damp: added to the Hessian's diagonal, as a fraction of its mean.

    Returns:
        The rounded kernel (float64, multiples of `steps` within -127..127 steps).
    """
    weights = np.array(kernel, np.float64)
    hessian = np.array(hessian, np.float64)
    dead = np.diag(hessian) == 0.0
    hessian[dead, dead] = 1.0
    weights[dead] = 0.0
    hessian += damp * np.mean(np.diag(hessian)) * np.eye(len(hessian))
    upper = np.linalg.cholesky(np.linalg.inv(hessian)).T
    fixed = np.isclose(np.abs(kernel), 127.0 * steps, rtol=1e-6)
    rounded = np.empty_like(weights)
    for i in range(len(weights)):
        rounded[i] = nearest_round(weights[i], steps[i])
        error = (weights[i] - rounded[i]) / upper[i, i]
        weights[i + 1 :] -= np.outer(upper[i, i + 1 :], error) * ~fixed[i + 1 :]
    return rounded


def round_weights(model, images: np.ndarray, method: str = "gptq", batch_size: int = 16, std=None):
    """A copy of a keras_vit ViT, LayerNorms folded, every Dense kernel on the int8 grid.

    Args:
        model: a `VisionTransformer`.
        images: calibration images as the model takes them (already normalised).
        method: `"gptq"` (error feedback on the inputs `images` give each Dense) or
            `"nearest"` (what the converter does itself).
        batch_size: images per forward pass while recording the inputs.
        std: the per-channel normalisation std that `export.classifier.PixelClassifier`
            folds into a plain ViT's patch projection (kernel rows divided by it), or None.
            Given, the projection is rounded on the grid of the folded kernel, so the file
            keeps it whatever the std; None rounds the kernel as it is (the same when every
            channel has the same std).

    Returns:
        The new model.
    """
    import keras

    if method not in WEIGHT_ROUNDINGS:
        raise ValueError(f"Expected `method` to be one of {WEIGHT_ROUNDINGS}. Received: {method!r}")
    rounded = fold_norms(model)
    hessians: dict[str, np.ndarray] = {}
    if method == "gptq":

        def record(dense, spans, x):
            rows = keras.ops.convert_to_numpy(x).astype(np.float64).reshape(-1, x.shape[-1])
            hessians[dense.path] = hessians.get(dense.path, 0.0) + rows.T @ rows
            return x

        with dense_inputs(rounded, record):
            for start in range(0, len(images), batch_size):
                rounded(np.asarray(images[start : start + batch_size], np.float32), training=False)
    from export.classifier import channel_rows

    projection = None  # the kernel PixelClassifier divides by `std`
    if std is not None and rounded.stem is None:
        projection = rounded.get_layer("patch_encoder").projection
    for dense, spans in dense_layers(rounded):
        kernel = np.asarray(dense.kernel.numpy(), np.float64)
        # Row scales of the kernel the file holds: 1 / std on the folded projection.
        scale = np.ones((len(kernel), 1))
        if dense is projection:
            scale = 1.0 / channel_rows(std, len(kernel))[:, None]
        kernel = kernel * scale
        steps = weight_grid(kernel, spans)
        if method == "gptq":
            hessian = hessians[dense.path] / scale / scale.T  # of the inputs times std
            values = gptq_round(kernel, steps, hessian)
        else:
            values = nearest_round(kernel, steps)
        dense.kernel.assign((values / scale).astype(np.float32))
    return rounded
