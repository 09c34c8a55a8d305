"""The hybrid ViT (ResNet stem + Transformer): model, checkpoints, names, training, visualize."""

import json

import keras
import numpy as np
import pytest
from fixtures import synthetic_hybrid as synthetic
from helpers import (
    NANO_FLAGS,
    check_config_roundtrip,
    check_saving_roundtrip,
    write_checkpoint,
    write_image_folder,
)
from PIL import Image

import keras_vit
from keras_vit import checkpoints, train, training
from keras_vit import visualize as vz
from keras_vit.checkpoints import CheckpointError

# A root-and-two-stage stem (stride 8) under a two-block Transformer on 1x1 patches.
TINY = dict(
    image_size=32,
    patch_size=1,
    hidden_size=32,
    num_layers=2,
    num_heads=2,
    mlp_dim=64,
    num_classes=10,
    resnet_layers=(1, 1),
    resnet_width=0.5,
)


def numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def randomized(model, seed=0):
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0.0, 0.2, w.shape).astype("float32") for w in model.weights])
    return model


def images(n=2, size=32, seed=1):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype("float32")


def hybrid_file(tmp_path, name="tiny_r2") -> tuple:
    weights = synthetic.original_layout_weights(synthetic.CONFIGS[name], synthetic.SEEDS[name])
    path = tmp_path / f"{name}.npz"
    np.savez(path, **weights)
    return path, weights


# === Model ====================================================================================


def test_hybrid_has_the_stem_first_and_the_plain_layers_after():
    model = keras_vit.ViT(**TINY)
    assert model.stem is model.get_layer("resnet")
    assert model.grid_size == (4, 4) and model.embedding_channels == 256
    assert model.get_layer("patch_encoder").projection.kernel.shape == (256, 32)
    names = [layer.name for layer in model.layers]
    assert names.index("resnet") < names.index("patches") < names.index("patch_encoder")
    plain = keras_vit.ViT(**dict(TINY, resnet_layers=None, resnet_width=1.0, patch_size=8))
    assert plain.stem is None and "resnet" not in [layer.name for layer in plain.layers]
    assert plain.get_config()["resnet_layers"] is None


def test_root_only_stem_and_non_square_images():
    model = keras_vit.ViT(**dict(TINY, resnet_layers=(), patch_size=2, image_size=(32, 48)))
    assert model.grid_size == (4, 6) and model.embedding_channels == 32
    assert model(images(1, 32)[:, :, :1].repeat(48, axis=2)).shape == (1, 10)


def test_config_round_trip_and_seeded_stem():
    model = keras_vit.ViT(**TINY, seed=3)
    check_config_roundtrip(model)
    config = model.get_config()
    assert config["resnet_layers"] == [1, 1] and config["resnet_width"] == 0.5
    json.dumps(config)
    again = keras_vit.ViT(**TINY, seed=3)
    for a, b in zip(model.stem.weights, again.stem.weights, strict=True):
        np.testing.assert_array_equal(numpy(a), numpy(b), err_msg=a.path)


def test_keras_file_round_trip_in_safe_mode(tmp_path):
    model = randomized(keras_vit.ViT(**TINY, include_preprocessing=True))
    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    check_saving_roundtrip(model, pixels, tmp_path)


def test_features_pooling_and_the_one_forward_pass():
    x = images()
    model = randomized(keras_vit.ViT(**TINY))
    features = randomized(keras_vit.ViT(**dict(TINY, include_top=False)))
    assert features(x).shape == (2, 32)
    gap = randomized(keras_vit.ViT(**dict(TINY, pooling="gap")))
    assert gap(x).shape == (2, 10)
    # call (class token only in the last block), the functional graph (training=True, no
    # dropout here) and forward agree.
    full = numpy(model(x, training=True))
    np.testing.assert_allclose(numpy(model(x)), full, atol=1e-5)
    np.testing.assert_allclose(numpy(model.forward(x)), full, atol=1e-5)


def test_variant_builders_are_hybrids():
    model = keras_vit.ViT_R_Ti16(num_classes=10, image_size=64)
    assert model.resnet_layers == () and model.patch_size == 8 and model.grid_size == (2, 2)
    assert checkpoints.variant_of(model) == "R+Ti/16"
    assert (
        checkpoints.variant_of(keras_vit.ViT(**dict(TINY, resnet_layers=None, resnet_width=1.0)))
        is None
    )
    assert model.name == "vit_r_ti16"


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(resnet_layers="349"), "resnet_layers='349'"),
        (dict(resnet_layers=(1, 0)), "resnet_layers=0"),
        (dict(resnet_width=0.25), "resnet_width=0.25"),
        (dict(resnet_width="wide"), "resnet_width='wide'"),
        (dict(patch_size=3), r"feature map is 4x4.*patch_size=3"),
        (dict(seed="x"), "seed='x'"),
    ],
)
def test_bad_hybrid_arguments_raise_one_line(overrides, match):
    with pytest.raises(ValueError, match=match) as info:
        keras_vit.ViT(**dict(TINY, **overrides))
    assert "\n" not in str(info.value)


