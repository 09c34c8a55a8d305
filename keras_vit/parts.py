"""A ViT's layers in the order of the computation, and the one forward pass over them.

`build_stem` (the hybrid's ResNet stem) and `build_parts` create every layer of a
`VisionTransformer` (each built as it is created, so that unseeded initialisers draw from
Keras's global seed in a fixed order); `forward` runs them. The model's functional graph,
its inference call and the export graphs (`export.classifier`) are all `forward` with
different options. `float_dtype_policy` checks the dtype policy the layers are built with.
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
from keras_vit.resnet import ResNetStem, stem_channels
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


def float_dtype_policy(dtype) -> keras.DTypePolicy | None:
    """The Keras dtype policy for `dtype` (None stays None).

    Raises:
        ValueError: `dtype` is not a dtype or policy that computes and stores in floats
            (one line naming `dtype`).
    """
    if dtype is None:
        return None
    try:
        policy = keras.dtype_policies.get(dtype)
    except (ValueError, TypeError):
        policy = None
    if policy is None or not all(
        _is_float(d) for d in (policy.compute_dtype, policy.variable_dtype)
    ):
        raise ValueError(
            "Expected `dtype` to be a floating-point dtype or policy such as 'float32' or "
            f"'mixed_bfloat16'. Received: dtype={dtype!r}"
        )
    return policy


def _is_float(dtype) -> bool:
    return keras.backend.is_float_dtype(keras.backend.standardize_dtype(dtype))


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


def build_stem(
    resnet_layers, resnet_width, input_shape: tuple[int, int, int], seed, policy
) -> tuple[ResNetStem | None, tuple[int, ...] | None, float, int]:
    """The hybrid's ResNet stem (layer `resnet`), built, with its checked arguments.

    Args:
        resnet_layers: units per stage, or None for the plain ViT (no stem).
        resnet_width: multiplier of the stem's base channels.
        input_shape: the image shape `(height, width, channels)`.
        seed: the model's seed, or None.
        policy: the dtype policy, or None for the global one.

    Returns:
        `(stem, resnet_layers, resnet_width, embedding_channels)`: the stem, its arguments
        as a tuple and a float, and the channels the patches are cut from; without
        `resnet_layers`, no stem, the arguments as given and the image's channels.

    Raises:
        ValueError: a `resnet_width` other than 1 without `resnet_layers`, or bad stem
            arguments.
    """
    if resnet_layers is None:
        if resnet_width != 1.0:
            raise ValueError(
                "Expected `resnet_width` 1.0 for a plain ViT (it sizes a hybrid's stem; pass "
                f"`resnet_layers` for a hybrid). Received: resnet_width={resnet_width!r}, "
                "resnet_layers=None"
            )
        return None, None, resnet_width, input_shape[-1]
    channels = stem_channels(resnet_layers, resnet_width, ("resnet_layers", "resnet_width"))[1]
    resnet_layers, resnet_width = tuple(resnet_layers), float(resnet_width)
    stem = ResNetStem(resnet_layers, resnet_width, sub_seed(seed, 3), dtype=policy, name="resnet")
    return built(stem, (None, *input_shape)), resnet_layers, resnet_width, channels


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
    # Each layer is created (and built, where it has weights to create) in the order of the
    # computation: unseeded initialisers draw from Keras's global seed in that order.
    num_patches = grid[0] * grid[1]
    num_tokens = num_patches + int(pooling == "token")
    preprocessing = _preprocessing() if include_preprocessing else None
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
    blocks = _encoder_blocks(
        num_layers,
        (None, num_tokens, hidden_size),
        seed,
        num_heads=num_heads,
        mlp_dim=mlp_dim,
        dropout=dropout,
        attention_dropout=attention_dropout,
        drop_path_rate=drop_path_rate,
        layer_norm_epsilon=layer_norm_epsilon,
        gelu=gelu,
        dtype=policy,
    )
    encoder_norm = LayerNorm(layer_norm_epsilon, dtype=policy, name="encoder_norm")
    pooling_layer = TokenPooling(pooling, dtype=policy, name="pooling")
    pre_logits = (
        None if representation_size is None else _pre_logits(representation_size, seed, policy)
    )
    head, predictions = (
        _head(num_classes, classifier_activation, policy) if include_top else (None, None)
    )
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


def _preprocessing() -> keras.layers.Normalization:
    """The layer that maps RGB pixels 0..255 to [-1, 1]."""
    # float32 whatever the policy: pixels 0..255 and their scaled values stay exact.
    return keras.layers.Normalization(
        mean=PIXEL_MEAN, variance=PIXEL_STD**2, axis=None, dtype="float32", name="preprocessing"
    )


def _encoder_blocks(
    num_layers: int, input_shape: tuple, seed: int | None, drop_path_rate: float, **block_args
) -> tuple[TransformerBlock, ...]:
    """The `num_layers` transformer blocks, built in order for `(batch, tokens, width)`.

    Stochastic depth grows linearly with depth, from 0 at the first block to
    `drop_path_rate` at the last; `block_args` are the other `TransformerBlock` arguments.
    """
    return tuple(
        built(
            TransformerBlock(
                drop_path_rate=drop_path_rate * i / max(num_layers - 1, 1),
                seed=sub_seed(seed, 100 * (i + 1)),
                name=f"encoderblock_{i}",
                **block_args,
            ),
            input_shape,
        )
        for i in range(num_layers)
    )


def _pre_logits(representation_size: int, seed: int | None, policy) -> keras.layers.Dense:
    """The representation layer (Dense + tanh) before the head."""
    return keras.layers.Dense(
        representation_size,
        activation="tanh",
        kernel_initializer=keras.initializers.LecunNormal(seed=sub_seed(seed, 2)),
        dtype=policy,
        name="pre_logits",
    )


def _head(
    num_classes: int, classifier_activation: str | None, policy
) -> tuple[keras.layers.Dense, keras.layers.Activation | None]:
    """The classification head, and the float32 activation after it where it needs one."""
    head = keras.layers.Dense(
        num_classes,
        kernel_initializer="zeros",
        bias_initializer="zeros",
        dtype=policy,
        name="head",
    )
    if classifier_activation is not None:
        # float32 output so that softmax and losses stay stable under mixed precision.
        return head, keras.layers.Activation(
            classifier_activation, dtype="float32", name="predictions"
        )
    if policy is not None and policy.compute_dtype != "float32":
        return head, keras.layers.Activation("linear", dtype="float32", name="predictions")
    return head, None
