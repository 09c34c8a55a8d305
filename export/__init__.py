"""Export of keras-vit run directories: SavedModel, TFLite, runtime, Edge TPU.

Command-line modules: `saved_model`, `tflite`, `evaluate_tflite`, `predict`,
`edgetpu_check`, `profile`. The TFLite export composes `convert` (conversion),
`flatbuffer_edits` (int8 graph edits), `run_data` (calibration / test images),
`evaluate_tflite`, `report`, `metadata` and `output_folder` over the one export graph,
`classifier.PixelClassifier` (`graph` and `edge` are its deprecated old names); `calibration`
(percentile / MSE activation ranges) and `smoothing` (LayerNorm scale migration) are int8
options, `fidelity` and `tflite_fidelity` measure a quantized file against the float model.
`runtime`, `predict`, `tflite_reader`, `runtime_versions` and `analysis` never import
TensorFlow.
"""

# First: `keras_vit.console` records the user's own TensorFlow log level before TensorFlow
# or JAX (whose `__init__` sets a default) can be imported.
import keras_vit.console  # noqa: F401
