"""From pixels to tokens and back: `Patches`, `PatchEncoder` and `TokenPooling`."""

from __future__ import annotations

import math
from typing import Literal

import keras
from keras import ops

from keras_vit.layers.forms import (
    GraphForm,
    check_form,
    first_tokens,
)
from keras_vit.validation import check_positive_int, sub_seed


@keras.saving.register_keras_serializable(package="keras_vit")
class Patches(keras.layers.Layer):
    """Cuts images into non-overlapping square patches and flattens each one.

    Patches are ordered row by row, then column by column; each patch is flattened in
    (row, column, channel) order, which is the order of a convolution kernel of shape
    `(patch_size, patch_size, channels, features)` reshaped to two dimensions. Only
    reshape and transpose ops are used, so the layer converts to TFLite builtins.

    Args:
        patch_size: side of a square patch, in pixels.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Input shape:
        `(batch, height, width, channels)`, height and width divisible by `patch_size`.

    Output shape:
        `(batch, (height // patch_size) * (width // patch_size),
        patch_size * patch_size * channels)`.

    Example:
    >>> patches = keras_vit.layers.Patches(patch_size=4)
    >>> patches(np.zeros((2, 8, 12, 3))).shape
    (2, 6, 48)
    """

    def __init__(self, patch_size: int, **kwargs):
        super().__init__(**kwargs)
        check_positive_int("patch_size", patch_size)
        self.patch_size = patch_size
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _grid(self, input_shape) -> tuple[int, int]:
        height, width = input_shape[1], input_shape[2]
        if height is None or width is None:
            raise ValueError(
                "Patches needs a static image height and width. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"Expected image height and width divisible by patch_size={self.patch_size}. "
                f"Received: image size {height}x{width}"
            )
        return height // self.patch_size, width // self.patch_size

    def build(self, input_shape):
        self._grid(input_shape)
        self.built = True

    def call(self, images):
        grid_h, grid_w = self._grid(images.shape)
        size = self.patch_size
        channels = images.shape[-1]
        x = ops.reshape(images, (-1, grid_h, size, grid_w, size, channels))
        x = ops.transpose(x, (0, 1, 3, 2, 4, 5))
        return ops.reshape(x, (-1, grid_h * grid_w, size * size * channels))

    def compute_output_shape(self, input_shape):
        grid_h, grid_w = self._grid(input_shape)
        channels = input_shape[-1]
        return (input_shape[0], grid_h * grid_w, self.patch_size * self.patch_size * channels)

    def get_config(self):
        config = super().get_config()
        config.update({"patch_size": self.patch_size})
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class PatchEncoder(keras.layers.Layer):
    """Projects flattened patches, prepends a class token and adds position embeddings.

    The projection is a Dense layer whose kernel is the original patch-embedding
    convolution kernel `(P, P, C, D)` reshaped to `(P * P * C, D)`. The class token is a
    learned vector (initialised to zeros); the position embedding is a learned
    `(1, num_patches + 1, D)` tensor (normal, stddev 0.02), one row per token.

    Args:
        num_patches: number of patches per image.
        hidden_size: width `D` of the token embeddings.
        use_class_token: prepend the learned class token. Models pooled by global average
            (the original `classifier="gap"`) have none.
        seed: seed for the initialisers, or None.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Input shape:
        `(batch, num_patches, patch_dim)`.

    Output shape:
        `(batch, num_patches + 1, hidden_size)`, or `(batch, num_patches, hidden_size)`
        without a class token.

    Call arguments:
        patches: `(batch, num_patches, patch_dim)`; with `form="edgetpu"`, the images
            `(batch, height, width, channels)` themselves.
        form: the op formulation, one of `GRAPH_FORMS`. `"edgetpu"` cuts the patches
            with a strided convolution and returns `(batch, 1, tokens, hidden_size)`.

    Example:
    >>> encoder = keras_vit.layers.PatchEncoder(num_patches=6, hidden_size=32)
    >>> encoder(np.zeros((2, 6, 48))).shape
    (2, 7, 32)
    """

    def __init__(
        self,
        num_patches: int,
        hidden_size: int,
        use_class_token: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("num_patches", num_patches)
        check_positive_int("hidden_size", hidden_size)
        self.num_patches = num_patches
        self.hidden_size = hidden_size
        self.use_class_token = bool(use_class_token)
        self.seed = seed
        self.projection = keras.layers.Dense(
            hidden_size,
            kernel_initializer=keras.initializers.LecunNormal(seed=sub_seed(seed, 0)),
            bias_initializer="zeros",
            dtype=self.dtype_policy,
            name="projection",
        )

    @property
    def num_tokens(self) -> int:
        return self.num_patches + int(self.use_class_token)

    def build(self, input_shape):
        if input_shape[1] is not None and input_shape[1] != self.num_patches:
            raise ValueError(
                f"PatchEncoder expected {self.num_patches} patches. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.projection.build(input_shape)
        if self.use_class_token:
            self.class_token = self.add_weight(
                shape=(1, 1, self.hidden_size), initializer="zeros", name="class_token"
            )
        self.position_embedding = self.add_weight(
            shape=(1, self.num_tokens, self.hidden_size),
            initializer=keras.initializers.RandomNormal(stddev=0.02, seed=sub_seed(self.seed, 1)),
            name="position_embedding",
        )
        self.built = True

    def call(self, patches, form: GraphForm = "keras"):
        check_form(form)
        if form == "edgetpu":
            return self._edgetpu_call(patches)
        x = self.projection(patches)
        if self.use_class_token:
            class_token = ops.cast(self.class_token, x.dtype)
            class_token = ops.tile(class_token, (ops.shape(x)[0], 1, 1))
            x = ops.concatenate([class_token, x], axis=1)
        return x + ops.cast(self.position_embedding, x.dtype)

    def _edgetpu_call(self, images):
        """The embedding of `images` in the layout `(batch, 1, tokens, hidden_size)`.

        The projection runs as a CONV_2D with stride `patch_size` on the images themselves
        (its kernel reshaped to `(P, P, C, D)`), as no 6-D patch reshape is in the Edge TPU
        table; a zero token PADded in front and one constant ADD (class token plus position
        embedding) complete it, since a constant CONCATENATION input must be all zeros.
        """
        channels = images.shape[-1]
        size = math.isqrt(self.projection.kernel.shape[0] // channels)
        kernel = ops.reshape(self.projection.kernel, (size, size, channels, self.hidden_size))
        x = ops.conv(images, kernel, strides=size, padding="valid") + self.projection.bias
        x = ops.reshape(x, (-1, 1, x.shape[1] * x.shape[2], self.hidden_size))
        embedding = self.position_embedding
        if self.use_class_token:
            x = ops.pad(x, ((0, 0), (0, 0), (1, 0), (0, 0)))
            class_row = ops.pad(self.class_token, ((0, 0), (0, self.num_patches), (0, 0)))
            embedding = embedding + class_row
        return x + embedding[None]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_tokens, self.hidden_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_patches": self.num_patches,
                "hidden_size": self.hidden_size,
                "use_class_token": self.use_class_token,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class TokenPooling(keras.layers.Layer):
    """Pools encoder tokens into one vector per image.

    Args:
        pooling: `"token"` takes the class token (token 0); `"gap"` averages all tokens.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Call arguments:
        x: `(batch, tokens, hidden_size)`, or `(batch, 1, tokens, hidden_size)` with
            `form="edgetpu"`.
        form: the op formulation, one of `GRAPH_FORMS`.

    Output shape:
        `(batch, hidden_size)`.
    """

    def __init__(self, pooling: Literal["token", "gap"] = "token", **kwargs):
        super().__init__(**kwargs)
        if pooling not in ("token", "gap"):
            raise ValueError(
                f"Expected `pooling` to be 'token' or 'gap'. Received: pooling={pooling!r}"
            )
        self.pooling = pooling

    def call(self, x, form: GraphForm = "keras"):
        check_form(form)
        if form == "edgetpu":
            if self.pooling == "token":
                # No slice when the last block computed the class token only: an identity
                # STRIDED_SLICE would keep the converter from folding the LayerNorm's scale
                # and offset into the head.
                if x.shape[2] != 1:
                    x = first_tokens(x, 1, form)
            else:
                x = ops.mean(x, axis=2, keepdims=True)
            return ops.reshape(x, (-1, x.shape[-1]))
        if self.pooling == "token":
            return x[:, 0]
        return ops.mean(x, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"pooling": self.pooling})
        return config
