"""The hybrid's ResNet stem: layers, checkpoint key mapping, goldens from Google's Flax code."""

import ast
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from fixtures import synthetic_hybrid as synthetic
from helpers import check_config_roundtrip, check_saving_roundtrip, wrap_layer

import keras_vit
from keras_vit import checkpoints, hybrid_keys
from keras_vit.resnet import (
    BottleneckUnit,
    GroupNorm,
    ResNetStem,
    StdConv2D,
    standardize_kernel,
    stem_channels,
)

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
GOLDENS = np.load(FIXTURES / "hybrid_goldens.npz", allow_pickle=False)
META = json.loads(str(GOLDENS["meta"]))
# Feature maps of the synthetic stems reach |x| ~ 7; float32 noise of one stem (Flax's or
# ours, each against a float64 run) is ~1e-5 there, so the bound scales with the map's size.
FEATURE_TOLERANCE = 1e-5


def numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def weights_of(name: str) -> dict[str, np.ndarray]:
    weights = synthetic.original_layout_weights(synthetic.CONFIGS[name], synthetic.SEEDS[name])
    assert synthetic.weights_digest(weights) == META[f"digest/{name}"], "seeded weights drifted"
    return weights


def load_stem(arrays: dict[str, np.ndarray], **kwargs) -> ResNetStem:
    layers, width = hybrid_keys.stem_config(arrays)
    stem = ResNetStem(layers, width, **kwargs)
    stem.build((None, None, None, 3))
    named = stem.weights_by_name()
    values = hybrid_keys.stem_from_checkpoint(arrays, {n: v.shape for n, v in named.items()})
    for name, value in values.items():
        named[name].assign(value)
    return stem


def case_images(case: str) -> np.ndarray:
    info = META["cases"][case]
    return synthetic.images(info["image_seed"], META["images_per_case"], *info["image_size"])


# === Goldens from Google's Flax hybrid ========================================================


FEATURE_CASES = sorted(c for c, info in META["cases"].items() if info["features_of"])
LOGIT_CASES = sorted(c for c, info in META["cases"].items() if info["logits"])


@pytest.mark.parametrize("case", FEATURE_CASES)
def test_stem_reproduces_the_flax_feature_map(case):
    info = META["cases"][case]
    stem = load_stem(weights_of(info["config"]))
    expected = GOLDENS[f"{case}/features"]
    actual = numpy(stem(case_images(case)[: info["features_of"]]))
    assert actual.shape == expected.shape
    diff = np.abs(actual - expected).max()
    bound = FEATURE_TOLERANCE * max(1.0, float(np.abs(expected).max()))
    assert diff <= bound, f"{case}: max |feature - golden| = {diff:.3g} > {bound:.3g}"


@pytest.mark.parametrize("case", LOGIT_CASES)
def test_hybrid_reproduces_the_flax_logits(case, tmp_path):
    # The whole hybrid, loaded from the original layout: at the native size and at a changed
    # one (the position embedding resized from the file's grid).
    info = META["cases"][case]
    config = dict(synthetic.CONFIGS[info["config"]], image_size=tuple(info["image_size"]))
    path = tmp_path / "hybrid.npz"
    np.savez(path, **weights_of(info["config"]))
    model = keras_vit.ViT(**config)
    summary = checkpoints.load_npz(model, path, source_grid=tuple(info["source_grid"]))
    assert model.grid_size == tuple(info["grid"])
    assert (summary.posemb_resized is None) == (info["grid"] == info["source_grid"])
    images = case_images(case)
    expected = GOLDENS[f"{case}/logits"]
    # from_npz reads the architecture (stem included) from the file itself.
    built = keras_vit.from_npz(path, image_size=tuple(info["image_size"]))
    assert built.get_config() == dict(model.get_config(), name=built.name)
    outputs = (model(images), model.predict(images, verbose=0), model.forward(images))
    for actual in (*outputs, built(images)):
        diff = np.abs(numpy(actual) - expected).max()
        assert diff <= 1e-5, f"{case}: max |logit - golden| = {diff:.3g}"


def test_goldens_detect_timm_weight_standardisation(monkeypatch):
    # timm standardises with (w - mean) / sqrt(var + 1e-8); the goldens must tell it apart.
    def timm(kernel, epsilon=1e-5):
        mean = keras.ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        variance = keras.ops.var(kernel, axis=(0, 1, 2), keepdims=True)
        return (kernel - mean) / keras.ops.sqrt(variance + 1e-8)

    case = "tiny_r2/native"
    stem = load_stem(weights_of("tiny_r2"))
    monkeypatch.setattr(keras_vit.resnet, "standardize_kernel", timm)
    actual = numpy(stem(case_images(case)[:1]))
    assert np.abs(actual - GOLDENS[f"{case}/features"]).max() > 1e-3


