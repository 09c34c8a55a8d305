"""Runs in a fresh process: two logical CPU devices, then the same training run on one
device and mirrored over both; prints the results as one JSON line."""

import dataclasses
import json
import sys

import tensorflow as tf

(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

from keras_vit import distribute, train, training  # noqa: E402

out = sys.argv[1]
NANO = dict(image_size=16, patch_size=8, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)
# No drop-path: its random masks are drawn per replica batch, so they differ between a
# 16-image batch on one device and two 8-image halves.
config = dataclasses.replace(
    training.make_config("digits", architecture=NANO, epochs=2, batch_size=16, seed=3),
    drop_path_rate=0.0,
)
results = {}
for name in ("default", "mirrored"):
    result = training.train(config, f"{out}/{name}", strategy=name, verbose=0)
    results[name] = {
        "history": result.history,
        "replicas": result.metrics["training"]["replicas"],
        "top1": result.metrics["top1"],
    }

# Mixed precision under MirroredStrategy: bfloat16 (what a CPU gets) through train() ...
mixed = dataclasses.replace(config, epochs=1, mixed_precision=True)
result = training.train(mixed, f"{out}/mixed", strategy="mirrored", verbose=0)
results["mixed"] = {"history": result.history, "training": result.metrics["training"]}

# ... and float16 with Keras' automatic loss scaling (what GPUs get), a few steps.
strategy = distribute.make_strategy("mirrored")
with strategy.scope():
    model = training.build_training_model(
        dataclasses.replace(config, mixed_precision=True), 10, 10, mixed_policy="mixed_float16"
    )
    images = tf.random.stateless_uniform([64, 16, 16, 3], seed=[1, 2], minval=-1, maxval=1)
    labels = tf.one_hot(tf.range(64) % 10, 10)
    history = model.fit(images, labels, batch_size=16, epochs=2, verbose=0)
results["float16"] = {
    "optimizer": type(model.optimizer).__name__,
    "is_loss_scale": isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer),
    "block_policy": model.get_layer("encoderblock_0").dtype_policy.name,
    "loss": history.history["loss"],
}

# A global batch the two replicas cannot split: the CLI's one-line error.
code = train.main(["--output", f"{out}/odd", "--strategy", "mirrored", "--batch-size", "15"])
results["odd_batch_exit"] = code
print("RESULTS " + json.dumps(results))
