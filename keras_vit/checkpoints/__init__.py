"""Google's original ViT checkpoints (`.npz`): load, save, resize and download.

The package is split by concept; every name is re-exported here:

- `mapping`: the key and reshape correspondence (`WEIGHT_MAP`), pure functions.
- `posemb`: `resample_posemb`, the position-embedding resize, pure functions.
- `npz`: `read_npz`, `save_npz`, `read_architecture`: the files themselves.
- `loading`: `load_npz(model, path)`, all or nothing.
- `published`: `PRETRAINED` names, `weights_url`, `get_weights_file` (download and cache)
  and `load_weights(model, weights)`, which `keras_vit.ViT(..., weights=...)` calls.

Example:
>>> model = keras_vit.ViT_B16(num_classes=10, image_size=384, weights="imagenet21k")
>>> keras_vit.checkpoints.save_npz(model, "finetuned.npz")
"""

from keras_vit.checkpoints.loading import LoadSummary, load_npz
from keras_vit.checkpoints.mapping import (
    WEIGHT_MAP,
    architecture_from_arrays,
    conv_kernel_to_dense,
    dense_to_conv_kernel,
    dense_to_heads_bias,
    dense_to_heads_kernel,
    dense_to_out_kernel,
    heads_bias_to_dense,
    heads_kernel_to_dense,
    out_kernel_to_dense,
)
from keras_vit.checkpoints.npz import (
    CheckpointError,
    read_architecture,
    read_npz,
    read_posemb_grid,
    save_npz,
)
from keras_vit.checkpoints.posemb import POSEMB_METHODS, PosembMethod, resample_posemb
from keras_vit.checkpoints.published import (
    PRETRAINED,
    PUBLIC_BASE_URL,
    get_weights_file,
    load_weights,
    weights_url,
)
from keras_vit.variant_table import variant_of

__all__ = [
    "POSEMB_METHODS",
    "PRETRAINED",
    "PUBLIC_BASE_URL",
    "WEIGHT_MAP",
    "CheckpointError",
    "LoadSummary",
    "PosembMethod",
    "architecture_from_arrays",
    "conv_kernel_to_dense",
    "dense_to_conv_kernel",
    "dense_to_heads_bias",
    "dense_to_heads_kernel",
    "dense_to_out_kernel",
    "get_weights_file",
    "heads_bias_to_dense",
    "heads_kernel_to_dense",
    "load_npz",
    "load_weights",
    "out_kernel_to_dense",
    "read_architecture",
    "read_npz",
    "read_posemb_grid",
    "resample_posemb",
    "save_npz",
    "variant_of",
    "weights_url",
]