def test_goldens_detect_the_keras_group_norm_epsilon():
    # keras.layers.GroupNormalization defaults to epsilon=1e-3; the original uses 1e-6.
    case = "tiny_r2/native"
    stem = load_stem(weights_of("tiny_r2"))
    for layer in [stem.gn_root] + [norm for unit in stem.units for norm in unit.sublayers()]:
        if isinstance(layer, GroupNorm):
            layer.epsilon = 1e-3
    actual = numpy(stem(case_images(case)[:1]))
    # Small (pre-norm variances are large) but well outside the feature tolerance.
    assert np.abs(actual - GOLDENS[f"{case}/features"]).max() > 1e-4


def test_parameter_counts_equal_the_flax_modules():
    counts = META["param_counts"]
    assert counts["R50+ViT-B_16"]["total"] == 98_659_112
    assert counts["R26+ViT-S_32"]["total"] == 36_431_912
    assert counts["R+ViT-Ti_16"]["total"] == 6_337_704
    for name in ("R50+ViT-B_16", "R26+ViT-S_32", "R+ViT-Ti_16"):
        info = counts[name]
        stem = ResNetStem(tuple(info["resnet_layers"]), info["resnet_width"])
        stem.build((None, 224, 224, 3))
        assert stem.count_params() == info["stem"], name


# === Layers ===================================================================================


def test_standardize_kernel_is_the_original_formula(rng):
    kernel = rng.normal(loc=0.3, size=(3, 3, 4, 5)).astype("float32")
    mean = kernel.astype("float64").mean(axis=(0, 1, 2), keepdims=True)
    std = kernel.astype("float64").std(axis=(0, 1, 2), keepdims=True)  # population std
    expected = (kernel - mean) / (std + 1e-5)
    np.testing.assert_allclose(numpy(standardize_kernel(kernel)), expected, atol=1e-6)
    # epsilon adds to the standard deviation: a constant filter stays finite (zero).
    flat = numpy(standardize_kernel(np.ones((1, 1, 2, 1), "float32")))
    np.testing.assert_array_equal(flat, np.zeros((1, 1, 2, 1)))


def test_folded_kernel_makes_a_plain_conv_exact(rng):
    conv = StdConv2D(6, 3, strides=2)
    x = rng.normal(size=(2, 9, 10, 4)).astype("float32")
    conv.build(x.shape)
    conv.kernel.assign(rng.normal(loc=0.5, size=conv.kernel.shape).astype("float32"))
    expected = numpy(conv(x))
    plain = keras.layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False)
    plain.build(x.shape)
    plain.kernel.assign(conv.folded_kernel())
    np.testing.assert_array_equal(numpy(plain(x)), expected)


def test_mixed_precision_standardises_in_float32(rng):
    x = rng.normal(size=(1, 16, 16, 3)).astype("float32")
    full = ResNetStem(layers=(1,), width=0.5)
    mixed = ResNetStem(layers=(1,), width=0.5, dtype="mixed_float16")
    full.build(x.shape)
    mixed.build(x.shape)
    assert mixed.units[0].conv2.dtype_policy.name == "mixed_float16"
    assert mixed.units[0].conv2.kernel.dtype == "float32"
    mixed.set_weights(full.get_weights())
    out = mixed(x)
    assert out.dtype == "float16"
    np.testing.assert_allclose(numpy(out).astype("float32"), numpy(full(x)), atol=5e-2)


@pytest.mark.parametrize("groups, channels", [(32, 32), (32, 128), (4, 12)])
def test_group_norm_equals_keras_group_normalization(rng, groups, channels):
    x = rng.normal(loc=2.0, scale=3.0, size=(2, 5, 7, channels)).astype("float32")
    ours = GroupNorm(groups=groups)
    reference = keras.layers.GroupNormalization(groups=groups, epsilon=1e-6)
    ours.build(x.shape)
    reference.build(x.shape)
    gamma = rng.normal(1.0, 0.3, size=channels).astype("float32")
    beta = rng.normal(0.0, 0.3, size=channels).astype("float32")
    ours.set_weights([gamma, beta])
    reference.set_weights([gamma, beta])
    np.testing.assert_allclose(numpy(ours(x)), numpy(reference(x)), atol=1e-5)


