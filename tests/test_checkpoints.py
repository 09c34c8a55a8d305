"""Original ViT `.npz` checkpoints: mapping, resize, golden logits from Google's Flax code."""

import hashlib
import http.server
import json
import logging
import threading
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from fixtures import synthetic_checkpoints as synthetic

import keras_vit
from keras_vit import checkpoints
from keras_vit.checkpoints import CheckpointError, load_npz, published, resample_posemb, save_npz

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
GOLDENS = np.load(FIXTURES / "goldens.npz", allow_pickle=False)
META = json.loads(str(GOLDENS["meta"]))
LOGGER = "keras_vit.checkpoints"
BLOCK0 = "Transformer/encoderblock_0"
MHA0 = BLOCK0 + "/MultiHeadDotProductAttention_1"


def fixture_npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz", allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def write_npz(path: Path, arrays: dict) -> Path:
    np.savez(path, **arrays)
    return path


def build(name: str, **overrides) -> keras_vit.VisionTransformer:
    return keras_vit.ViT(**dict(synthetic.CONFIGS[name], **overrides))


def logits(model, images) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(images, training=False))


def snapshot(model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(w).copy() for w in model.weights]


def assert_unchanged(model, before) -> None:
    for weight, old in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), old)


def randomize(model, seed=0) -> None:
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.2, size=weight.shape).astype("float32"))


# === Reshape rules ===========================================================================


def test_conv_kernel_rule_equals_the_patch_convolution(rng):
    kernel = rng.normal(size=(4, 4, 3, 8)).astype("float32")
    images = rng.normal(size=(2, 8, 12, 3)).astype("float32")
    conv = keras.ops.conv(images, kernel, strides=4, padding="valid")  # (2, 2, 3, 8)
    patches = keras_vit.layers.Patches(4)(images)
    dense = keras.ops.matmul(patches, checkpoints.conv_kernel_to_dense(kernel))
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(dense),
        keras.ops.convert_to_numpy(keras.ops.reshape(conv, (2, 6, 8))),
        atol=1e-5,
    )
    back = checkpoints.dense_to_conv_kernel(checkpoints.conv_kernel_to_dense(kernel), 4, 3)
    np.testing.assert_array_equal(back, kernel)


def test_attention_rules_equal_the_flax_einsums(rng):
    x = rng.normal(size=(2, 5, 12))
    kernel, bias = rng.normal(size=(12, 3, 4)), rng.normal(size=(3, 4))
    flax_query = np.einsum("btd,dhk->bthk", x, kernel) + bias  # flax DenseGeneral
    ours = x @ checkpoints.heads_kernel_to_dense(kernel) + checkpoints.heads_bias_to_dense(bias)
    np.testing.assert_allclose(ours.reshape(2, 5, 3, 4), flax_query, atol=1e-12)

    heads = rng.normal(size=(2, 5, 3, 4))
    out_kernel = rng.normal(size=(3, 4, 12))
    flax_out = np.einsum("bthk,hkd->btd", heads, out_kernel)
    ours_out = heads.reshape(2, 5, 12) @ checkpoints.out_kernel_to_dense(out_kernel)
    np.testing.assert_allclose(ours_out, flax_out, atol=1e-12)

    dense = checkpoints.heads_kernel_to_dense(kernel)
    np.testing.assert_array_equal(checkpoints.dense_to_heads_kernel(dense, 3), kernel)
    np.testing.assert_array_equal(
        checkpoints.dense_to_heads_bias(checkpoints.heads_bias_to_dense(bias), 3), bias
    )
    np.testing.assert_array_equal(
        checkpoints.dense_to_out_kernel(checkpoints.out_kernel_to_dense(out_kernel), 3),
        out_kernel,
    )


def test_mapping_table_covers_every_weight_of_every_configuration(tmp_path):
    for overrides, extra in [
        (dict(pooling="token", representation_size=None), 0),
        (dict(pooling="gap", representation_size=None), -1),
        (dict(pooling="token", representation_size=8), 2),
        (dict(pooling="token", representation_size=None, include_top=False), -2),
    ]:
        model = build("tiny_token", **overrides)
        path = save_npz(model, tmp_path / f"{len(list(tmp_path.iterdir()))}.npz")
        with np.load(path) as npz:
            # embedding (2), cls, posemb, 16 per block, encoder_norm (2), head (2)
            assert len(npz.files) == 2 + 1 + 1 + 16 * 2 + 2 + 2 + extra


