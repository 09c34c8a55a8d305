"""Export of keras-vit checkpoints: SavedModel, TFLite, runtime, Edge TPU.

Modules: `saved_model`, `tflite` (+ `graph`, `edge`, `metadata`), `evaluate`,
`edgetpu_check`; `runtime`, `predict`, `tflite_file` and `analysis` never import TensorFlow.
"""
