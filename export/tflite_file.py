"""Deprecated name of `export.tflite_reader`, kept for one release.

`import export.tflite_file` gives the `export.tflite_reader` module itself.
"""

import sys
import warnings

from export import tflite_reader

warnings.warn(
    "export.tflite_file is renamed export.tflite_reader; the old name goes in the next release",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = tflite_reader
