"""Former home of the run directory and the atomic writers, kept for one release.

The run directory (`RunDir`, `read_run_dir`, the file names, `preprocessing_spec`) is in
`keras_vit.run_dir`; the atomic writers (`atomic_open`, `atomic_write_*`,
`atomic_directory`, `default_file_mode`) are in `keras_vit.atomic`. Every name this
module had is re-exported here.
"""

from keras_vit.atomic import (
    atomic_directory,
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    default_file_mode,
)
from keras_vit.run_dir import (
    CONFIG_FILE,
    FORMAT,
    FORMAT_VERSION,
    HISTORY_FILE,
    LABELS_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REQUIRED_FILES,
    CheckpointDir,
    RunDir,
    preprocessing_spec,
    read_checkpoint,
    read_run_dir,
)

__all__ = [
    "CONFIG_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "HISTORY_FILE",
    "LABELS_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "REQUIRED_FILES",
    "CheckpointDir",
    "RunDir",
    "atomic_directory",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "default_file_mode",
    "preprocessing_spec",
    "read_checkpoint",
    "read_run_dir",
]
