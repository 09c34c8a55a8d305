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
class-token pooling (the default) its last `TransformerBlock` computes the class token only,
the one token the head reads (`VisionTransformer.call`), the same outputs to float rounding.

Through Keras's own API, `model.compile(jit_compile=True)` then
`model.predict_on_batch(images)` also compiles this forward.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from keras_vit.model import VisionTransformer


def predict_function(
    model: VisionTransformer, jit_compile: bool = True
) -> Callable[[np.ndarray], np.ndarray]:
    """A compiled inference forward of `model` (dropout off), traced once per input shape.

    The forward is `model(images, training=False)`: with class-token pooling its last block
    computes the class token only (`VisionTransformer.call`).

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
        return model(images, training=False)

    def predict(images) -> np.ndarray:
        images = tf.convert_to_tensor(images, tf.float32)
        model._check_images(images)
        return forward(images).numpy()

    predict.jit_compile = jit_compile
    return predict