def test_group_norm_groups_are_contiguous_channels(rng):
    # Channels 0-1 and 2-3 form the groups: scaling group 2 leaves group 1's output alone.
    x = rng.normal(size=(1, 3, 3, 4)).astype("float32")
    norm = GroupNorm(groups=2, epsilon=1e-6)
    y = numpy(norm(x))
    x2 = x.copy()
    x2[..., 2:] *= 10.0
    np.testing.assert_allclose(numpy(norm(x2))[..., :2], y[..., :2], atol=1e-6)
    flat = y[..., :2].reshape(-1)
    assert abs(flat.mean()) < 1e-5 and abs(flat.var() - 1.0) < 1e-4


def test_bottleneck_projects_only_where_channels_or_stride_change():
    cases = [(128, 32, 1, False), (128, 32, 2, True), (64, 32, 1, True)]
    for channels, features, strides, projected in cases:
        unit = BottleneckUnit(features, strides=strides)
        unit.build((None, 9, 7, channels))
        assert (unit.conv_proj is not None) == projected
        assert len(unit.weights) == 9 + 3 * projected
        out = unit(np.zeros((1, 9, 7, channels), "float32"))
        assert tuple(out.shape) == unit.compute_output_shape((1, 9, 7, channels))
    assert float(numpy(BottleneckUnit(8).gn3.gamma_initializer(shape=(4,))).max()) == 0.0


@pytest.mark.parametrize(
    "layers, width, image, expected",
    [
        ((), 0.5, (30, 50), (8, 13, 32)),
        ((1, 1), 0.5, (36, 44), (5, 6, 256)),
        ((1, 2, 1), 1.0, (33, 33), (3, 3, 1024)),
    ],
)
def test_stem_output_shape_rounds_up_at_every_stride(layers, width, image, expected):
    stem = ResNetStem(layers, width)
    out = stem(np.zeros((1, *image, 3), "float32"))
    assert tuple(out.shape) == (1, *expected)
    assert stem.compute_output_shape((None, *image, 3)) == (None, *expected)
    assert stem_channels(layers, width)[1] == expected[-1]


def test_layer_configs_round_trip():
    for layer in (
        StdConv2D(8, 3, strides=2, name="c"),
        GroupNorm(groups=4, epsilon=1e-5, gamma_initializer="zeros"),
        BottleneckUnit(16, strides=2),
        ResNetStem(layers=(1, 1), width=0.5),
        ResNetStem(layers=(), width=2.0),
    ):
        check_config_roundtrip(layer)


def test_stem_keras_file_round_trip_in_safe_mode(tmp_path):
    stem = load_stem(weights_of("tiny_r2"), name="stem")
    model = wrap_layer(stem, (32, 32, 3))
    check_saving_roundtrip(model, case_images("tiny_r2/native"), tmp_path)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ResNetStem(layers=(3, 4), width=0.25), "width=0.25"),
        (lambda: ResNetStem(layers=(3, 0), width=1.0), "layers=0"),
        (lambda: ResNetStem(layers="349", width=1.0), "layers='349'"),
        (lambda: ResNetStem(layers=(1,), width=-1), "width=-1"),
        (lambda: StdConv2D(0, 3), "filters=0"),
        (lambda: StdConv2D(4, 3, strides=1.5), "strides=1.5"),
        (lambda: GroupNorm(groups=0), "groups=0"),
        (lambda: GroupNorm(epsilon=0), "epsilon=0"),
        (lambda: BottleneckUnit(features=True), "features=True"),
        (lambda: GroupNorm(groups=32)(np.zeros((1, 2, 2, 48))), "groups=32"),
    ],
)
def test_bad_arguments_raise_one_line(make, match):
    with pytest.raises(ValueError, match=match) as info:
        make()
    assert "\n" not in str(info.value)


# === Checkpoint keys ===========================================================================


def test_key_names_cover_the_stem_both_ways():
    arrays = weights_of("tiny_r2")
    stem = load_stem(arrays)
    names = set(stem.weights_by_name())
    stem_keys = set(hybrid_keys.split_stem(arrays)[0])
    assert {hybrid_keys.checkpoint_key(n) for n in names} == stem_keys
    assert {hybrid_keys.weight_name(k) for k in stem_keys} == names
    assert hybrid_keys.stem_config(arrays) == ((1, 1), 0.5)
    assert hybrid_keys.stem_config(weights_of("tiny_r0")) == ((), 0.5)
    assert hybrid_keys.is_hybrid(arrays) and not hybrid_keys.is_hybrid(["embedding/kernel"])


