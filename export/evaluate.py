"""Deprecated name of `export.evaluate_tflite`, kept for one release.

python -m export.evaluate model_int8.tflite ckpt/   (same as python -m export.evaluate_tflite)
"""

import warnings

from export.evaluate_tflite import evaluate, format_result, main

__all__ = ["evaluate", "format_result", "main"]

warnings.warn(
    "export.evaluate is renamed export.evaluate_tflite; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)

if __name__ == "__main__":
    raise SystemExit(main())