# === Position-embedding resampling ===========================================================

RESAMPLE_SOURCES = {"square": ((4, 4), 1), "nonsquare": ((4, 6), 0)}


@pytest.mark.parametrize("source", sorted(RESAMPLE_SOURCES))
@pytest.mark.parametrize("method", ["zoom", "bilinear", "bicubic"])
@pytest.mark.parametrize("target", [(6, 6), (3, 5), (2, 2), (5, 8)])
def test_resample_posemb_matches_reference_implementations(source, method, target):
    # zoom: vit_jax.checkpoint.interpolate_posembed (square) or the same scipy call per axis;
    # bilinear / bicubic: torch F.interpolate(align_corners=False), as timm's npz loader.
    grid, prefix = RESAMPLE_SOURCES[source]
    posemb = GOLDENS[f"resample/{source}/input"]
    expected = GOLDENS[f"resample/{source}/{method}/{target[0]}x{target[1]}"]
    actual = resample_posemb(posemb, target, grid, method=method, num_prefix_tokens=prefix)
    assert actual.shape == expected.shape and actual.dtype == np.float32
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=0)


def test_resample_posemb_properties(rng):
    posemb = rng.normal(size=(1, 1 + 3 * 5, 4)).astype("float32")
    same = resample_posemb(posemb, (3, 5), (3, 5))
    np.testing.assert_array_equal(same, posemb)
    zoomed = resample_posemb(posemb, (7, 9), (3, 5))
    grid, new = posemb[0, 1:].reshape(3, 5, 4), zoomed[0, 1:].reshape(7, 9, 4)
    np.testing.assert_array_equal(zoomed[:, :1], posemb[:, :1])  # class token kept apart
    for (r, c), (nr, nc) in [
        ((0, 0), (0, 0)),
        ((0, 4), (0, 8)),
        ((2, 0), (6, 0)),
        ((2, 4), (6, 8)),
    ]:
        np.testing.assert_allclose(new[nr, nc], grid[r, c], atol=1e-6)  # corners aligned
    flat = np.ones((1, 16, 3), "float32")
    for method in ("zoom", "bilinear", "bicubic"):
        out = resample_posemb(flat, (5, 3), method=method, num_prefix_tokens=0)
        np.testing.assert_allclose(out, 1.0, atol=1e-6)  # weights sum to one
    assert resample_posemb(np.zeros((1, 1 + 196, 8)), 24).shape == (1, 577, 8)  # inferred 14x14


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(posemb=np.zeros((1, 1 + 24, 4)), new_grid=4), "not a perfect square"),
        (dict(posemb=np.zeros((1, 1 + 24, 4)), new_grid=4, old_grid=(5, 5)), "has 25 positions"),
        (dict(posemb=np.zeros((17, 4)), new_grid=4), r"shape=\(17, 4\)"),
        (dict(posemb=np.zeros((1, 17, 4)), new_grid=4, method="nearest"), "'nearest'"),
        (dict(posemb=np.zeros((1, 17, 4)), new_grid=(4, 0)), r"new_grid=\(4, 0\)"),
        (dict(posemb=np.zeros((1, 17, 4)), new_grid=4, num_prefix_tokens=17), "num_prefix"),
    ],
)
def test_resample_posemb_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        resample_posemb(**kwargs)
    assert "\n" not in str(info.value)


# === Golden logits from Google's Flax ViT ====================================================


def check_case(case: str, path: Path) -> float:
    info = META["cases"][case]
    model = build(info["config"], image_size=tuple(info["image_size"]))
    load_npz(model, path, source_grid=tuple(info["source_grid"]))
    images = synthetic.images(info["image_seed"], META["images_per_case"], *info["image_size"])
    diff = np.abs(logits(model, images) - GOLDENS[f"{case}/logits"]).max()
    assert diff < 1e-4, f"{case}: max |logit - golden| = {diff:.3g}"
    return diff


