"""Evaluation of a run directory: `python -m keras_vit.evaluate ckpt/`.

Runs the checkpoint's model over a split of the data set it was trained on (read from
`config.json`), prints top-1 / top-5 accuracy and loss, and writes `metrics.json` and
`confusion_matrix.png` into the folder (for the test split; other splits get
`metrics_<split>.json` and `confusion_matrix_<split>.png`). Metrics are a pure function of
the model and the data, so re-evaluating replaces the file with the same numbers (the
`"training"` timing section written by the training run is kept).

    python -m keras_vit.evaluate ckpt/
    python -m keras_vit.evaluate ckpt/ --split validation --batch-size 64
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from keras_vit import atomic, run_dir
from keras_vit.console import configure_logging, import_tensorflow_quietly

if TYPE_CHECKING:
    import keras

    from keras_vit import data

# The split names of `keras_vit.data.SPLITS`, here so that the parser imports no TensorFlow.
SPLIT_NAMES = ("train", "validation", "test")

logger = logging.getLogger(__name__)

CURVES_FILE = "training_curves.png"
CONFUSION_FILE = "confusion_matrix.png"


@dataclass(frozen=True)
class Evaluation:
    """Predictions of a model on one split.

    Attributes:
        logits: float32 `[N, classes]`.
        labels: int `[N]`.
    """

    logits: np.ndarray
    labels: np.ndarray

    def metrics(self, split: str, dataset: str) -> dict:
        """Top-1, top-5, mean cross-entropy and example count, as `metrics.json` holds."""
        logits, labels = self.logits.astype("float64"), self.labels
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        k = min(5, logits.shape[1])
        top_k = np.argsort(-logits, axis=1, kind="stable")[:, :k]
        return {
            "split": split,
            "dataset": dataset,
            "num_examples": len(labels),
            "top1": float(np.mean(top_k[:, 0] == labels)),
            "top5": float(np.mean((top_k == labels[:, None]).any(axis=1))),
            "loss": float(-np.mean(log_probs[np.arange(len(labels)), labels])),
        }

    def confusion_matrix(self, num_classes: int) -> np.ndarray:
        """`[true, predicted]` counts."""
        matrix = np.zeros((num_classes, num_classes), dtype="int64")
        np.add.at(matrix, (self.labels, self.logits.argmax(axis=1)), 1)
        return matrix


def evaluate_model(
    model: keras.Model, examples: data.Examples, batch_size: int = 256
) -> Evaluation:
    """Runs `model` over a split (images scaled to [-1, 1]) and keeps logits and labels."""
    logits, labels = [], []
    import keras

    from keras_vit import data

    for images, batch_labels in data.eval_batches(examples, batch_size, cache=False):
        logits.append(keras.ops.convert_to_numpy(model(images, training=False)))
        labels.append(batch_labels.numpy())
    return Evaluation(np.concatenate(logits).astype("float32"), np.concatenate(labels))


def write_evaluation(
    output: Path, evaluation: Evaluation, metrics: dict, class_names: Sequence[str]
) -> None:
    """Writes `metrics.json` and `confusion_matrix.png` into a run directory."""
    atomic.atomic_write_json(output / run_dir.METRICS_FILE, metrics)
    plot_confusion_matrix(
        evaluation.confusion_matrix(len(class_names)),
        class_names,
        output / CONFUSION_FILE,
        title=f"{metrics['split']} top-1 {100 * metrics['top1']:.2f} % "
        f"({metrics['num_examples']} images)",
    )


def _figure_class():
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure


def _save_figure(figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic.atomic_write_bytes(path, buffer.getvalue())


def plot_history(history: Sequence[dict], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch (train and validation) to a PNG."""
    Figure = _figure_class()
    figure = Figure(figsize=(10, 4))
    epochs = [row["epoch"] for row in history]
    for axis, metric in zip(figure.subplots(1, 2), ("loss", "accuracy"), strict=True):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [row.get(prefix + metric, np.nan) for row in history]
            axis.plot(epochs, values, style, label=(prefix or "train_") + metric)
        axis.set_xlabel("epoch")
        axis.set_title(metric)
        axis.grid(alpha=0.3)
        axis.legend()
    _save_figure(figure, Path(path))


