"""Fast inference of a ViT on CPU: one compiled TensorFlow function per input shape.

`model.predict` is built for data sets: per call it wraps the input in a data adapter, runs
callbacks and stitches batches. For one image or one batch at a time (a service, a demo, a
latency benchmark) `predict_function(model)` is the short path: the forward pass traced
once per input shape into a `tf.function`, XLA-compiled by default (`jit_compile=True`),
which fuses the LayerNorm, softmax and GELU element-wise ops into their neighbours.

Example:
>>> model = keras_vit.ViT_B16(num_classes=10)
>>> predict = keras_vit.inference.predict_function(model)
>>> logits = predict(images)  # float32 [batch, 224, 224, 3] in [-1, 1] -> NumPy logits

The forward is the model's own inference call, `model(images, training=False)`: with
class-token pooling (the default) its last `TransformerBlock` computes the class token only
(`class_token_only=True`), the one token the head reads: 6.9 % fewer multiply-adds for a
12-block ViT at 224, 18-19 % for a 4-block one, the same outputs to float rounding. `predict`,
`evaluate` and `model(images)` get the same; `model.fit` (`training=True`) computes the full
last block, as it always did, so a seeded training run repeats its weights (unless the model
was built with `train_class_token_only=True`, the opt-in for training).

Through Keras's own API, `model.compile(jit_compile=True)` then
`model.predict_on_batch(images)` also compiles this forward.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_vit.model import VisionTransformer


def inference_forward(model: VisionTransformer, images):
    """`model(images, training=False)`: the inference forward that `predict_function` compiles.

    With `pooling="token"` the model's own `call` has the last `TransformerBlock` compute
    the class token only (`VisionTransformer.call`).

    Args:
        model: a `VisionTransformer`.
        images: float `(batch, height, width, channels)` in [-1, 1].

    Returns:
        The model's outputs (logits, probabilities or pooled features), as a tensor.
    """
    return model(images, training=False)


def predict_function(
    model: VisionTransformer, jit_compile: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled inference forward of `model` (dropout off), traced once per input shape.

    The forward is `inference_forward`, `model(images, training=False)`: with class-token
    pooling its last block computes the class token only (`VisionTransformer.call`).

    Args:
        model: a `VisionTransformer` (any head, any image size).
        jit_compile: compile with XLA (the default); False gives a plain TensorFlow graph.

    Returns:
        A function from float32 images `(batch, height, width, channels)` (NumPy or tensor)
        to the model's outputs as a NumPy array. The first call for each new input shape
        traces (and compiles) the graph; later calls reuse it.

    Raises:
        TypeError: `model` is not a `VisionTransformer`.
    """
    import tensorflow as tf

    if not isinstance(model, VisionTransformer):
        raise TypeError(f"Expected a keras_vit VisionTransformer. Received: {type(model).__name__}")

    @tf.function(jit_compile=jit_compile, reduce_retracing=False)
    def forward(images):
        return inference_forward(model, images)

    def predict(images) -> np.ndarray:
        images = tf.convert_to_tensor(images, tf.float32)
        model._check_images(images)
        return forward(images).numpy()

    predict.jit_compile = jit_compile
    return predict