# === Checkpoints ==============================================================================


def test_save_then_load_is_exact_and_keeps_the_released_layout(tmp_path):
    model = randomized(keras_vit.ViT(**TINY))
    path = checkpoints.save_npz(model, tmp_path / "hybrid.npz")
    arrays = checkpoints.read_npz(path)
    assert arrays["gn_root/scale"].shape == (1, 1, 1, 32)
    assert arrays["embedding/kernel"].shape == (1, 1, 256, 32)
    assert "block2/unit1/conv_proj/kernel" in arrays
    clone = keras_vit.ViT(**TINY)
    summary = checkpoints.load_npz(clone, path)
    assert "conv_root/kernel" in summary.loaded and summary.head_loaded
    for a, b in zip(model.weights, clone.weights, strict=True):
        np.testing.assert_array_equal(numpy(a), numpy(b), err_msg=a.path)
    x = images()
    np.testing.assert_array_equal(numpy(model(x)), numpy(clone(x)))


def test_read_architecture_and_from_npz(tmp_path):
    path, _ = hybrid_file(tmp_path, "tiny_r0")
    arch = checkpoints.read_architecture(path)
    assert arch["resnet_layers"] == () and arch["resnet_width"] == 0.5
    assert arch["image_size"] == (64, 64) and arch["num_channels"] == 3
    model = keras_vit.from_npz(path, image_size=96)
    assert model.grid_size == (6, 6) and model.pooling == "gap"
    path2, _ = hybrid_file(tmp_path, "tiny_r2")
    assert checkpoints.read_architecture(path2)["image_size"] == (32, 32)
    # A non-square grid recorded by save_npz: the image size is grid x patch x stem stride.
    wide = keras_vit.ViT(**dict(TINY, image_size=(16, 64)))
    path3 = checkpoints.save_npz(wide, tmp_path / "wide.npz")
    assert keras_vit.from_npz(path3).image_size == (16, 64)


def _edited(tmp_path, change):
    weights = synthetic.original_layout_weights(synthetic.TINY_R2, synthetic.SEEDS["tiny_r2"])
    path = tmp_path / "edited.npz"
    np.savez(path, **change(dict(weights)))
    return path


def _drop(key):
    return lambda w: {k: v for k, v in w.items() if k != key}


@pytest.mark.parametrize(
    "model_overrides, change, match",
    [
        (
            dict(resnet_layers=None, resnet_width=1.0, patch_size=8),
            None,
            "hybrid checkpoint.*resnet_layers=None",
        ),
        (dict(resnet_layers=(1,)), None, r"resnet_layers=\(1, 1\).*resnet_layers=\(1,\)"),
        (dict(resnet_width=1.0), None, "resnet_width=0.5.*resnet_width=1.0"),
        ({}, _drop("block2/unit1/gn_proj/bias"), "missing ResNet stem key"),
        ({}, lambda w: {**w, "block1/unit1/gn1/scale": np.ones((1, 32, 1, 1))}, r"\(1, 32, 1, 1\)"),
        ({}, lambda w: {**w, "embedding/kernel": np.ones((1, 1, 128, 32))}, "128 input channels"),
        ({}, lambda w: {**w, "block3/unit2/conv1/kernel": np.ones(1)}, "block3 has units"),
    ],
)
def test_bad_hybrid_files_raise_one_line_and_load_nothing(tmp_path, model_overrides, change, match):
    path = _edited(tmp_path, change or (lambda w: w))
    model = randomized(keras_vit.ViT(**dict(TINY, **model_overrides)))
    before = [numpy(w) for w in model.weights]
    with pytest.raises(CheckpointError, match=match) as info:
        checkpoints.load_npz(model, path)
    assert "\n" not in str(info.value) and "edited.npz" in str(info.value)
    for w, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(numpy(w), old)


def test_plain_file_into_a_hybrid_is_refused(tmp_path):
    plain = keras_vit.ViT(**dict(TINY, resnet_layers=None, resnet_width=1.0, patch_size=8))
    path = checkpoints.save_npz(plain, tmp_path / "plain.npz")
    with pytest.raises(CheckpointError, match=r"plain ViT checkpoint \(no ResNet stem\)"):
        checkpoints.load_npz(keras_vit.ViT(**TINY), path)


