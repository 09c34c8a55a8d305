"""Runs fuzz cases of the file readers, one JSON line per case, for `test_fuzz_readers.py`.

    python tests/fuzz_worker.py cases.json

`cases.json` is a list of `{"id", "reader", "path"}`. Before each case the worker prints
`{"start": id}`, after it `{"id", "outcome", "detail"}` with outcome `ok` (a correct
result), `error` (the reader's documented error, one line, naming the file), `bad` (any
other exception, or a message that does not name the file) or `hang` (over the per-case
time limit). A crash of the interpreter shows to the parent as a `start` with no result.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

CASE_SECONDS = 60


class HangError(Exception):
    pass


def _alarm(signum, frame):
    raise HangError(f"over {CASE_SECONDS} s")


def _warm_up(state: dict) -> None:
    """Imports and builds what the readers use, so the first case's time is its own."""
    import PIL.Image  # noqa: F401
    from bad_inputs import tiny_token_model

    import export.runtime  # noqa: F401
    import keras_vit.artifacts  # noqa: F401

    state["model"] = tiny_token_model()


def _npz(path: Path, state: dict):
    from keras_vit.checkpoints import load_npz

    load_npz(state["model"], path)


def _model_keras(path: Path, state: dict):
    from keras_vit.run_dir import read_run_dir

    model = read_run_dir(path).load_model()
    size = model.image_size
    logits = np.asarray(model(np.zeros((1, *size, 3), np.float32)))
    assert logits.shape == (1, model.num_classes) and np.isfinite(logits).all()


def _run_dir(path: Path, state: dict):
    from keras_vit.run_dir import read_run_dir

    read_run_dir(path)


def _tflite(path: Path, state: dict):
    from export.runtime import Classifier

    classifier = Classifier(path)
    scores = classifier.predict(np.zeros((*classifier.image_size, 3), np.uint8))
    assert scores.shape == (1, classifier.num_classes)


def _tflite_reader(path: Path, state: dict):
    from export import tflite_reader

    content = path.read_bytes()
    tflite_reader.read_summary(content)
    tflite_reader.read_metadata(content)
    tflite_reader.labels_from_metadata(content)


def _image(path: Path, state: dict):
    from export.runtime import load_image

    pixels = load_image(path, (16, 16))
    assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8


READERS = {
    "npz": _npz,
    "model.keras": _model_keras,
    "config.json": _run_dir,
    "labels.txt": _run_dir,
    "tflite": _tflite,
    "tflite_reader": _tflite_reader,
    "image": _image,
}
# The error type and name each reader documents, found without running a case.
ERRORS = {
    "npz": lambda p: (__import__("keras_vit.checkpoints").checkpoints.CheckpointError, p.name),
    "model.keras": lambda p: (ValueError, "model.keras"),
    "config.json": lambda p: (ValueError, "config.json"),
    "labels.txt": lambda p: (ValueError, "labels.txt"),
    "tflite": lambda p: (__import__("export.runtime").runtime.ModelFileError, p.name),
    "tflite_reader": lambda p: (
        __import__("export.tflite_reader").tflite_reader.TFLiteFormatError,
        "",
    ),
    "image": lambda p: (__import__("export.runtime").runtime.ImageFileError, p.name),
}


def run_case(reader: str, path: Path, state: dict) -> tuple[str, str]:
    signal.alarm(CASE_SECONDS)
    try:
        READERS[reader](path, state)
    except HangError as error:
        return "hang", str(error)
    except Exception as error:
        signal.alarm(0)
        expected, name = ERRORS[reader](path)
        message = str(error)
        detail = f"{type(error).__module__}.{type(error).__name__}: {message[:300]}"
        if not isinstance(error, expected):
            return "bad", detail
        if name not in message or "\n" in message.strip():
            return "bad", "message: " + detail
        return "error", detail
    finally:
        signal.alarm(0)
    return "ok", ""


def main(argv: list[str]) -> int:
    import logging

    logging.disable(logging.WARNING)
    signal.signal(signal.SIGALRM, _alarm)
    cases = json.loads(Path(argv[0]).read_text())
    state: dict = {}
    _warm_up(state)
    for case in cases:
        print(json.dumps({"start": case["id"]}), flush=True)
        outcome, detail = run_case(case["reader"], Path(case["path"]), state)
        print(json.dumps({"id": case["id"], "outcome": outcome, "detail": detail}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