def test_committed_fixtures_are_the_seeded_synthetic_checkpoints():
    for name in ("tiny_token", "tiny_gap"):
        regenerated = synthetic.original_layout_weights(
            synthetic.CONFIGS[name], synthetic.SEEDS[name]
        )
        assert synthetic.weights_digest(regenerated) == META[f"digest/{name}"]
        assert synthetic.weights_digest(fixture_npz(name)) == META[f"digest/{name}"]


@pytest.mark.parametrize("case", sorted(c for c in META["cases"] if c.startswith("tiny")))
def test_tiny_logits_equal_flax_goldens(case):
    check_case(case, FIXTURES / f"{META['cases'][case]['config']}.npz")


@pytest.fixture(scope="module")
def s16_npz(tmp_path_factory):
    weights = synthetic.original_layout_weights(synthetic.S16, synthetic.SEEDS["s16"])
    assert synthetic.weights_digest(weights) == META["digest/s16"], "seeded weights drifted"
    return write_npz(tmp_path_factory.mktemp("s16") / "s16.npz", weights)


@pytest.mark.parametrize("case", sorted(c for c in META["cases"] if c.startswith("s16")))
def test_s16_logits_equal_flax_goldens(case, s16_npz):
    # native 14x14, resized 14x14 -> 24x24 (384 px) and 14x14 -> 14x20 (224x320 px)
    check_case(case, s16_npz)


def test_goldens_detect_a_wrong_resize_rule_or_gelu():
    info = META["cases"]["tiny_token/grid6x6"]
    images = synthetic.images(info["image_seed"], 2, *info["image_size"])
    expected = GOLDENS["tiny_token/grid6x6/logits"]
    model = build("tiny_token", image_size=(48, 48))
    load_npz(model, FIXTURES / "tiny_token.npz", posemb_method="bilinear")
    assert np.abs(logits(model, images) - expected).max() > 1e-3
    model = build("tiny_token", image_size=(48, 48), gelu="erf")
    load_npz(model, FIXTURES / "tiny_token.npz")
    assert np.abs(logits(model, images) - expected).max() > 1e-4


def test_vit_weights_argument_loads_a_file():
    info = META["cases"]["tiny_token/native"]
    images = synthetic.images(info["image_seed"], 2, 32, 32)
    for weights in (FIXTURES / "tiny_token.npz", str(FIXTURES / "tiny_token.npz")):
        model = keras_vit.ViT(**synthetic.TINY_TOKEN, weights=weights)
        np.testing.assert_allclose(
            logits(model, images), GOLDENS["tiny_token/native/logits"], atol=1e-4
        )


def test_vit_weights_argument_rejects_other_types():
    with pytest.raises(ValueError, match="weights=3") as info:
        keras_vit.ViT(**synthetic.TINY_TOKEN, weights=3)
    assert "\n" not in str(info.value)


# === Layouts, head and pre_logits ============================================================


@pytest.mark.parametrize("layout", ["opt/target/", "params/", "linen"])
def test_prefixed_and_linen_layouts_load_the_same(tmp_path, layout, caplog):
    arrays = fixture_npz("tiny_token")
    if layout == "linen":
        renames = {
            "MultiHeadDotProductAttention_1": "MultiHeadDotProductAttention_0",
            "LayerNorm_2": "LayerNorm_1",
            "MlpBlock_3": "MlpBlock_0",
        }
        for old, new in renames.items():
            arrays = {k.replace(f"/{old}/", f"/{new}/"): v for k, v in arrays.items()}
    else:
        arrays = {layout + k: v for k, v in arrays.items()}
        arrays["opt/state/step" if layout == "opt/target/" else "step"] = np.zeros((), "f4")
    path = write_npz(tmp_path / "layout.npz", arrays)
    model = build("tiny_token")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        summary = load_npz(model, path)
    assert summary.head_loaded and len(summary.loaded) == 42
    if layout != "linen":
        assert "ignoring 1 others" in caplog.text
    reference = build("tiny_token")
    load_npz(reference, FIXTURES / "tiny_token.npz")
    for ours, theirs in zip(snapshot(model), snapshot(reference), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_head_with_other_classes_stays_fresh(caplog):
    model = build("tiny_token", num_classes=7)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        summary = load_npz(model, FIXTURES / "tiny_token.npz")
    assert not summary.head_loaded
    assert set(summary.dropped) == {"head/kernel", "head/bias"}
    assert "head not loaded" in caplog.text and "num_classes=7" in caplog.text
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("head").kernel), 0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("pre_logits").kernel),
        fixture_npz("tiny_token")["pre_logits/kernel"],
    )


