"""A ViT's layers in the order of the computation, and the one forward pass over them.

`build_parts` creates every layer of a `VisionTransformer` (each built as it is created, so
that unseeded initialisers draw from Keras's global seed in a fixed order); `forward` runs
them. The model's functional graph, its inference call and the export graphs
(`export.classifier`) are all `forward` with different options.
"""

from __future__ import annotations

from typing import NamedTuple

import keras

from keras_vit.layers import (
    GraphForm,
    LayerNorm,
    PatchEncoder,
    Patches,
    TokenPooling,
    TransformerBlock,
)
from keras_vit.resnet import ResNetStem
from keras_vit.validation import sub_seed

PIXEL_MEAN = 127.5
PIXEL_STD = 127.5
"""`include_preprocessing=True` maps RGB pixels 0..255 to `(pixel - PIXEL_MEAN) / PIXEL_STD`,
the [-1, 1] range Google's checkpoints were trained on."""


class ViTParts(NamedTuple):
    """The model's layers in the order of the computation (None where a model has none)."""

    preprocessing: keras.layers.Layer | None
    resnet: ResNetStem | None
    patches: Patches
    patch_encoder: PatchEncoder
    embedding_dropout: keras.layers.Dropout
    blocks: tuple[TransformerBlock, ...]
    encoder_norm: LayerNorm
    pooling: TokenPooling
    pre_logits: keras.layers.Dense | None
    head: keras.layers.Dense | None
    predictions: keras.layers.Activation | None


def built(layer: keras.layers.Layer, input_shape: tuple) -> keras.layers.Layer:
    """`layer`, built for `input_shape` (weights created now, in this order)."""
    layer.build(input_shape)
    return layer


def forward(
    parts: ViTParts,
    images,
    training=None,
    class_token_only_last: bool = False,
    form: GraphForm = "keras",
    class_row_norm=None,
    return_attention_scores: bool = False,
):
    """The ViT's computation over `parts`: the one forward pass.

    The functional graph, inference (`class_token_only_last`) and every export graph
    (`form`, `class_row_norm`) run this; `VisionTransformer.forward` documents the options.
    """
    if parts.preprocessing is not None:
        images = parts.preprocessing(images)
    if parts.resnet is not None:
        images = parts.resnet(images, form=form)
    if form == "edgetpu":  # the patch embedding cuts the patches itself
        x = parts.patch_encoder(images, form=form)
    else:
        x = parts.patch_encoder(parts.patches(images), form=form)
    x = parts.embedding_dropout(x, training=training)
    last = len(parts.blocks) - 1
    scores = []
    for i, block in enumerate(parts.blocks):
        x = block(
            x,
            training=training,
            return_attention_scores=return_attention_scores,
            class_token_only=class_token_only_last and i == last,
            form=form,
            class_row_norm=class_row_norm if i == 0 else None,
        )
        if return_attention_scores:
            x, block_scores = x
            scores.append(block_scores)
    x = parts.pooling(parts.encoder_norm(x, form=form), form=form)
    for layer in (parts.pre_logits, parts.head, parts.predictions):
        if layer is not None:
            x = layer(x)
    return (x, scores) if return_attention_scores else x


def build_parts(
    *,
    grid: tuple[int, int],
    patch_size: int,
    embedding_channels: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    mlp_dim: int,
    num_classes: int,
    include_top: bool,
    pooling: str,
    representation_size: int | None,
    dropout: float,
    attention_dropout: float,
    drop_path_rate: float,
    classifier_activation: str | None,
    layer_norm_epsilon: float,
    gelu: str,
    seed: int | None,
    include_preprocessing: bool,
    resnet: ResNetStem | None,
    policy,
) -> ViTParts:
    """Every layer of a ViT with checked arguments (see `VisionTransformer`).

    Args:
        grid: the token grid `(rows, columns)`.
        embedding_channels: channels of what the patches are cut from (the image's, or
            the ResNet stem's feature map's).
        resnet: the hybrid's built stem, or None.
        policy: the dtype policy, or None for the global one.
        Others: as `VisionTransformer`.
    """
    grid_h, grid_w = grid
    # Each layer is built as it is created, in the order of the computation: unseeded
    # initialisers draw from Keras's global seed in that order.
    num_patches = grid_h * grid_w
    num_tokens = num_patches + int(pooling == "token")
    preprocessing = None
    if include_preprocessing:
        # float32 whatever the policy: pixels 0..255 and their scaled values stay exact.
        preprocessing = keras.layers.Normalization(
            mean=PIXEL_MEAN,
            variance=PIXEL_STD**2,
            axis=None,
            dtype="float32",
            name="preprocessing",
        )
    patches = Patches(patch_size, dtype=policy, name="patches")
    patch_encoder = built(
        PatchEncoder(
            num_patches,
            hidden_size,
            use_class_token=pooling == "token",
            seed=sub_seed(seed, 0),
            dtype=policy,
            name="patch_encoder",
        ),
        (None, num_patches, patch_size * patch_size * embedding_channels),
    )
    embedding_dropout = keras.layers.Dropout(
        dropout, seed=sub_seed(seed, 1), dtype=policy, name="embedding_dropout"
    )
    blocks = tuple(
        built(
            TransformerBlock(
                num_heads,
                mlp_dim,
                dropout=dropout,
                attention_dropout=attention_dropout,
                # Stochastic depth grows linearly with depth, 0 for the first block.
                drop_path_rate=drop_path_rate * i / max(num_layers - 1, 1),
                layer_norm_epsilon=layer_norm_epsilon,
                gelu=gelu,
                seed=sub_seed(seed, 100 * (i + 1)),
                dtype=policy,
                name=f"encoderblock_{i}",
            ),
            (None, num_tokens, hidden_size),
        )
        for i in range(num_layers)
    )
    encoder_norm = LayerNorm(layer_norm_epsilon, dtype=policy, name="encoder_norm")
    pooling_layer = TokenPooling(pooling, dtype=policy, name="pooling")
    pre_logits = head = predictions = None
    if representation_size is not None:
        pre_logits = keras.layers.Dense(
            representation_size,
            activation="tanh",
            kernel_initializer=keras.initializers.LecunNormal(seed=sub_seed(seed, 2)),
            dtype=policy,
            name="pre_logits",
        )
    if include_top:
        head = keras.layers.Dense(
            num_classes,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            dtype=policy,
            name="head",
        )
        if classifier_activation is not None:
            # float32 output so that softmax and losses stay stable under mixed precision.
            predictions = keras.layers.Activation(
                classifier_activation, dtype="float32", name="predictions"
            )
        elif policy is not None and policy.compute_dtype != "float32":
            predictions = keras.layers.Activation("linear", dtype="float32", name="predictions")
    return ViTParts(
        preprocessing,
        resnet,
        patches,
        patch_encoder,
        embedding_dropout,
        blocks,
        encoder_norm,
        pooling_layer,
        pre_logits,
        head,
        predictions,
    )
