"""The BiT-style ResNet stem of the hybrid Vision Transformer, as Keras layers.

The layers follow the computation of the original JAX code (google-research/
vision_transformer, `vit_jax/models_resnet.py` and the root block in `vit_jax/models_vit.py`)
so that Google's hybrid checkpoints load without numerical drift: weight-standardised
convolutions without bias, GroupNorm with 32 groups of contiguous channels and epsilon 1e-6,
post-activation bottleneck units, and 'SAME' padding everywhere (stride-2 ops round up).

Every layer is registered with Keras under the package name ``keras_vit`` and names its
sublayers after the original parameter scopes (`conv_root`, `gn_root`, `block1_unit1`,
`conv1` ... `gn_proj`), which the checkpoint mapping (`keras_vit.hybrid_keys`) relies on.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from keras_vit.layers import GRAPH_FORMS, GraphForm
from keras_vit.validation import check_seed, sub_seed

# Constants of the original code: `weight_standardize(..., eps=1e-5)` and `nn.GroupNorm`'s
# defaults (num_groups=32, epsilon=1e-6).
WS_EPSILON = 1e-5
GN_GROUPS = 32
GN_EPSILON = 1e-6
# Channels of the root convolution at width 1; stage i's bottleneck width is this times 2**i
# and its output four times that.
BASE_WIDTH = 64
EXPANSION = 4


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")
    return int(value)


def _positive_float(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"Expected `{name}` to be a positive number. Received: {name}={value!r}")
    return float(value)


def _strided_shape(shape, stride: int, channels) -> tuple:
    """The output shape of a 'SAME'-padded op with `stride` (None sizes stay None)."""
    height, width = (None if n is None else math.ceil(n / stride) for n in shape[1:3])
    return (shape[0], height, width, channels)


def standardize_kernel(kernel, epsilon: float = WS_EPSILON):
    """Weight standardisation of a convolution kernel, as `models_resnet.weight_standardize`.

    Each output filter is centred and divided by its population standard deviation plus
    `epsilon`: `(w - mean) / (std + epsilon)` over the spatial and input-channel axes.

    Args:
        kernel: tensor or array `(kernel_h, kernel_w, in_channels, filters)`.
        epsilon: added to the standard deviation (not the variance).

    Returns:
        A tensor of the same shape and dtype.

    Example:
    >>> w = keras_vit.resnet.standardize_kernel(np.random.rand(3, 3, 4, 8))
    >>> w.shape
    TensorShape([3, 3, 4, 8])
    """
    kernel = ops.convert_to_tensor(kernel)
    axes = (0, 1, 2)
    centered = kernel - ops.mean(kernel, axis=axes, keepdims=True)
    std = ops.sqrt(ops.mean(ops.square(centered), axis=axes, keepdims=True))
    return centered / (std + epsilon)


@keras.saving.register_keras_serializable(package="keras_vit")
class StdConv2D(keras.layers.Layer):
    """Weight-standardised 2D convolution without bias and with 'SAME' padding.

    The kernel variable holds the raw weights (as stored in checkpoints); every call
    standardises it with `standardize_kernel`. `folded_kernel()` returns the standardised
    kernel, with which a plain `keras.layers.Conv2D(use_bias=False, padding="same")` gives
    the same outputs (for export graphs).

    Args:
        filters: output channels.
        kernel_size: side of the square kernel.
        strides: stride along height and width.
        seed: seed of the kernel initialiser (LeCun normal), or None.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, ceil(height / strides), ceil(width / strides), filters)`.

    Example:
    >>> conv = keras_vit.resnet.StdConv2D(filters=8, kernel_size=3, strides=2)
    >>> conv(np.zeros((1, 9, 10, 3))).shape
    TensorShape([1, 5, 5, 8])
    """

    def __init__(
        self, filters: int, kernel_size: int, strides: int = 1, seed: int | None = None, **kwargs
    ):
        super().__init__(**kwargs)
        self.filters = _positive_int("filters", filters)
        self.kernel_size = _positive_int("kernel_size", kernel_size)
        self.strides = _positive_int("strides", strides)
        check_seed(seed)
        self.seed = seed
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"StdConv2D needs a static channel count. Received: {input_shape}")
        self.kernel = self.add_weight(
            shape=(self.kernel_size, self.kernel_size, channels, self.filters),
            initializer=keras.initializers.LecunNormal(seed=self.seed),
            # Standardised in the variable's dtype (float32 under mixed precision), then cast.
            autocast=False,
            name="kernel",
        )
        self.built = True

    def call(self, x):
        kernel = ops.cast(standardize_kernel(self.kernel), x.dtype)
        return ops.conv(x, kernel, strides=self.strides, padding="same")

    def folded_kernel(self) -> np.ndarray:
        """The standardised kernel as a float32 array `(k, k, in_channels, filters)`."""
        return ops.convert_to_numpy(standardize_kernel(self.kernel)).astype(np.float32)

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "seed": self.seed,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class GroupNorm(keras.layers.Layer):
    """Group normalisation over contiguous channel groups, written from mean and variance.

    The normalisation of `flax.linen.GroupNorm` (biased variance, epsilon inside the square
    root, statistics over height, width and the channels of a group) and of
    `keras.layers.GroupNormalization(groups, epsilon=...)`, but built from reshape, mean,
    subtract, multiply and rsqrt ops on at most 4-D tensors, so that it quantizes to integer
    ops like `keras_vit.layers.LayerNorm`. Under a mixed-precision policy the statistics are
    computed in float32.

    Args:
        groups: number of channel groups; the channel count must be a multiple of it.
        epsilon: small constant added to the variance.
        gamma_initializer: initializer of the scale (`"zeros"` for the last norm of a
            residual branch, as the original).
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        Same as the input.

    Example:
    >>> norm = keras_vit.resnet.GroupNorm(groups=4)
    >>> norm(np.random.rand(2, 3, 3, 8)).shape
    TensorShape([2, 3, 3, 8])
    """

    def __init__(
        self,
        groups: int = GN_GROUPS,
        epsilon: float = GN_EPSILON,
        gamma_initializer="ones",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.groups = _positive_int("groups", groups)
        self.epsilon = _positive_float("epsilon", epsilon)
        self.gamma_initializer = keras.initializers.get(gamma_initializer)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"Expected a channel count divisible by groups={self.groups}. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.gamma = self.add_weight(
            shape=(channels,), initializer=self.gamma_initializer, name="gamma"
        )
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")
        self.built = True

    def call(self, x, form: GraphForm = "keras"):
        """`form="edgetpu"` takes the means as SUM times `1 / n` (the Edge TPU's MEAN
        reduces height and width only); the other `GRAPH_FORMS` compute MEAN."""
        if form not in GRAPH_FORMS:
            raise ValueError(f"Expected `form` to be one of {GRAPH_FORMS}. Received: form={form!r}")
        dtype = x.dtype
        if dtype in ("float16", "bfloat16"):
            x = ops.cast(x, "float32")
        shape = ops.shape(x)
        channels = x.shape[-1]
        grouped = ops.reshape(x, (-1, shape[1] * shape[2], self.groups, channels // self.groups))

        def mean(t):
            if form != "edgetpu":
                return ops.mean(t, axis=(1, 3), keepdims=True)
            return ops.sum(t, axis=(1, 3), keepdims=True) * (1.0 / (t.shape[1] * t.shape[3]))

        centered = grouped - mean(grouped)
        # A product rather than `square`: the converter fuses `square(x - mean)` into
        # SQUARED_DIFFERENCE, which TFLite's int16x8 kernels lack.
        variance = mean(centered * centered)
        y = ops.reshape(centered * ops.rsqrt(variance + self.epsilon), shape)
        y = y * ops.cast(self.gamma, y.dtype) + ops.cast(self.beta, y.dtype)
        return ops.cast(y, dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "groups": self.groups,
                "epsilon": self.epsilon,
                "gamma_initializer": keras.initializers.serialize(self.gamma_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="keras_vit")
class BottleneckUnit(keras.layers.Layer):
    """Post-activation bottleneck unit of BiT (`models_resnet.ResidualUnit`).

    `relu(residual + gn3(conv3(relu(gn2(conv2(relu(gn1(conv1(x)))))))))` with 1x1, 3x3
    (carrying the stride) and 1x1 weight-standardised convolutions. The residual is `x`, or
    `gn_proj(conv_proj(x))` (1x1, strided) where the channels or the stride change.

    Args:
        features: bottleneck width; the unit outputs `4 * features` channels.
        strides: stride of the 3x3 convolution and of the projection.
        seed: seed of the convolutions' initialisers, or None.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, ceil(height / strides), ceil(width / strides), 4 * features)`.

    Example:
    >>> unit = keras_vit.resnet.BottleneckUnit(features=32, strides=2)
    >>> unit(np.random.rand(1, 8, 8, 64)).shape
    TensorShape([1, 4, 4, 128])
    """

    def __init__(self, features: int, strides: int = 1, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.features = _positive_int("features", features)
        self.strides = _positive_int("strides", strides)
        check_seed(seed)
        self.seed = seed
        self.input_spec = keras.layers.InputSpec(ndim=4)
        out = EXPANSION * self.features
        policy = self.dtype_policy
        self.conv1 = StdConv2D(self.features, 1, seed=sub_seed(seed, 1), dtype=policy, name="conv1")
        self.gn1 = GroupNorm(dtype=policy, name="gn1")
        self.conv2 = StdConv2D(
            self.features, 3, self.strides, seed=sub_seed(seed, 2), dtype=policy, name="conv2"
        )
        self.gn2 = GroupNorm(dtype=policy, name="gn2")
        self.conv3 = StdConv2D(out, 1, seed=sub_seed(seed, 3), dtype=policy, name="conv3")
        self.gn3 = GroupNorm(gamma_initializer="zeros", dtype=policy, name="gn3")
        self.conv_proj = None
        self.gn_proj = None

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(
                f"BottleneckUnit needs a static channel count. Received: {input_shape}"
            )
        if channels != EXPANSION * self.features or self.strides != 1:  # the residual changes
            self.conv_proj = StdConv2D(
                EXPANSION * self.features,
                1,
                strides=self.strides,
                seed=sub_seed(self.seed, 4),
                dtype=self.dtype_policy,
                name="conv_proj",
            )
            self.gn_proj = GroupNorm(dtype=self.dtype_policy, name="gn_proj")
            self.conv_proj.build(input_shape)
            self.gn_proj.build(self.conv_proj.compute_output_shape(input_shape))
        shape = input_shape
        for layer in self.branch_layers():
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        self.built = True

    def branch_layers(self) -> list[keras.layers.Layer]:
        """The residual branch's convolutions and norms, in order."""
        return [self.conv1, self.gn1, self.conv2, self.gn2, self.conv3, self.gn3]

    def sublayers(self) -> list[keras.layers.Layer]:
        """Every weighted sublayer: the branch, then the projection if there is one."""
        projection = [self.conv_proj, self.gn_proj] if self.conv_proj is not None else []
        return self.branch_layers() + projection

    def call(self, x, form: GraphForm = "keras"):
        residual = x
        if self.conv_proj is not None:
            residual = self.gn_proj(self.conv_proj(x), form=form)
        y = ops.relu(self.gn1(self.conv1(x), form=form))
        y = ops.relu(self.gn2(self.conv2(y), form=form))
        y = self.gn3(self.conv3(y), form=form)
        return ops.relu(residual + y)

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.strides, EXPANSION * self.features)

    def get_config(self):
        config = super().get_config()
        config.update({"features": self.features, "strides": self.strides, "seed": self.seed})
        return config