def test_pre_logits_dropped_without_representation_layer(caplog):
    model = build("tiny_token", representation_size=None)  # 10 classes, as the file
    with caplog.at_level(logging.INFO, logger=LOGGER):
        summary = load_npz(model, FIXTURES / "tiny_token.npz")
    assert "dropped pre_logits" in caplog.text
    # The file's head was trained on pre_logits outputs: it is not loaded either.
    assert not summary.head_loaded and "head not loaded" in caplog.text
    assert set(summary.dropped) == {
        "pre_logits/kernel",
        "pre_logits/bias",
        "head/kernel",
        "head/bias",
    }
    encoder_norm = keras.ops.convert_to_numpy(model.get_layer("encoder_norm").gamma)
    np.testing.assert_array_equal(
        encoder_norm, fixture_npz("tiny_token")["Transformer/encoder_norm/scale"]
    )


def test_head_dropped_without_top(caplog):
    model = build("tiny_token", include_top=False)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        summary = load_npz(model, FIXTURES / "tiny_token.npz")
    assert "dropped the head" in caplog.text and "head/kernel" in summary.dropped


def test_non_square_source_grid(tmp_path):
    model = build("tiny_gap", image_size=(40, 40))
    with pytest.raises(CheckpointError, match=r"pass source_grid=\(rows, columns\)") as info:
        load_npz(model, FIXTURES / "tiny_gap.npz")
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match="source_grid=5x5 has 25 positions"):
        load_npz(model, FIXTURES / "tiny_gap.npz", source_grid=(5, 5))
    summary = load_npz(model, FIXTURES / "tiny_gap.npz", source_grid=(4, 6))
    assert summary.posemb_resized == ((4, 6), (5, 5))


# === save_npz ================================================================================


def test_save_then_load_is_exact(tmp_path, rng):
    for overrides in (dict(), dict(pooling="gap", representation_size=None, num_classes=3)):
        model = build("tiny_token", **overrides)
        randomize(model, seed=5)
        path = save_npz(model, tmp_path / f"{model.pooling}.npz")
        restored = build("tiny_token", **overrides)
        summary = load_npz(restored, path)
        assert summary.head_loaded and not summary.dropped
        for ours, theirs in zip(snapshot(model), snapshot(restored), strict=True):
            np.testing.assert_array_equal(ours, theirs)
        images = rng.uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
        np.testing.assert_array_equal(logits(model, images), logits(restored, images))


@pytest.mark.parametrize("name", ["tiny_token", "tiny_gap"])
def test_save_writes_the_original_layout_bit_for_bit(tmp_path, name):
    model = build(name)
    load_npz(model, FIXTURES / f"{name}.npz")
    path = save_npz(model, tmp_path / "out")
    assert path == tmp_path / "out.npz"
    original = fixture_npz(name)
    with np.load(path, allow_pickle=False) as saved:
        assert sorted(saved.files) == sorted(original)
        for key in original:
            assert saved[key].dtype == np.float32
            np.testing.assert_array_equal(saved[key], original[key], err_msg=key)


