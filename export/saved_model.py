"""Exports a run directory as a TensorFlow SavedModel for serving.

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
import shutil
import sys
from pathlib import Path

from export.output_folder import check_output, export_folder
from keras_vit.console import configure_logging, native_stderr_captured
from keras_vit.run_dir import LABELS_FILE, RunDir, read_run_dir

logger = logging.getLogger("export.saved_model")  # also when run as __main__

DEFAULT_OUTPUT = "saved_model"  # inside the run directory
SIGNATURE = "serving_default"


def export_saved_model(
    checkpoint_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Writes the SavedModel of a run directory.

    Args:
        checkpoint_dir: a run directory (`keras_vit.run_dir`).
        output_dir: where to write; default `<checkpoint>/saved_model`. Refused if it exists
            and is not empty, unless `overwrite`.
        overwrite: replace an existing `output_dir` that an export of this project wrote.

    Returns:
        The SavedModel folder.

    Raises:
        FileNotFoundError / ValueError: a missing or foreign run directory.
        keras_vit.run_dir.RunModelError: `model.keras` cannot be loaded.
        FileExistsError: `output_dir` exists and `overwrite` is False.
        export.output_folder.OutputFolderError: `output_dir` is the run directory (or
            contains it), a file, or a folder this project did not write.
    """
    import keras

    from export.classifier import check_classifier

    checkpoint = read_run_dir(checkpoint_dir)
    output = Path(output_dir) if output_dir is not None else checkpoint.path / DEFAULT_OUTPUT
    check_output(output, checkpoint.path, overwrite)
    model = checkpoint.load_model()
    check_classifier(model)
    with export_folder(output, checkpoint.path, overwrite, "saved_model") as tmp:
        scratch = tmp / ".labels"  # the asset is copied into the SavedModel when written
        table = _labels_table(scratch, checkpoint.labels)
        serve, input_spec = _serving_function(model, table, checkpoint)
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.track(table)
        archive.add_endpoint(SIGNATURE, serve, input_signature=[input_spec])
        archive.write_out(str(tmp), verbose=False)
        shutil.rmtree(scratch)
    logger.debug("Wrote SavedModel %s", output)
    return output


def _labels_table(scratch: Path, labels) -> object:
    """A lookup table class id -> class name, read from a `labels.txt` written in `scratch`."""
    import tensorflow as tf

    scratch.mkdir()
    labels_path = scratch / LABELS_FILE
    labels_path.write_text("\n".join(labels) + "\n", encoding="utf-8")
    return tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            str(labels_path),
            key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        ),
        default_value="",
    )


def _serving_function(model, table, checkpoint: RunDir):
    """`(serve, input spec)`: uint8 images -> probabilities, class ids and class names."""
    import tensorflow as tf

    preprocessing = checkpoint.config["preprocessing"]
    height, width = checkpoint.image_size
    channels = int(preprocessing.get("channels", 3))
    mean = tf.constant(preprocessing["mean"], tf.float32)
    std = tf.constant(preprocessing["std"], tf.float32)
    softmax = model.classifier_activation != "softmax"

    def serve(images):
        # A loaded signature does not check its input shape, and the patch reshape would
        # fold the pixels of a larger image into extra batch rows.
        images = tf.ensure_shape(images, (None, height, width, channels))
        x = tf.cast(images, tf.float32)
        if not model.include_preprocessing:  # such a model scales the pixels itself
            x = (x - mean) / std
        outputs = model(x, training=False)  # last block: the class token only
        probabilities = tf.nn.softmax(outputs, axis=-1) if softmax else outputs
        class_ids = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "class_names": table.lookup(tf.cast(class_ids, tf.int64)),
        }

    return serve, tf.TensorSpec((None, height, width, channels), tf.uint8, "images")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export.saved_model",
        description="Export a keras-vit run directory as a SavedModel (uint8 images in).",
    )
    parser.add_argument(
        "checkpoint", metavar="run_dir", help="run directory (model.keras, config.json, ...)"
    )
    parser.add_argument(
        "--output", default=None, help=f"output folder (default: <run_dir>/{DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the output folder if an earlier export wrote it",
    )
    parser.add_argument("--verbose", action="store_true", help="also show TensorFlow's log lines")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    quiet = configure_logging(args.verbose)
    user_errors = (FileNotFoundError, FileExistsError, ValueError)
    try:
        with native_stderr_captured(quiet, expected_errors=user_errors):
            output = export_saved_model(args.checkpoint, args.output, overwrite=args.force)
    except user_errors as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Wrote {output} (signature {SIGNATURE!r}: uint8 images -> probabilities, class ids)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
