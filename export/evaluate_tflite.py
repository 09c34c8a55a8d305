"""Evaluates a `.tflite` file on a checkpoint's test split, beside the Keras model.

    python -m export.evaluate_tflite model_int8.tflite ckpt/ [--split test] [--threads 1 2]

(`python -m export.evaluate` is the older name of the same command.)

Prints one table: accuracy of the Keras model and of the `.tflite` file on the split, their
top-1 agreement, the largest |probability| difference, and the median latency at batch 1
on the interpreter `export.runtime` picks, for each thread count.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export import run_data
from export.errors import ExportError
from export.runtime import ModelFileError
from keras_vit.console import configure_logging, native_stderr_captured
from keras_vit.run_dir import read_run_dir

logger = logging.getLogger("export.evaluate_tflite")  # also when run as __main__


def keras_probabilities(model, images: np.ndarray, preprocessing: dict) -> np.ndarray:
    """The checkpoint's Keras model on uint8 images: normalise, predict, softmax."""
    import keras

    outputs = model.predict(run_data.normalised(images, preprocessing), batch_size=64, verbose=0)
    if model.classifier_activation != "softmax":
        outputs = keras.ops.convert_to_numpy(keras.ops.softmax(outputs, axis=-1))
    return np.asarray(outputs, np.float32)


def evaluate_file(
    path: Path,
    images: np.ndarray | None,
    labels: np.ndarray | None,
    reference: np.ndarray | None,
    threads: Sequence[int] = (1, 2),
    latency_runs: int = 50,
) -> dict:
    """Parity, accuracy and latency of one `.tflite` file.

    Args:
        path: the `.tflite` file.
        images / labels: uint8 images `(N, H, W, C)` and their int32 labels, or None to
            time the file only.
        reference: the Keras model's probabilities of `images` (`keras_probabilities`), or
            None to skip the parity figures.
        threads: interpreter thread counts to time.
        latency_runs: timed invocations per thread count.

    Returns:
        `latency_ms` (median per thread count), `backend`, and with images `accuracy`,
        `top1_agreement`, `max_abs_prob_diff`.
    """
    from export.runtime import Classifier

    result: dict = {}
    classifier = None
    for count in threads:
        classifier = Classifier(path, num_threads=count)
        result.setdefault("latency_ms", {})[str(count)] = round(
            classifier.latency_ms(runs=latency_runs), 4
        )
        result["backend"] = classifier.backend
    if images is not None and len(images) and classifier is not None:
        probabilities = classifier.predict(images)
        predicted = probabilities.argmax(axis=1)
        result["accuracy"] = float((predicted == labels).mean())
        if reference is not None:
            result["top1_agreement"] = float((predicted == reference.argmax(axis=1)).mean())
            result["max_abs_prob_diff"] = float(np.abs(probabilities - reference).max())
    return result


def evaluate(
    model_path: str | Path,
    checkpoint_dir: str | Path,
    split: str = "test",
    threads: tuple[int, ...] = (1, 2),
    latency_runs: int = 50,
) -> dict:
    """Parity, accuracy and latency of a `.tflite` file on a split of the checkpoint's data.

    Raises:
        ExportError / FileNotFoundError / ValueError: one-line messages.
    """
    from export.runtime import Classifier

    checkpoint = read_run_dir(checkpoint_dir)
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
    model = checkpoint.load_model()
    images, labels = run_data.as_arrays(run_data.split_examples(checkpoint, split).dataset)
    if len(images) == 0:
        raise ExportError(f"The {split} split is empty")
    logger.info("Evaluating %s on %d %s images", path.name, len(images), split)
    reference = keras_probabilities(model, images, checkpoint.config["preprocessing"])
    result = evaluate_file(path, images, labels, reference, threads, latency_runs)
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
        prog="python -m export.evaluate_tflite",
        description="Evaluate a .tflite file on a keras-vit checkpoint's test split.",
    )
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument(
        "checkpoint", metavar="run_dir", help="the run directory it was exported from"
    )
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's log lines")
    args = parser.parse_args(argv)
    quiet = configure_logging(args.verbose)
    user_errors = (ModelFileError, ExportError, FileNotFoundError, ValueError)
    try:
        with native_stderr_captured(quiet, expected_errors=user_errors):
            result = evaluate(args.model, args.checkpoint, args.split, tuple(args.threads))
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