def test_save_refuses_to_overwrite_and_leaves_no_temporary_file(tmp_path):
    model = build("tiny_token")
    path = save_npz(model, tmp_path / "model.npz")
    with pytest.raises(FileExistsError, match=r"model.npz already exists"):
        save_npz(model, path)
    save_npz(model, path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


# === Bad input: one clear line, nothing loaded half-way ======================================


def mutated(tmp_path, change) -> Path:
    arrays = fixture_npz("tiny_token")
    change(arrays)
    return write_npz(tmp_path / "bad.npz", arrays)


BAD_FILES = {
    "missing": (
        lambda a: a.pop(f"{MHA0}/key/bias"),
        f"is missing keys {MHA0}/key/bias",
    ),
    "unexpected": (
        lambda a: a.update({"Transformer/extra/scale": np.ones(3, "float32")}),
        "has unexpected keys Transformer/extra/scale",
    ),
    "wrong shape": (
        lambda a: a.update({"pre_logits/bias": np.zeros(15, "float32")}),
        r"key 'pre_logits/bias' has shape \(15\) but the model expects \(16\)",
    ),
    "wrong mlp width": (
        lambda a: a.update({f"{BLOCK0}/MlpBlock_3/Dense_0/kernel": np.zeros((32, 65), "f4")}),
        r"Dense_0/kernel' has shape \(32, 65\) but the model expects \(32, 64\)",
    ),
    "integer array": (
        lambda a: a.update({"cls": np.zeros((1, 1, 32), "int32")}),
        "key 'cls' has dtype int32",
    ),
    "patch size": (
        lambda a: a.update({"embedding/kernel": np.zeros((4, 4, 3, 32), "float32")}),
        "has patch size 4 but the model has patch_size=8",
    ),
    "hidden size": (
        lambda a: a.update({"embedding/kernel": np.zeros((8, 8, 3, 64), "float32")}),
        "has hidden size 64 but the model has hidden_size=32",
    ),
    "depth": (
        lambda a: [a.pop(k) for k in list(a) if k.startswith("Transformer/encoderblock_1/")],
        "has 1 encoder blocks but the model has num_layers=2",
    ),
    "heads": (
        lambda a: a.update({f"{MHA0}/query/kernel": np.zeros((32, 4, 8), "float32")}),
        "has 4 attention heads but the model has num_heads=2",
    ),
    "class token": (
        lambda a: a.pop("cls"),
        "has no class token but the model has pooling='token'",
    ),
    "no-square posemb": (
        lambda a: a.update(
            {"Transformer/posembed_input/pos_embedding": np.zeros((1, 1 + 15, 32), "float32")}
        ),
        "cannot infer the patch grid of 15 positions",
    ),
    "big_vision": (
        lambda a: a.update({"pos_embedding": a.pop("Transformer/posembed_input/pos_embedding")}),
        "looks like a big_vision checkpoint",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_one_line_and_load_nothing(tmp_path, case):
    change, match = BAD_FILES[case]
    path = mutated(tmp_path, change)
    model = build("tiny_token")
    randomize(model, seed=1)
    before = snapshot(model)
    with pytest.raises(CheckpointError, match=match) as info:
        load_npz(model, path)
    assert "\n" not in str(info.value)
    assert_unchanged(model, before)


def test_missing_pre_logits_explains_the_fix(tmp_path):
    path = mutated(tmp_path, lambda a: [a.pop("pre_logits/kernel"), a.pop("pre_logits/bias")])
    with pytest.raises(CheckpointError, match="build with representation_size=None"):
        load_npz(build("tiny_token"), path)


def test_object_arrays_are_refused(tmp_path):
    arrays = fixture_npz("tiny_token")
    arrays["cls"] = np.array([{"pickled": 1}], dtype=object)
    path = tmp_path / "pickle.npz"
    np.savez(path, **arrays)  # numpy pickles object arrays on write
    model = build("tiny_token")
    before = snapshot(model)
    with pytest.raises(CheckpointError, match="key 'cls' holds an object array") as info:
        load_npz(model, path)
    assert "\n" not in str(info.value)
    assert_unchanged(model, before)


def test_missing_path_and_non_npz_files(tmp_path):
    model = build("tiny_token")
    with pytest.raises(FileNotFoundError, match=r"nope.npz does not exist"):
        load_npz(model, tmp_path / "nope.npz")
    text = tmp_path / "notes.npz"
    text.write_text("not a zip")
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    for path in (text, npy, tmp_path):
        with pytest.raises(CheckpointError, match=r"is not an .npz file") as info:
            load_npz(model, path)
        assert "\n" not in str(info.value)
    broken = tmp_path / "broken.npz"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("cls.npy", b"\x93NUMPY garbage")
    with pytest.raises(CheckpointError, match=r"broken.npz"):
        load_npz(model, broken)


# === Published names and downloads ===========================================================


def test_published_names_resolve_per_variant():
    assert (
        checkpoints.weights_url("imagenet21k", "B/16")
        == "https://storage.googleapis.com/vit_models/imagenet21k/ViT-B_16.npz"
    )
    assert checkpoints.weights_url("augreg+imagenet2012", "S/16").endswith(
        "augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0"
        "--imagenet2012-steps_20k-lr_0.03-res_384.npz"
    )
    assert checkpoints.weights_url("sam", "S/16", base_url="http://mirror/x/") == (
        "http://mirror/x/sam/ViT-S_16.npz"
    )
    with pytest.raises(ValueError, match="No 'augreg' weights for ViT H/14; 'augreg' has: Ti/16"):
        checkpoints.weights_url("augreg", "H/14")
    with pytest.raises(ValueError, match=r"Unknown weights 'jft'.*imagenet21k, ") as info:
        checkpoints.weights_url("jft", "B/16")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="Unknown weights 'jft300m'"):
        checkpoints.get_weights_file("jft300m")
    with pytest.raises(ValueError, match="'imagenet21k' exist per variant"):
        checkpoints.get_weights_file("imagenet21k")
    with pytest.raises(FileNotFoundError, match=r"missing.npz does not exist"):
        checkpoints.get_weights_file("missing.npz")


def test_variant_of_a_model():
    assert checkpoints.variant_of(keras_vit.ViT_Ti16(num_classes=3, image_size=64)) == "Ti/16"
    assert checkpoints.variant_of(build("tiny_token")) is None
    with pytest.raises(ValueError, match="'augreg' exist per variant") as info:
        build("tiny_token", weights="augreg")
    assert "\n" not in str(info.value)


class _Server:
    """A loopback HTTP server over a folder, for the download path (no network)."""

    def __init__(self, root: Path):
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):
                server.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.requests = 0
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def origin(tmp_path):
    root = tmp_path / "origin"
    (root / "augreg").mkdir(parents=True)
    server = _Server(root)
    yield root, server
    server.close()


def test_download_caches_and_checks_the_hash(tmp_path, origin):
    root, server = origin
    relative = checkpoints.PRETRAINED["augreg"]["S/16"]
    source = root / relative
    source.write_bytes((FIXTURES / "tiny_token.npz").read_bytes())
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    local = checkpoints.get_weights_file(
        "augreg", "S/16", cache_dir=cache, file_hash=digest, base_url=server.url
    )
    assert local == cache / "keras_vit" / "augreg" / Path(relative).name
    assert local.read_bytes() == source.read_bytes() and server.requests == 1
    again = checkpoints.get_weights_file("augreg", "S/16", cache_dir=cache, base_url=server.url)
    assert again == local and server.requests == 1  # served from the cache

    with pytest.raises(ValueError, match=r"does not match file_hash=0+; the file was deleted"):
        checkpoints.get_weights_file(
            server.url + relative, cache_dir=tmp_path / "other", file_hash="0" * 64
        )
    assert not (tmp_path / "other" / "keras_vit" / "augreg" / Path(relative).name).exists()
    with pytest.raises(OSError, match=r"Could not download .*ViT-B_16.npz") as info:
        checkpoints.get_weights_file("imagenet21k", "B/16", cache_dir=cache, base_url=server.url)
    assert "\n" not in str(info.value)


def test_file_url_downloads_through_the_cache(tmp_path):
    url = (FIXTURES / "tiny_token.npz").resolve().as_uri()
    local = checkpoints.get_weights_file(url, cache_dir=tmp_path)
    assert local.parent == tmp_path / "keras_vit" / "checkpoints"
    model = keras_vit.ViT(**synthetic.TINY_TOKEN)
    checkpoints.load_weights(model, url, cache_dir=tmp_path)
    images = synthetic.images(META["cases"]["tiny_token/native"]["image_seed"], 2, 32, 32)
    np.testing.assert_allclose(
        logits(model, images), GOLDENS["tiny_token/native/logits"], atol=1e-4
    )


def test_named_builder_with_a_published_name(tmp_path, origin, monkeypatch):
    root, server = origin
    ti16 = dict(
        image_size=(224, 224),
        patch_size=16,
        hidden_size=192,
        num_layers=12,
        num_heads=3,
        mlp_dim=768,
        num_classes=1000,
        pooling="token",
        representation_size=None,
    )
    weights = synthetic.original_layout_weights(ti16, seed=7)
    write_npz(root / checkpoints.PRETRAINED["augreg"]["Ti/16"], weights)
    # Everything but the origin and the cache is the real path: ViT_Ti16 -> ViT ->
    # load_weights -> get_weights_file -> keras.utils.get_file -> load_npz.
    real = published.get_weights_file

    def local_origin(weights, variant=None, cache_dir=None, file_hash=None, base_url=None):
        assert cache_dir is None and base_url is None
        return real(weights, variant, tmp_path / "cache", file_hash, server.url)

    monkeypatch.setattr(published, "get_weights_file", local_origin)
    model = keras_vit.ViT_Ti16(weights="augreg")
    assert server.requests == 1
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("head").kernel), weights["head/kernel"]
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("encoderblock_11").attention.out.kernel),
        weights["Transformer/encoderblock_11/MultiHeadDotProductAttention_1/out/kernel"].reshape(
            192, 192
        ),
    )
    with pytest.raises(ValueError, match="No 'imagenet21k' weights for ViT Ti/16"):
        keras_vit.ViT_Ti16(weights="imagenet21k")