def stem_channels(
    layers: tuple[int, ...], width: float, names: tuple[str, str] = ("layers", "width")
) -> tuple[int, int]:
    """Channels of the root convolution and of the stem's output feature map.

    Args:
        layers: units per stage (`()` for the root only).
        width: multiplier of the 64 base channels.
        names: the argument names the error messages use (the model's are
            `("resnet_layers", "resnet_width")`).

    Returns:
        `(root_channels, output_channels)`.

    Raises:
        ValueError: `layers` is not a tuple or list of positive ints, or `64 * width` is not
            a multiple of 32 (one line naming the argument).

    Example:
    >>> keras_vit.resnet.stem_channels((3, 4, 9), 1.0)
    (64, 1024)
    """
    layers_name, width_name = names
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (tuple, list)):
        raise ValueError(
            f"Expected `{layers_name}` to be a tuple of units per stage. "
            f"Received: {layers_name}={layers!r}"
        )
    layers = tuple(_positive_int(layers_name, n) for n in layers)
    width = _positive_float(width_name, width)
    root = BASE_WIDTH * width
    if root != int(root) or int(root) % GN_GROUPS:
        raise ValueError(
            f"Expected `{width_name}` such that 64 * {width_name} is a multiple of "
            f"{GN_GROUPS} (GroupNorm groups), e.g. 0.5, 1, 2. Received: {width_name}={width}"
        )
    root = int(root)
    if not layers:
        return root, root
    return root, EXPANSION * root * 2 ** (len(layers) - 1)


