"""Classifies image files with an exported `.tflite` model, without TensorFlow.

    python -m export.predict model_int8.tflite cat.jpg dog.png [--top-k 5] [--threads 2]

Prints, for each image, its top-k classes with their scores. Needs only NumPy, Pillow and
a TFLite interpreter (ai-edge-litert or tflite-runtime).
"""

from __future__ import annotations

import argparse
import logging
import sys

from export.runtime import Classifier, ImageFileError, ModelFileError, load_image
from keras_vit.console import configure_logging


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.predict",
        description="Classify images with a .tflite model exported by keras-vit.",
    )
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--top-k", type=_positive_int, default=5, help="classes to print per image")
    parser.add_argument(
        "--threads", type=_positive_int, default=None, help="interpreter threads (at least 1)"
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    logging.getLogger("export").setLevel(logging.ERROR)  # a fallback is not news here
    try:
        classifier = Classifier(args.model, num_threads=args.threads)
        images = [load_image(path, classifier.image_size) for path in args.images]
    except (ModelFileError, ImageFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for path, image in zip(args.images, images, strict=True):
        (predictions,) = classifier.top_k(classifier.predict(image), args.top_k)
        print(path)
        for rank, prediction in enumerate(predictions, start=1):
            print(f"  {rank}. {prediction.label}  {prediction.score:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