# === Damaged files (one line naming the file) ================================================


def corrupt_compressed(tmp_path) -> Path:
    path = tmp_path / "corrupt.npz"
    np.savez_compressed(path, **fixture_npz("tiny_token"))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.infolist()[0]
    start = info.header_offset + 30 + len(info.filename) + len(info.extra)
    for i in range(start + 8, start + 40):  # inside the deflate stream of the first member
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    return path


def zip_without_npy(tmp_path) -> Path:
    path = tmp_path / "notes.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", b"not an array")
    return path


def empty_zip(tmp_path) -> Path:
    path = tmp_path / "empty.npz"
    zipfile.ZipFile(path, "w").close()
    return path


@pytest.mark.parametrize(
    "make,match",
    [
        (corrupt_compressed, r"corrupt.npz is not a readable .npz file"),
        (zip_without_npy, r"notes.npz: member 'readme.txt' is not a NumPy .npy array"),
        (empty_zip, r"empty.npz is an empty .npz file"),
    ],
)
def test_damaged_npz_files_raise_one_line(tmp_path, make, match):
    path = make(tmp_path)
    model = build("tiny_token")
    before = snapshot(model)
    # load_npz, and load_weights as `ViT(weights=...)` and `train --weights` call it.
    for load in (
        load_npz,
        checkpoints.load_weights,
        lambda _, p: keras_vit.ViT(**synthetic.TINY_TOKEN, weights=p),
    ):
        with pytest.raises(CheckpointError, match=match) as info:
            load(model, path)
        assert "\n" not in str(info.value)
    with pytest.raises(CheckpointError, match=match):
        checkpoints.read_architecture(path)
    assert_unchanged(model, before)


