"""Shared test helpers: serialization round trips for layers and models, benchmark imports."""

from __future__ import annotations

import importlib
import inspect
import json
import sys
from pathlib import Path

import keras
import numpy as np

from keras_vit import training
from keras_vit.atomic import atomic_write_json, atomic_write_text
from keras_vit.run_dir import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    LABELS_FILE,
    MODEL_FILE,
    preprocessing_spec,
)

# Keys every Keras layer adds to its config on top of its own constructor arguments.
BASE_CONFIG_KEYS = {"name", "trainable", "dtype"}


# `python -m keras_vit.train` flags of a one-block ViT on 16x16 images (CLI tests).
NANO_FLAGS = [
    "--image-size=16",
    "--patch-size=8",
    "--hidden-size=16",
    "--num-layers=1",
    "--num-heads=2",
    "--mlp-dim=32",
]


def constructor_params(cls) -> set[str]:
    """Names of the explicit `__init__` parameters of `cls` (no self/args/kwargs)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {
        p.name
        for p in params
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def check_config_roundtrip(obj) -> None:
    """`from_config(get_config())` gives the same config, and its keys are the arguments."""
    config = obj.get_config()
    assert set(config) == constructor_params(type(obj)) | BASE_CONFIG_KEYS, (
        "get_config() keys differ from __init__ parameters"
    )
    clone = type(obj).from_config(config)
    assert json.dumps(clone.get_config(), sort_keys=True) == json.dumps(config, sort_keys=True)


def check_saving_roundtrip(model: keras.Model, inputs, tmp_path) -> None:
    """`.keras` save -> `load_model(safe_mode=True)` gives identical outputs."""
    expected = keras.ops.convert_to_numpy(model(inputs, training=False))
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path, safe_mode=True)
    actual = keras.ops.convert_to_numpy(restored(inputs, training=False))
    np.testing.assert_array_equal(actual, expected)


def wrap_layer(layer: keras.layers.Layer, input_shape: tuple) -> keras.Model:
    """A functional model around one layer, for saving tests."""
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


def write_checkpoint(path, model, labels, dataset=None):
    """Writes a minimal checkpoint folder (model.keras, config.json, labels.txt)."""
    path.mkdir(parents=True, exist_ok=True)
    model.save(path / MODEL_FILE)
    atomic_write_json(
        path / CONFIG_FILE,
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": model.get_config(),
            "preprocessing": preprocessing_spec(model.image_size),
            "dataset": dataset or {"source": "digits"},
        },
    )
    atomic_write_text(path / LABELS_FILE, "\n".join(labels) + "\n")


def write_image_folder(root, classes=("cat", "dog"), per_class=6, size=(10, 12), fmt="png"):
    """Writes `root/<class>/<i>.<fmt>` images: class k has mean brightness 40 + 170 * k / n.

    Returns:
        The list of written paths.
    """
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        level = 40 + 170 * k / max(len(classes) - 1, 1)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 10, (*size, 3)), 0, 255).astype("uint8")
            path = root / name / f"{i}.{fmt}"
            Image.fromarray(pixels).save(path)
            paths.append(path)
    return paths


def history_rows(path) -> int:
    """Epochs in a run's `history.csv`; 0 while it is missing or being replaced."""
    try:
        return len(training.read_history(path))
    except (OSError, ValueError, KeyError):
        return 0


def benchmark_module(name: str):
    """`benchmarks/<name>.py` imported as a module (the scripts import their neighbours)."""
    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(folder)


def parse_predictions(text: str) -> dict[str, list[tuple[str, float]]]:
    """`python -m export.predict` output -> {image: [(label, score), ...]}."""
    parsed: dict[str, list[tuple[str, float]]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("  "):
            _, label, score = line.split()
            parsed[current].append((label, float(score)))
        else:
            current = line
            parsed[current] = []
    return parsed