@keras.saving.register_keras_serializable(package="keras_vit")
class ResNetStem(keras.layers.Layer):
    """BiT ResNet stem of the hybrid Vision Transformer: root block and bottleneck stages.

    Root: 7x7 stride-2 weight-standardised convolution (`conv_root`, `64 * width`
    channels), GroupNorm (`gn_root`), ReLU and 3x3 stride-2 max-pooling, all 'SAME'-padded
    (the pooling pads with -inf, as `flax.linen.max_pool`). Then stage `i` (1-based,
    sublayers `block{i}_unit{j}`) stacks `layers[i - 1]` bottleneck units of width
    `64 * width * 2**(i - 1)`, output channels four times that; the first unit of every stage
    after the first has stride 2.

    Args:
        layers: units per stage; `(3, 4, 9)` is the stem of R50+ViT-B/16, `()` the root only.
        width: multiplier of the 64 base channels; `64 * width` must be a multiple of 32.
        seed: seed of the convolutions' initialisers, or None.
        **kwargs: standard layer arguments such as `name` and `dtype`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, ceil(height / s), ceil(width / s), C)`: `s = 4 * 2**(len(layers) - 1)`
        (4 for the root only), `C` from `stem_channels(layers, width)`.

    Example:
    >>> stem = keras_vit.resnet.ResNetStem(layers=(1, 1), width=0.5)
    >>> stem(np.zeros((1, 32, 32, 3))).shape
    TensorShape([1, 4, 4, 256])
    """

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 4, 9),
        width: float = 1.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        root, _ = stem_channels(layers, width)
        check_seed(seed)
        self.stage_sizes = tuple(int(n) for n in layers)
        self.width = float(width)
        self.seed = seed
        self.input_spec = keras.layers.InputSpec(ndim=4)
        policy = self.dtype_policy
        self.conv_root = StdConv2D(
            root, 7, strides=2, seed=sub_seed(seed, 0), dtype=policy, name="conv_root"
        )
        self.gn_root = GroupNorm(dtype=self.dtype_policy, name="gn_root")
        self.units = []
        for i, units in enumerate(self.stage_sizes):
            for j in range(units):
                self.units.append(
                    BottleneckUnit(
                        root * 2**i,
                        strides=2 if i > 0 and j == 0 else 1,
                        seed=sub_seed(seed, 10 * (len(self.units) + 1)),
                        dtype=policy,
                        name=f"block{i + 1}_unit{j + 1}",
                    )
                )

    def build(self, input_shape):
        self.conv_root.build(input_shape)
        shape = self.conv_root.compute_output_shape(input_shape)
        self.gn_root.build(shape)
        shape = _strided_shape(shape, 2, shape[3])
        for unit in self.units:
            unit.build(shape)
            shape = unit.compute_output_shape(shape)
        self.built = True

    def call(self, x, form: GraphForm = "keras"):
        """The feature map; `form` is the GroupNorms' op formulation (`GroupNorm.call`)."""
        x = ops.relu(self.gn_root(self.conv_root(x), form=form))
        # 'SAME' max-pooling ignores the padding (pads with -inf), as `nn.max_pool`.
        x = ops.max_pool(x, pool_size=3, strides=2, padding="same")
        for unit in self.units:
            x = unit(x, form=form)
        return x

    def weights_by_name(self) -> dict[str, keras.Variable]:
        """The stem's variables keyed `"<sublayer>/[<sublayer>/]<weight>"`.

        For example `"conv_root/kernel"`, `"gn_root/gamma"`, `"block2_unit1/conv_proj/kernel"`,
        `"block1_unit1/gn3/beta"`: the names `keras_vit.hybrid_keys` maps to and from the
        original checkpoint keys. The stem must be built.
        """
        if not self.built:
            raise ValueError("ResNetStem.weights_by_name() needs a built stem; call build() first")
        named = {}
        for layer in (self.conv_root, self.gn_root):
            for variable in layer.weights:
                named[f"{layer.name}/{variable.name}"] = variable
        for unit in self.units:
            for layer in unit.sublayers():
                for variable in layer.weights:
                    named[f"{unit.name}/{layer.name}/{variable.name}"] = variable
        return named

    def compute_output_shape(self, input_shape):
        shape = self.conv_root.compute_output_shape(input_shape)
        shape = _strided_shape(shape, 2, shape[3])
        for unit in self.units:
            shape = unit.compute_output_shape(shape)
        return shape

    def get_config(self):
        config = super().get_config()
        config.update({"layers": list(self.stage_sizes), "width": self.width, "seed": self.seed})
        return config