# === Position-embedding grids: recorded by save_npz, square for Google's files ===============


def test_saved_non_square_grid_resamples_into_a_square_model(tmp_path):
    wide = build("tiny_token", image_size=(16, 64))  # a 2x8 grid: 16 positions, as 4x4
    randomize(wide, seed=3)
    path = save_npz(wide, tmp_path / "wide.npz")
    assert checkpoints.read_posemb_grid(path) == (2, 8)
    square = build("tiny_token")
    summary = load_npz(square, path)
    assert summary.posemb_resized == ((2, 8), (4, 4))
    posemb = keras.ops.convert_to_numpy(wide.get_layer("patch_encoder").position_embedding)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(square.get_layer("patch_encoder").position_embedding),
        resample_posemb(posemb, (4, 4), (2, 8)),
    )
    back = build("tiny_token", image_size=(16, 64))
    assert load_npz(back, path).posemb_resized is None  # its own grid: loaded as it is
    for ours, theirs in zip(snapshot(wide), snapshot(back), strict=True):
        np.testing.assert_array_equal(ours, theirs)


def test_google_files_are_square_so_a_wide_model_gets_a_resampled_grid():
    # Google's files record no grid: 16 positions are 4x4, resampled for a 2x8 model.
    assert checkpoints.read_posemb_grid(FIXTURES / "tiny_token.npz") is None
    wide = build("tiny_token", image_size=(16, 64))
    summary = load_npz(wide, FIXTURES / "tiny_token.npz")
    assert summary.posemb_resized == ((4, 4), (2, 8))
    posemb = fixture_npz("tiny_token")["Transformer/posembed_input/pos_embedding"]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(wide.get_layer("patch_encoder").position_embedding),
        resample_posemb(posemb, (2, 8), (4, 4)),
    )


