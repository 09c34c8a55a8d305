"""Export of keras-vit run directories: SavedModel, TFLite, runtime, Edge TPU.

Command-line modules: `saved_model`, `tflite`, `evaluate_tflite`, `predict`,
`edgetpu_check`, `profile`. The TFLite export composes `convert` (conversion),
`flatbuffer_edits` (int8 graph edits), `run_data` (calibration / test images),
`evaluate_tflite`, `report`, `metadata` and `output_folder` over the one export graph,
`classifier.PixelClassifier` (`graph` and `edge` are its deprecated old names). `runtime`, `predict`, `tflite_reader`, `runtime_versions` and
`analysis` never import TensorFlow.
"""

import os

# TensorFlow's log level as the user's environment set it, read before TensorFlow or JAX
# (whose `__init__` sets a default) can be imported: `export.console` keeps a level the
# user chose.
ENVIRONMENT_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
