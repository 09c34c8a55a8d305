"""Keras layers that make up a Vision Transformer.

The layers follow the computation of the original JAX code (google-research/
vision_transformer, `vit_jax/models_vit.py`) so that Google's checkpoints load without
numerical drift, and they are written with graph export in mind: every operation lowers to
a TFLite builtin op (no `tf.image.extract_patches`, no Lambda layers, a LayerNorm written
from mean and variance so it quantizes to integer ops). Each layer takes `form=` (one of
`GRAPH_FORMS`) for the op formulation of an export graph.

Every layer is registered with Keras under the package name ``keras_vit`` and names its
sublayers and weights explicitly; checkpoint mapping relies on those names.

Modules: `forms` (GELU and graph forms, `dense_apply`), `embedding` (`Patches`,
`PatchEncoder`, `TokenPooling`), `normalization` (`LayerNorm`), `attention`
(`MultiHeadSelfAttention`), `block` (`DropPath`, `TransformerBlock`).
"""

from keras_vit.layers.attention import MultiHeadSelfAttention
from keras_vit.layers.block import DropPath, TransformerBlock
from keras_vit.layers.embedding import PatchEncoder, Patches, TokenPooling
from keras_vit.layers.forms import (
    GELU_FORMS,
    GRAPH_FORMS,
    GeluForm,
    GraphForm,
    dense_apply,
    gelu,
)
from keras_vit.layers.normalization import LayerNorm

__all__ = [
    "GELU_FORMS",
    "GRAPH_FORMS",
    "DropPath",
    "GeluForm",
    "GraphForm",
    "LayerNorm",
    "MultiHeadSelfAttention",
    "PatchEncoder",
    "Patches",
    "TokenPooling",
    "TransformerBlock",
    "dense_apply",
    "gelu",
]