def test_saved_files_still_read_as_plain_npz(tmp_path):
    # The grid record is a zip comment: numpy (and so vit_jax and timm) read the arrays alone.
    path = save_npz(build("tiny_gap"), tmp_path / "gap.npz")
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == sorted(fixture_npz("tiny_gap"))


# === read_architecture and from_npz ==========================================================


ARCHITECTURE_KEYS = (
    "patch_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "mlp_dim",
    "num_classes",
    "pooling",
    "representation_size",
)


def test_read_architecture_of_the_fixtures():
    token = checkpoints.read_architecture(FIXTURES / "tiny_token.npz")
    expected = {k: synthetic.TINY_TOKEN[k] for k in ARCHITECTURE_KEYS}
    assert {k: token[k] for k in ARCHITECTURE_KEYS} == expected
    assert token["image_size"] == (32, 32) and token["num_channels"] == 3
    gap = checkpoints.read_architecture(FIXTURES / "tiny_gap.npz")
    assert {k: gap[k] for k in ARCHITECTURE_KEYS} == {
        k: synthetic.TINY_GAP[k] for k in ARCHITECTURE_KEYS
    }
    assert gap["image_size"] is None  # 4x6 positions, not square, no record


def test_read_architecture_of_a_saved_file_and_a_headless_one(tmp_path):
    model = build("tiny_gap", include_top=False)
    path = save_npz(model, tmp_path / "headless.npz")
    arch = checkpoints.read_architecture(path)
    assert arch["image_size"] == (32, 48) and arch["num_classes"] is None
    rebuilt = keras_vit.from_npz(path)
    assert not rebuilt.include_top and rebuilt.image_size == (32, 48)


def test_read_architecture_of_a_file_that_is_no_vit(tmp_path):
    path = write_npz(tmp_path / "other.npz", {"w": np.zeros(3, "float32")})
    with pytest.raises(CheckpointError, match=r"other.npz is not a ViT checkpoint") as info:
        checkpoints.read_architecture(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "case,kwargs",
    [
        ("tiny_token/native", {}),
        ("tiny_token/grid6x6", dict(image_size=48)),
        ("tiny_token/grid3x5", dict(image_size=(24, 40))),
        ("tiny_gap/native", dict(image_size=(32, 48))),
        ("tiny_gap/grid5x5", dict(image_size=40, source_grid=(4, 6))),
    ],
)
def test_from_npz_equals_the_flax_goldens(case, kwargs):
    info = META["cases"][case]
    model = keras_vit.from_npz(FIXTURES / f"{info['config']}.npz", **kwargs)
    assert model.image_size == tuple(info["image_size"])
    images = synthetic.images(info["image_seed"], META["images_per_case"], *info["image_size"])
    np.testing.assert_allclose(logits(model, images), GOLDENS[f"{case}/logits"], atol=1e-4)


def test_from_npz_with_a_new_head():
    model = keras_vit.from_npz(FIXTURES / "tiny_token.npz", num_classes=4, dropout=0.1)
    assert model.num_classes == 4 and model.dropout == 0.1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("head").kernel), 0)
    block = fixture_npz("tiny_token")[f"{BLOCK0}/MlpBlock_3/Dense_0/kernel"]
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("encoderblock_0").mlp_dense1.kernel), block
    )


def test_from_npz_needs_the_grid_of_a_non_square_file():
    with pytest.raises(CheckpointError, match=r"pass image_size=\(height, width\)") as info:
        keras_vit.from_npz(FIXTURES / "tiny_gap.npz")
    assert "\n" not in str(info.value)