def test_published_hybrid_names(tmp_path):
    url = checkpoints.weights_url("imagenet21k", "R50+B/16")
    assert url == "https://storage.googleapis.com/vit_models/imagenet21k/R50+ViT-B_16.npz"
    assert checkpoints.weights_url("augreg+imagenet2012", "R+Ti/16").endswith(
        "augreg/R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_384.npz"
    )
    assert checkpoints.weights_url("augreg", "R26+S/32").endswith(
        "augreg/R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0.npz"
    )
    assert checkpoints.weights_url("augreg", "R50+L/32").endswith(
        "augreg/R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1.npz"
    )
    # A published name resolves from the variant; the file comes from a local origin.
    assert checkpoints.variant_of(keras_vit.ViT_R_Ti16()) == "R+Ti/16"
    _, weights = hybrid_file(tmp_path, "tiny_r0")
    origin = tmp_path / "origin"
    file = origin / checkpoints.PRETRAINED["augreg"]["R+Ti/16"]
    file.parent.mkdir(parents=True)
    np.savez(file, **weights)
    local = checkpoints.get_weights_file(
        "augreg", "R+Ti/16", cache_dir=tmp_path / "cache", base_url=origin.as_uri()
    )
    assert local.name == file.name and local.is_relative_to(tmp_path / "cache")
    model = keras_vit.ViT(**synthetic.TINY_R0)
    assert checkpoints.load_npz(model, local).head_loaded
    with pytest.raises(ValueError, match="No 'sam' weights for ViT R50\\+B/16"):
        checkpoints.weights_url("sam", "R50+B/16")


# === Training =================================================================================


@pytest.mark.parametrize(
    "text, expected",
    [("3,4,9", (3, 4, 9)), ("(2, 2)", (2, 2)), ("()", ()), ("1,", (1,)), ("None", "none")],
)
def test_resnet_layers_flag_parses(text, expected):
    assert train.parse_resnet_layers(text) == expected


@pytest.mark.parametrize("flag", ["3,x", "3,0", "-1"])
def test_bad_resnet_layers_flag_is_a_usage_error(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as info:
        train.main(["--output", str(tmp_path / "out"), f"--resnet-layers={flag}"])
    assert info.value.code == 2
    assert "argument --resnet-layers: expected units per stage" in capsys.readouterr().err


def test_named_hybrid_and_size_flags_make_the_config():
    config = training.make_config("digits", model="ViT_R26_S32")
    assert config.architecture["resnet_layers"] == (2, 2, 2, 2)
    plain = training.make_config(
        "digits", model="ViT_R26_S32", architecture={"resnet_layers": None}
    )
    assert plain.architecture["resnet_layers"] is None
    small = training.make_config("digits", architecture={"resnet_layers": (), "resnet_width": 0.5})
    assert small.architecture == {**training.SMALL_MODEL, "resnet_layers": (), "resnet_width": 0.5}


def test_train_cli_trains_a_tiny_hybrid(tmp_path, capsys):
    folder = tmp_path / "images"
    write_image_folder(folder, classes=("a", "b"), per_class=10)
    out = tmp_path / "run"
    args = ["--dataset", str(folder), "--output", str(out), "--epochs", "1", "--quiet"]
    flags = [*NANO_FLAGS, "--patch-size=2", "--resnet-layers=()", "--resnet-width=0.5"]
    assert train.main([*args, "--batch-size", "4", *flags]) == 0
    assert "test top-1" in capsys.readouterr().out
    model = keras.saving.load_model(out / "model.keras")
    assert model.resnet_layers == () and model.grid_size == (2, 2)
    bad = [*args, "--overwrite", "--batch-size", "4", *flags, "--resnet-width=0.25"]
    assert train.main(bad) == 1
    assert "Expected `resnet_width` such that" in capsys.readouterr().err
    assert train.main([*args, "--overwrite", *NANO_FLAGS, "--resnet-width=2"]) == 1
    assert "give `resnet_layers` too" in capsys.readouterr().err


# === Seeing inside ============================================================================


def test_visualize_reads_the_token_grid_of_the_feature_map(tmp_path):
    model = randomized(keras_vit.ViT(**dict(TINY, image_size=(32, 48))))
    assert model.grid_size == (4, 6) and model.token_size == 8
    x = images(2, 32)[:, :, :1].repeat(48, axis=2)
    attentions = vz.attention_maps(model, x)
    assert attentions[0].shape == (2, 2, 25, 25)
    assert vz.attention_rollout(model, x).grid.shape == (2, 4, 6)
    distance = vz.mean_attention_distance(model, x)
    assert distance.shape == (2, 2) and (distance <= np.hypot(24, 40)).all()
    assert vz.position_embedding_similarity(model).shape == (4, 6, 4, 6)
    with pytest.raises(ValueError, match="is a hybrid"):
        vz.patch_embedding_components(model)
    # The report of a run directory, without the patch-embedding plot.
    write_checkpoint(tmp_path / "run", model, [str(i) for i in range(10)])
    pixels = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype="uint8")
    Image.fromarray(pixels).save(tmp_path / "a.png")
    out = tmp_path / "out"
    assert vz.main([str(tmp_path / "run"), str(tmp_path / "a.png"), "--output", str(out)]) == 0
    assert not (out / "patch_embedding_components.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patch_embedding_explained_variance"] is None
    assert np.shape(summary["mean_attention_distance_pixels"]) == (2, 2)
