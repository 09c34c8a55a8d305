"""Evaluates a `.tflite` file on a checkpoint's test split, beside the Keras model.

    python -m export.evaluate model_int8.tflite ckpt/ [--split test] [--threads 1 2]

Prints one table: accuracy of the Keras model and of the `.tflite` file on the split, their
top-1 agreement, the largest |probability| difference, and the median latency at batch 1
on the interpreter `export.runtime` picks, for each thread count.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from keras_vit import artifacts


def evaluate(
    model_path: str | Path,
    checkpoint_dir: str | Path,
    split: str = "test",
    threads: tuple[int, ...] = (1, 2),
    latency_runs: int = 50,
) -> dict:
    """Parity, accuracy and latency of a `.tflite` file on a split of the checkpoint's data.

    Raises:
        export.tflite.ExportError / FileNotFoundError / ValueError: one-line messages.
    """
    from export import tflite
    from export.loading import load_run_model
    from export.runtime import Classifier

    checkpoint = artifacts.read_checkpoint(checkpoint_dir)
    path = Path(model_path)
    classifier = Classifier(path)  # fails early on a missing or foreign file
    if classifier.image_size != checkpoint.image_size or classifier.num_classes != len(
        checkpoint.labels
    ):
        raise ValueError(
            f"{path} takes {classifier.image_size} images and gives {classifier.num_classes} "
            f"scores, but the checkpoint has {checkpoint.image_size} and "
            f"{len(checkpoint.labels)} classes"
        )
    images, labels = tflite._as_arrays(tflite._examples(checkpoint, split).dataset)
    if len(images) == 0:
        raise tflite.ExportError(f"The {split} split is empty")
    reference = tflite.keras_probabilities(
        load_run_model(checkpoint), images, checkpoint.config["preprocessing"]
    )
    result = tflite.evaluate_file(path, images, labels, reference, threads, latency_runs)
    result.update(
        {
            "file": str(path),
            "split": split,
            "num_examples": len(images),
            "keras_accuracy": float((reference.argmax(axis=1) == labels).mean()),
        }
    )
    return result


def format_result(result: dict) -> str:
    rows = [
        ("file", result["file"]),
        ("examples", f"{result['num_examples']} ({result['split']} split)"),
        ("Keras accuracy", f"{100 * result['keras_accuracy']:.2f} %"),
        ("TFLite accuracy", f"{100 * result['accuracy']:.2f} %"),
        ("top-1 agreement", f"{100 * result['top1_agreement']:.2f} %"),
        ("max |prob diff|", f"{result['max_abs_prob_diff']:.4f}"),
    ]
    for count, ms in result["latency_ms"].items():
        rows.append((f"latency, {count} thread(s)", f"{ms:.3f} ms (median, batch 1)"))
    rows.append(("interpreter", result["backend"]))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:{width}s}  {value}" for name, value in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.evaluate",
        description="Evaluate a .tflite file on a keras-vit checkpoint's test split.",
    )
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("checkpoint", help="the checkpoint folder it was exported from")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from export.runtime import ModelFileError
    from export.tflite import ExportError

    try:
        result = evaluate(args.model, args.checkpoint, args.split, tuple(args.threads))
    except (ModelFileError, ExportError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
