"""Exports a checkpoint folder as a TensorFlow SavedModel for serving.

    python -m export.saved_model ckpt/ [--output DIR] [--force]

The `serving_default` signature takes uint8 images `[batch, H, W, 3]` named `images`
(the preprocessing, `(pixel - mean) / std` from the checkpoint, is inside) and returns
`probabilities` (float32 `[batch, classes]`), `class_ids` (int32 `[batch]`) and
`class_names` (string `[batch]`). The class names come from `labels.txt`, shipped as a
SavedModel asset (`assets/labels.txt`) and read by a lookup table when the model loads.
Written with `keras.export.ExportArchive`; TensorFlow Serving, `tf.saved_model.load` and
the TFLite converter read it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from keras_vit import artifacts

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT = "saved_model"  # inside the checkpoint folder
SIGNATURE = "serving_default"


def export_saved_model(
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes the SavedModel of a checkpoint folder.

    Args:
        checkpoint_dir: a checkpoint folder (`keras_vit.artifacts`).
        output_dir: where to write; default `<checkpoint>/saved_model`. Refused if it exists
            and is not empty, unless `overwrite`.
        overwrite: replace an existing `output_dir`.

    Returns:
        The SavedModel folder.

    Raises:
        FileNotFoundError / ValueError: a missing or foreign checkpoint folder.
        FileExistsError: `output_dir` exists and `overwrite` is False.
    """
    import keras
    import tensorflow as tf

    from export.classifier import check_classifier

    checkpoint = artifacts.read_checkpoint(checkpoint_dir)
    output = Path(output_dir) if output_dir is not None else checkpoint.path / DEFAULT_OUTPUT
    if output.exists() and not overwrite and (not output.is_dir() or any(output.iterdir())):
        raise FileExistsError(f"Output {output} already exists; pass --force to overwrite it")
    model = checkpoint.load_model()
    check_classifier(model)
    preprocessing = checkpoint.config["preprocessing"]
    height, width = checkpoint.image_size
    channels = int(preprocessing.get("channels", 3))
    mean = tf.constant(preprocessing["mean"], tf.float32)
    std = tf.constant(preprocessing["std"], tf.float32)
    softmax = model.classifier_activation != "softmax"

    with tempfile.TemporaryDirectory(prefix="keras_vit_labels_") as scratch:
        # The asset is copied into the SavedModel when it is written.
        labels_path = Path(scratch) / artifacts.LABELS_FILE
        labels_path.write_text("\n".join(checkpoint.labels) + "\n", encoding="utf-8")
        table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(
                str(labels_path),
                key_dtype=tf.int64,
                key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
                value_dtype=tf.string,
                value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
            ),
            default_value="",
        )

        def serve(images):
            x = (tf.cast(images, tf.float32) - mean) / std
            outputs = model(x, training=False)  # last block: the class token only
            probabilities = tf.nn.softmax(outputs, axis=-1) if softmax else outputs
            class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            return {
                "probabilities": probabilities,
                "class_ids": class_ids,
                "class_names": table.lookup(tf.cast(class_ids, tf.int64)),
            }

        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.track(table)
        archive.add_endpoint(
            SIGNATURE,
            serve,
            input_signature=[tf.TensorSpec((None, height, width, channels), tf.uint8, "images")],
        )
        with artifacts.atomic_directory(output, overwrite=True) as tmp:
            archive.write_out(str(tmp), verbose=False)
    logger.info("Wrote SavedModel %s", output)
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.saved_model",
        description="Export a keras-vit checkpoint folder as a SavedModel (uint8 images in).",
    )
    parser.add_argument("checkpoint", help="checkpoint folder (model.keras, config.json, ...)")
    parser.add_argument(
        "--output", default=None, help=f"output folder (default: <checkpoint>/{DEFAULT_OUTPUT})"
    )
    parser.add_argument("--force", action="store_true", help="overwrite the output folder")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        output = export_saved_model(args.checkpoint, args.output, overwrite=args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {output} (signature {SIGNATURE!r}: uint8 images -> probabilities, class ids)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
