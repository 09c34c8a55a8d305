"""The Vision Transformer as a functional Keras model.

`VisionTransformer` is a functional `keras.Model` (its layers, summary, plotting and
`.keras` saving behave as for any functional model) whose config holds the architecture
arguments, so `from_config` rebuilds it and export code can rebuild the same weights with
another graph formulation (`gelu="logistic"`, say). This module is the bottom of the model
code: it imports the layers and nothing that loads weights. `keras_vit.ViT(...)` and the
named variants (`keras_vit.variants`) build it; `keras_vit.checkpoints` loads weights into it.

Graph, as the original JAX code (`vit_jax/models_vit.py`):

    images -> [preprocessing: (x - 127.5) / 127.5] -> [resnet: ResNetStem] -> Patches
           -> PatchEncoder (projection, class token, position embedding)
           -> Dropout -> TransformerBlock x num_layers -> LayerNorm (encoder_norm)
           -> TokenPooling ("token" or "gap") -> [pre_logits: Dense + tanh] -> head

The hybrid (`resnet_layers` set, the paper's section 3.1) cuts its patches from the feature
map of a BiT ResNet stem (`keras_vit.resnet.ResNetStem`) instead of from the pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import keras
import numpy as np

from keras_vit.hybrid_keys import feature_stride
from keras_vit.layers import GELU_FORMS, GeluForm, GraphForm
from keras_vit.logits_loss import check_logits_loss
from keras_vit.parts import (
    PIXEL_MEAN,
    PIXEL_STD,
    build_parts,
    build_stem,
    float_dtype_policy,
    forward,
)
from keras_vit.resnet import ResNetStem
from keras_vit.validation import (
    check_bools,
    check_positive_int,
    check_positive_ints,
    check_rates,
    check_seed,
    image_size_pair,
)

Pooling = Literal["token", "gap"]

__all__ = ["PIXEL_MEAN", "PIXEL_STD", "VisionTransformer"]


def _token_grid(
    input_shape: tuple[int, int, int], stem: ResNetStem | None, patch_size: int
) -> tuple[int, int]:
    """The token grid `(rows, columns)`: the image's (the stem's feature map's for a hybrid)
    sides over `patch_size`.

    Raises:
        ValueError: `patch_size` does not divide them (one line).
    """
    height, width = input_shape[:2]
    feature_hw = (
        (height, width) if stem is None else stem.compute_output_shape((None, *input_shape))[1:3]
    )
    if feature_hw[0] % patch_size or feature_hw[1] % patch_size:
        at = "" if stem is None else f" (the stem's feature map is {feature_hw[0]}x{feature_hw[1]})"
        raise ValueError(
            f"Expected image size divisible by patch_size{at}. "
            f"Received: image_size={height}x{width}, patch_size={patch_size}"
        )
    return feature_hw[0] // patch_size, feature_hw[1] // patch_size


def _check_options(
    hidden_size: int,
    num_heads: int,
    pooling,
    gelu,
    classifier_activation,
    train_class_token_only,
    include_preprocessing,
) -> None:
    """Raises ValueError (one line naming the argument) unless the heads split `hidden_size`,
    each option is one the model knows and the two switches are bools that go with `pooling`."""
    if hidden_size % num_heads:
        raise ValueError(
            "Expected hidden_size divisible by num_heads. "
            f"Received: hidden_size={hidden_size}, num_heads={num_heads}"
        )
    if pooling not in ("token", "gap"):
        raise ValueError(
            f"Expected `pooling` to be 'token' or 'gap'. Received: pooling={pooling!r}"
        )
    if gelu not in GELU_FORMS:
        raise ValueError(f"Expected `gelu` to be one of {GELU_FORMS}. Received: gelu={gelu!r}")
    if classifier_activation is not None:
        keras.activations.get(classifier_activation)  # raises on an unknown name
    check_bools(
        train_class_token_only=train_class_token_only,
        include_preprocessing=include_preprocessing,
    )
    if train_class_token_only and pooling != "token":
        raise ValueError(
            "`train_class_token_only=True` needs pooling='token' (with 'gap' the head "
            f"reads every token). Received: pooling={pooling!r}"
        )


@keras.saving.register_keras_serializable(package="keras_vit")
class VisionTransformer(keras.Model):
    """A Vision Transformer (Dosovitskiy et al., 2020) as a functional Keras model.

    Build it with `keras_vit.ViT(...)` (the same arguments, plus `weights=`) or a named
    variant such as `keras_vit.ViT_B16(...)`. Defaults are ViT-B/16 at 224x224 with a
    1000-class head. Initialisation follows the original code: Dense kernels
    Xavier-uniform, patch embedding LeCun-normal (it is a convolution there), position
    embedding normal(0.02), class token zeros, head kernel and bias zeros, LayerNorm
    epsilon 1e-6.

    Inputs are float images scaled to [-1, 1], `(batch, height, width, channels)`, or RGB
    pixels 0..255 (uint8 or float) with `include_preprocessing=True`. Integer images are
    refused without it (they would be read as values far outside [-1, 1]). Outputs are
    logits `(batch, num_classes)` (train them with
    `keras.losses.SparseCategoricalCrossentropy(from_logits=True)`), probabilities with
    `classifier_activation="softmax"`, or pooled features `(batch, hidden_size)` with
    `include_top=False`.

    Args:
        image_size: an int for square images or a `(height, width)` pair; each side must
            be divisible by `patch_size`.
        patch_size: side of the square patches.
        hidden_size: token width `D`.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide `hidden_size`.
        mlp_dim: hidden width of each block's MLP.
        num_classes: width of the classification head.
        include_top: with False, the model returns pooled features `(batch, D)` (after the
            representation layer, if any).
        pooling: `"token"` (class token, the paper's default) or `"gap"` (global average
            of the patch tokens; such models have no class token, as in the original).
        representation_size: width of the `pre_logits` Dense + tanh layer before the head,
            or None for none (the fine-tuned checkpoints have none).
        dropout: dropout rate after the embeddings, the attention and in the MLPs.
        attention_dropout: dropout rate on attention probabilities.
        drop_path_rate: stochastic-depth rate of the last block; it grows linearly from 0
            at the first block.
        classifier_activation: activation on the head (e.g. `"softmax"`), or None for
            logits (the default).
        layer_norm_epsilon: epsilon of every LayerNorm.
        gelu: MLP activation form, `"tanh"` (default, as Google's checkpoints were trained),
            `"erf"` (exact, PyTorch ports) or `"logistic"` (tanh form via sigmoid, for edge
            accelerators). See `keras_vit.layers.gelu`.
        num_channels: image channels.
        seed: an int seeding every initialiser, dropout and drop-path, or None.
        train_class_token_only: with `pooling="token"`, also in training (`model.fit`)
            run the last block on the class token alone, as inference always does: the
            same loss and gradients to float rounding, with the last block's queries,
            attention output and MLP computed for one token instead of all. Off by
            default: the rounding differs, so a seeded run would no longer repeat the
            weights of a run made without it.
        include_preprocessing: with True, a `preprocessing` layer first in the model maps
            RGB pixels 0..255 (uint8 or float) to [-1, 1] as `(x - 127.5) / 127.5`
            (keras.applications style), so the model takes decoded images as they are.
        dtype: a floating-point dtype policy for every layer (e.g. `"mixed_bfloat16"`), or
            None for the global policy. Outputs of the head stay float32.
        resnet_layers: None for the plain ViT; otherwise the hybrid: a BiT ResNet stem
            (`keras_vit.resnet.ResNetStem`, layer `resnet`) with this many bottleneck units
            per stage, `()` for its root block alone, `(3, 4, 9)` for R50+ViT-B/16. Its
            feature map (stride 4 for the root, times 2 per stage after the first) is cut
            into patches of `patch_size` (1 for R50+ViT-B/16), so each side of that map
            (`ceil(image side / stride)`) must be divisible by `patch_size`.
        resnet_width: multiplier of the stem's 64 base channels (`64 * resnet_width` a
            multiple of 32); used only with `resnet_layers`.
        name: model name.

    Example:
    >>> model = keras_vit.VisionTransformer(image_size=32, patch_size=8, hidden_size=32,
    ...     num_layers=2, num_heads=2, mlp_dim=64, num_classes=10)
    >>> model(np.zeros((1, 32, 32, 3))).shape
    TensorShape([1, 10])
    """

    def __init__(
        self,
        image_size: int | Sequence[int] = 224,
        patch_size: int = 16,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        mlp_dim: int = 3072,
        num_classes: int = 1000,
        include_top: bool = True,
        pooling: Pooling = "token",
        representation_size: int | None = None,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        classifier_activation: str | None = None,
        layer_norm_epsilon: float = 1e-6,
        gelu: GeluForm = "tanh",
        num_channels: int = 3,
        seed: int | None = None,
        train_class_token_only: bool = False,
        include_preprocessing: bool = False,
        dtype=None,
        resnet_layers: Sequence[int] | None = None,
        resnet_width: float = 1.0,
        name: str = "vit",
        **kwargs,
    ):
        height, width = image_size_pair(image_size)
        check_positive_ints(
            patch_size=patch_size,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            num_channels=num_channels,
        )
        if include_top:
            check_positive_int("num_classes", num_classes)
        if representation_size is not None:
            check_positive_int("representation_size", representation_size)
        check_rates(
            dropout=dropout, attention_dropout=attention_dropout, drop_path_rate=drop_path_rate
        )
        check_seed(seed)
        policy = float_dtype_policy(dtype)
        resnet, resnet_layers, resnet_width, embedding_channels = build_stem(
            resnet_layers, resnet_width, (height, width, num_channels), seed, policy
        )
        grid = _token_grid((height, width, num_channels), resnet, patch_size)
        _check_options(
            hidden_size,
            num_heads,
            pooling,
            gelu,
            classifier_activation,
            train_class_token_only,
            include_preprocessing,
        )

        parts = build_parts(
            grid=grid,
            patch_size=patch_size,
            embedding_channels=embedding_channels,
            hidden_size=hidden_size,
            num_layers=num_layers,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            num_classes=num_classes,
            include_top=include_top,
            pooling=pooling,
            representation_size=representation_size,
            dropout=dropout,
            attention_dropout=attention_dropout,
            drop_path_rate=drop_path_rate,
            classifier_activation=classifier_activation,
            layer_norm_epsilon=layer_norm_epsilon,
            gelu=gelu,
            seed=seed,
            include_preprocessing=include_preprocessing,
            resnet=resnet,
            policy=policy,
        )

        # === Functional graph ===
        images = keras.Input((height, width, num_channels), name="images")
        outputs = forward(parts, images)
        super().__init__(inputs=images, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.image_size = (height, width)
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.num_classes = num_classes
        self.include_top = include_top
        self.pooling = pooling
        self.representation_size = representation_size
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.drop_path_rate = drop_path_rate
        self.classifier_activation = classifier_activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.gelu = gelu
        self.num_channels = num_channels
        self.seed = seed
        self.train_class_token_only = train_class_token_only
        self.include_preprocessing = include_preprocessing
        self.resnet_layers = resnet_layers
        self.resnet_width = float(resnet_width)
        self.embedding_channels = embedding_channels
        self._grid_size = grid
        self._vit_dtype = None if policy is None else policy.name
        self._parts = parts

    @property
    def grid_size(self) -> tuple[int, int]:
        """The patch grid `(rows, columns)` (of the stem's feature map for a hybrid)."""
        return self._grid_size

    @property
    def token_size(self) -> int:
        """Side in image pixels of the square one token covers: `patch_size`, times the
        stem's stride for a hybrid (whose last row or column may cover less)."""
        stride = 1 if self.resnet_layers is None else feature_stride(self.resnet_layers)
        return self.patch_size * stride

    @property
    def stem(self) -> ResNetStem | None:
        """The hybrid's ResNet stem (layer `resnet`), or None for the plain ViT."""
        return self._parts.resnet

    @property
    def outputs_logits(self) -> bool:
        """Whether the model ends in a head without an activation (its outputs are logits)."""
        return self.include_top and self.classifier_activation in (None, "linear")

    def check_images(self, images) -> None:
        """Raises ValueError (one line) unless `images` fit this model.

        Args:
            images: an array or tensor `(batch, height, width, channels)` at the model's
                image size and channel count; floating point, or also integer with
                `include_preprocessing=True`.
        """
        shape = tuple(images.shape)
        expected = (*self.image_size, self.num_channels)
        if len(shape) != 4 or tuple(shape[1:]) != expected:
            raise ValueError(
                f"Expected images of shape (batch, {expected[0]}, {expected[1]}, {expected[2]})"
                f" for model '{self.name}'. Received: shape={shape}"
            )
        dtype = getattr(images, "dtype", None)
        if dtype is None or self.include_preprocessing:
            return
        dtype = keras.backend.standardize_dtype(dtype)
        if not keras.backend.is_float_dtype(dtype):
            raise ValueError(
                f"Model '{self.name}' takes float images scaled to [-1, 1]. Received: dtype="
                f"{dtype}; scale the pixels with (x - 127.5) / 127.5 or build the model with "
                "include_preprocessing=True"
            )

    # Deprecated private name, kept for callers outside this module for one release.
    _check_images = check_images

    def __call__(self, *args, **kwargs):
        # Checked here, before Keras wraps exceptions raised inside `call`, so that a wrong
        # image size, channel count or dtype reads as one line.
        args, kwargs = _images_as_array(args, kwargs)
        images = args[0] if args else kwargs.get("inputs")
        if images is not None and hasattr(images, "shape"):
            self.check_images(images)
        return super().__call__(*args, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        """The functional graph; at inference, the last block computes the class token only.

        With class-token pooling the head reads token 0 alone, so outside training
        (`training` False or None: `predict`, `evaluate`, `model(images)`) this is
        `forward(inputs, class_token_only_last=True)`: the same outputs to float rounding,
        and the same gradients, with fewer multiply-adds. Training (`model.fit`,
        `training=True`) runs the functional graph unless the model was built with
        `train_class_token_only=True`, so a seeded run repeats the weights it always did.
        """
        training_call = not (training is None or training is False)  # True, or a tensor
        full_graph = training_call and not self.train_class_token_only
        if full_graph or mask is not None or kwargs or self.pooling != "token":
            return super().call(inputs, training=training, mask=mask, **kwargs)
        return self.forward(inputs, training=training, class_token_only_last=True)

    def forward(
        self,
        images,
        training=None,
        class_token_only_last: bool = False,
        form: GraphForm = "keras",
        class_row_norm=None,
        return_attention_scores: bool = False,
    ):
        """The model's computation, layer by layer, with the options of an inference graph.

        The functional graph is this function with the defaults; `call` and the export
        graphs (`export.classifier.PixelClassifier`) use the options.

        Args:
            images: `(batch, height, width, channels)`, scaled as the model expects.
            training: whether dropout and drop-path are active.
            class_token_only_last: the last `TransformerBlock` computes the class token
                only (`class_token_only=True`), the one token the head reads; needs
                `pooling="token"`.
            form: the op formulation of every layer, one of `keras_vit.layers.GRAPH_FORMS`.
            class_row_norm: the first block's `norm1` of the class-token row as a constant
                `(hidden_size,)` vector (`TransformerBlock`), or None.
            return_attention_scores: also return every block's attention probabilities,
                a list of `(batch, num_heads, queries, tokens)` (not with `"edgetpu"`).

        Returns:
            The model's outputs (logits, probabilities or pooled features), and with
            `return_attention_scores` the list of attention probabilities.
        """
        if class_token_only_last and self.pooling != "token":
            raise ValueError(
                "`class_token_only_last=True` needs pooling='token'. "
                f"Received: pooling={self.pooling!r}"
            )
        return forward(
            self._parts,
            images,
            training,
            class_token_only_last,
            form,
            class_row_norm,
            return_attention_scores,
        )

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_size": list(self.image_size),
            "patch_size": self.patch_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "mlp_dim": self.mlp_dim,
            "num_classes": self.num_classes,
            "include_top": self.include_top,
            "pooling": self.pooling,
            "representation_size": self.representation_size,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "drop_path_rate": self.drop_path_rate,
            "classifier_activation": self.classifier_activation,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "gelu": self.gelu,
            "num_channels": self.num_channels,
            "seed": self.seed,
            "train_class_token_only": self.train_class_token_only,
            "include_preprocessing": self.include_preprocessing,
            "dtype": self._vit_dtype,
            "resnet_layers": None if self.resnet_layers is None else list(self.resnet_layers),
            "resnet_width": self.resnet_width,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> VisionTransformer:
        return cls(**config)

    def compile(self, *args, **kwargs) -> None:
        """`keras.Model.compile`, refusing a loss that expects probabilities on logits.

        A head without an activation outputs logits; a crossentropy given as a string
        (`"sparse_categorical_crossentropy"`) or built with `from_logits=False` would read
        them as probabilities and the model would learn nothing.

        Raises:
            ValueError: such a loss with `classifier_activation=None` (one line).
        """
        loss = kwargs["loss"] if "loss" in kwargs else (args[1] if len(args) > 1 else None)
        if self.outputs_logits:
            check_logits_loss(loss, self.name)
        super().compile(*args, **kwargs)

    def compile_from_config(self, config: dict) -> None:
        # As `keras.Model.compile_from_config`, which skips a custom `compile`. A saved
        # model is compiled as it was saved: loading is not the place to refuse its loss.
        config = keras.saving.deserialize_keras_object(config)
        super().compile(**config)
        if hasattr(self, "optimizer") and self.built:
            self.optimizer.build(self.trainable_variables)


def _images_as_array(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """A nested Python list or tuple of pixels as a NumPy array; other inputs unchanged."""
    if args and isinstance(args[0], (list, tuple)):
        return (np.asarray(args[0]), *args[1:]), kwargs
    if isinstance(kwargs.get("inputs"), (list, tuple)):
        return args, {**kwargs, "inputs": np.asarray(kwargs["inputs"])}
    return args, kwargs