def plot_confusion_matrix(
    matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike, title: str = ""
) -> None:
    """A confusion matrix (rows: true class, columns: predicted) to a PNG."""
    Figure = _figure_class()
    n = len(class_names)
    side = min(12, 2 + 0.45 * n)
    figure = Figure(figsize=(side, side))
    axis = figure.subplots()
    axis.imshow(matrix, cmap="Blues")
    if n <= 30:
        axis.set_xticks(range(n), class_names, rotation=90)
        axis.set_yticks(range(n), class_names)
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                color = "white" if count > matrix.max() / 2 else "black"
                axis.text(col, row, str(count), ha="center", va="center", color=color, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    _save_figure(figure, Path(path))


def evaluate_checkpoint(
    path: str | os.PathLike,
    split: data.Split = "test",
    *,
    batch_size: int = 256,
    write: bool = True,
) -> dict:
    """Evaluates a run directory on a split of the data set it was trained on.

    Args:
        path: the run directory.
        split: `"train"`, `"validation"` or `"test"`.
        batch_size: examples per batch.
        write: write `metrics.json` and `confusion_matrix.png` (test split) or
            `metrics_<split>.json` and `confusion_matrix_<split>.png` into the folder.

    Returns:
        The metrics dict (top-1, top-5, loss, example count).
    """
    from keras_vit import data

    checkpoint = run_dir.read_run_dir(path)
    dataset = checkpoint.config.get("dataset") or {}
    if "source" not in dataset:
        raise ValueError(f"{checkpoint.path / run_dir.CONFIG_FILE} has no dataset source")
    examples = data.load_examples(
        dataset["source"], split, checkpoint.image_size, data_dir=dataset.get("data_dir")
    )
    if tuple(examples.class_names) != tuple(checkpoint.labels):
        raise ValueError(
            f"The classes of {dataset['source']} differ from {checkpoint.path / 'labels.txt'}"
        )
    model = checkpoint.load_model()
    evaluation = evaluate_model(model, examples, batch_size)
    metrics = evaluation.metrics(split, dataset["source"])
    if write:
        previous = checkpoint.path / run_dir.METRICS_FILE
        if split == "test" and previous.is_file():
            kept = json.loads(previous.read_text(encoding="utf-8")).get("training")
            if kept is not None:
                metrics["training"] = kept
        suffix = "" if split == "test" else f"_{split}"
        out = checkpoint.path
        atomic.atomic_write_json(out / f"metrics{suffix}.json", metrics)
        plot_confusion_matrix(
            evaluation.confusion_matrix(len(checkpoint.labels)),
            checkpoint.labels,
            out / f"confusion_matrix{suffix}.png",
            title=f"{split} top-1 {100 * metrics['top1']:.2f} % ({metrics['num_examples']} images)",
        )
    return metrics


def format_table(rows: Sequence[tuple[str, str]]) -> str:
    """Two aligned columns."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_vit.evaluate",
        description="Evaluate a keras-vit run directory on its data set.",
    )
    parser.add_argument(
        "checkpoint", metavar="run_dir", help="run directory (written by keras_vit.train)"
    )
    parser.add_argument("--split", default="test", choices=SPLIT_NAMES)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--no-write", action="store_true", help="only print the metrics")
    parser.add_argument(
        "--verbose", action="store_true", help="also show TensorFlow's own log lines"
    )
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    if args.batch_size <= 0:
        print(f"error: --batch-size must be positive, got {args.batch_size}", file=sys.stderr)
        return 1
    import_tensorflow_quietly(args.verbose)
    from keras_vit import data

    try:
        metrics = evaluate_checkpoint(
            args.checkpoint, args.split, batch_size=args.batch_size, write=not args.no_write
        )
    except (data.DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = [
        ("checkpoint", str(args.checkpoint)),
        (
            "data set",
            f"{metrics['dataset']} ({metrics['split']}, {metrics['num_examples']} images)",
        ),
        ("top-1", f"{100 * metrics['top1']:.2f} %"),
        ("top-5", f"{100 * metrics['top5']:.2f} %"),
        ("loss", f"{metrics['loss']:.4f}"),
    ]
    timing = metrics.get("training") or {}
    if timing.get("wall_time_s") is not None:
        rows.append(("training time", f"{timing['wall_time_s']:.1f} s"))
    if timing.get("train_images_per_second") is not None:
        rows.append(("training speed", f"{timing['train_images_per_second']:.0f} images/s"))
    if timing.get("steady_images_per_second") is not None:
        rows.append(("after epoch 1", f"{timing['steady_images_per_second']:.0f} images/s"))
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