def test_save_direction_gives_the_released_layout_back():
    arrays = weights_of("tiny_r2")
    stem = load_stem(arrays)
    saved = hybrid_keys.stem_to_checkpoint({n: numpy(v) for n, v in stem.weights_by_name().items()})
    original = hybrid_keys.split_stem(arrays)[0]
    assert set(saved) == set(original)
    for key, value in original.items():
        assert saved[key].dtype == np.float32 and saved[key].shape == value.shape, key
        np.testing.assert_array_equal(saved[key], value)


def test_squeezed_group_norm_parameters_load_too():
    # `vit_jax.checkpoint.load` squeezes `[1, 1, 1, C]` GroupNorm parameters to `[C]`.
    arrays = weights_of("tiny_r0")
    squeezed = {k: v.reshape(-1) if "/gn" in k else v for k, v in arrays.items()}
    a, b = load_stem(arrays).weights_by_name(), load_stem(squeezed).weights_by_name()
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(numpy(a[name]), numpy(b[name]), err_msg=name)


def _shapes(layers=(1, 1), width=0.5):
    stem = ResNetStem(layers, width)
    stem.build((None, None, None, 3))
    return {n: v.shape for n, v in stem.weights_by_name().items()}


def _without(arrays, key):
    return {k: v for k, v in arrays.items() if k != key}


@pytest.mark.parametrize(
    "edit, shapes, match",
    [
        (lambda a: _without(a, "block2/unit1/gn_proj/bias"), {}, "'block2/unit1/gn_proj/bias'"),
        (lambda a: a, dict(layers=(1,)), "'block2/unit1/conv1/kernel' that the model lacks"),
        (lambda a: a, dict(width=1.0), r"'conv_root/kernel' has shape \(7, 7, 3, 32\)"),
        (
            lambda a: dict(a, **{"block1/unit1/gn1/scale": np.ones((1, 32, 1, 1), "float32")}),
            {},
            r"'block1/unit1/gn1/scale' has shape \(1, 32, 1, 1\)",
        ),
        (
            lambda a: dict(a, **{"conv_root/kernel": np.zeros((7, 7, 3, 32), "int32")}),
            {},
            "dtype int32",
        ),
        (lambda a: dict(a, **{"gn_root/mean": np.zeros(32)}), {}, "'gn_root/mean'"),
    ],
)
def test_loading_bad_checkpoints_raises_one_line(edit, shapes, match):
    arrays = edit(weights_of("tiny_r2"))
    with pytest.raises(ValueError, match=match) as info:
        hybrid_keys.stem_from_checkpoint(arrays, _shapes(**shapes))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: hybrid_keys.weight_name("block1/conv1/kernel"), "'block1/conv1/kernel'"),
        (lambda: hybrid_keys.checkpoint_key("block1_unit1/gn1/kernel"), "no weight 'kernel'"),
        (lambda: hybrid_keys.checkpoint_key("head/kernel"), "'head/kernel'"),
        (
            lambda: hybrid_keys.stem_to_checkpoint({"gn_root/gamma": np.ones((1, 32))}),
            r"'gn_root/gamma' has shape \(1, 32\)",
        ),
        (lambda: hybrid_keys.stem_config({"embedding/kernel": 0}), "'conv_root/kernel'"),
        (
            lambda: hybrid_keys.stem_config(
                {"conv_root/kernel": np.zeros((7, 7, 3, 64)), "block2/unit1/conv1/kernel": 0}
            ),
            "block1 has units",
        ),
    ],
)
def test_key_functions_reject_foreign_names_in_one_line(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_hybrid_keys_imports_numpy_only():
    tree = ast.parse(Path(hybrid_keys.__file__).read_text())
    modules = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert modules <= {"__future__", "re", "collections.abc", "numpy"}, modules


def test_graph_forms_compute_the_same_stem():
    # "edgetpu" takes GroupNorm's means as SUM x 1/n; the function is the same.
    stem = load_stem(weights_of("tiny_r2"))
    x = case_images("tiny_r2/native")
    expected = numpy(stem(x))
    for form in ("tflite", "edgetpu"):
        np.testing.assert_allclose(numpy(stem(x, form=form)), expected, atol=1e-4, err_msg=form)
    with pytest.raises(ValueError, match="form='onnx'"):
        GroupNorm(groups=4)(np.zeros((1, 2, 2, 8), "float32"), form="onnx")
