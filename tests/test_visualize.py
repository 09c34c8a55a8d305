import json

import keras
import numpy as np
import pytest
from helpers import write_checkpoint
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics.pairwise import cosine_similarity

import keras_vit
from keras_vit import visualize as vz

NON_SQUARE = dict(image_size=(32, 48), patch_size=8, hidden_size=32, num_heads=2, mlp_dim=64)


def _model(pooling="token", num_layers=2, **overrides):
    config = {**NON_SQUARE, "num_layers": num_layers, "num_classes": 3, "seed": 1, **overrides}
    return keras_vit.ViT(pooling=pooling, **config)


def _images(model, count=3, seed=0):
    shape = (count, *model.image_size, model.num_channels)
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def _numpy_attention(block, tokens):
    """Attention probabilities of one block, in numpy from its weights (float64)."""
    mean = tokens.mean(-1, keepdims=True)
    variance = ((tokens - mean) ** 2).mean(-1, keepdims=True)
    normed = (tokens - mean) / np.sqrt(variance + block.layer_norm_epsilon)
    normed = normed * block.norm1.gamma.numpy() + block.norm1.beta.numpy()
    attention = block.attention
    heads = attention.num_heads
    batch, length, width = tokens.shape

    def project(dense):
        out = normed @ dense.kernel.numpy() + dense.bias.numpy()
        return out.reshape(batch, length, heads, width // heads).transpose(0, 2, 1, 3)

    query, key = project(attention.query), project(attention.key)
    scores = query @ key.transpose(0, 1, 3, 2) / np.sqrt(width // heads)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    return probs / probs.sum(-1, keepdims=True)


# === attention_maps ===


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_attention_maps_match_numpy_on_model_activations(pooling):
    model = _model(pooling, num_layers=3)
    images = _images(model)
    maps = vz.attention_maps(model, images)
    tokens = 4 * 6 + (pooling == "token")
    assert [m.shape for m in maps] == [(3, 2, tokens, tokens)] * 3
    # Each block's input, from the functional model's own forward pass.
    names = ["embedding_dropout", "encoderblock_0", "encoderblock_1"]
    probe = keras.Model(model.input, [model.get_layer(n).output for n in names])
    inputs = [np.asarray(x, "float64") for x in probe.predict(images, verbose=0)]
    for i, x in enumerate(inputs):
        expected = _numpy_attention(model.get_layer(f"encoderblock_{i}"), x)
        np.testing.assert_allclose(maps[i], expected, atol=1e-5)
        np.testing.assert_allclose(maps[i].sum(-1), 1.0, atol=1e-5)


def test_attention_maps_graph_and_eager_agree():
    model = _model()
    images = _images(model, count=5)
    eager = vz.attention_maps(model, images)  # one batch: eager
    graph = vz.attention_maps(model, images, batch_size=2)  # three batches: tf.function
    for a, b in zip(eager, graph, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_attention_maps_errors():
    model = _model()
    with pytest.raises(
        ValueError, match=r"shape \(batch, 32, 48, 3\).*Received: shape=\(2, 32, 32, 3\)"
    ):
        vz.attention_maps(model, np.zeros((2, 32, 32, 3), "float32"))
    with pytest.raises(ValueError, match="uint8 images; scale them"):
        vz.attention_maps(model, np.zeros((1, 32, 48, 3), "uint8"))
    with pytest.raises(ValueError, match="at least one image"):
        vz.attention_maps(model, np.zeros((0, 32, 48, 3), "float32"))
    with pytest.raises(ValueError, match=r"positive integer batch_size\. Received: 0"):
        vz.attention_maps(model, _images(model), batch_size=0)
    with pytest.raises(TypeError, match=r"VisionTransformer\. Received: model of type Sequential"):
        vz.attention_maps(keras.Sequential([keras.layers.Dense(2)]), _images(model))


# === rollout ===


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_of_identity_attention_is_identity(fusion):
    identity = np.broadcast_to(np.eye(7), (2, 3, 7, 7))
    rollout = vz.rollout_from_attention([identity] * 4, fusion)
    np.testing.assert_allclose(rollout, np.broadcast_to(np.eye(7), (2, 7, 7)), atol=1e-12)


def test_rollout_of_uniform_attention_has_closed_form():
    # A' = (U + I) / 2 with U = 1/T everywhere; U @ U = U, so A'^L = 2^-L I + (1 - 2^-L) U.
    tokens, layers = 5, 3
    uniform = np.full((1, 2, tokens, tokens), 1.0 / tokens)
    rollout = vz.rollout_from_attention([uniform] * layers)
    expected = 0.5**layers * np.eye(tokens) + (1 - 0.5**layers) / tokens
    np.testing.assert_allclose(rollout[0], expected, atol=1e-12)


def test_rollout_head_fusions():
    # Heads: identity and uniform over 3 tokens.
    heads = np.stack([np.eye(3), np.full((3, 3), 1 / 3)])[None]
    # max -> diag 1, off 1/3; (A + I) / 2 -> diag 1, off 1/6; rows sum 4/3.
    np.testing.assert_allclose(
        vz.rollout_from_attention([heads], "max")[0], np.where(np.eye(3), 0.75, 0.125)
    )
    # min -> diag 1/3, off 0; renormalised, the identity.
    np.testing.assert_allclose(vz.rollout_from_attention([heads], "min")[0], np.eye(3))
    # mean -> diag 2/3, off 1/6; (A + I) / 2 -> diag 5/6, off 1/12.
    np.testing.assert_allclose(
        vz.rollout_from_attention([heads], "mean")[0], np.where(np.eye(3), 5 / 6, 1 / 12)
    )
    with pytest.raises(ValueError, match="head_fusion to be one of"):
        vz.rollout_from_attention([heads], "median")
    with pytest.raises(ValueError, match=r"Received: shape=\(3, 3\)"):
        vz.rollout_from_attention([np.eye(3)])


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_attention_rollout_map_of_model(pooling):
    model = _model(pooling)
    images = _images(model, count=2)
    rollout = vz.attention_rollout(model, images)
    assert rollout.grid.shape == (2, 4, 6) and rollout.upsampled.shape == (2, 32, 48)
    full = vz.rollout_from_attention(vz.attention_maps(model, images))
    rows = full[:, 0, 1:] if pooling == "token" else full.mean(axis=1)
    np.testing.assert_allclose(rollout.grid.reshape(2, -1), rows, atol=1e-6)
    assert rollout.upsampled.min() >= rollout.grid.min() - 1e-6
    assert rollout.upsampled.max() <= rollout.grid.max() + 1e-6
    with pytest.raises(ValueError, match="head_fusion"):
        vz.attention_rollout(model, images, head_fusion="sum")


# === mean attention distance ===


def test_patch_distances_non_square():
    distances = vz.patch_distances((2, 3), patch_size=4)
    assert distances.shape == (6, 6)
    assert (
        distances[0, 1] == 4
        and distances[0, 3] == 4
        and distances[0, 5] == pytest.approx(4 * np.sqrt(5))
    )


@pytest.mark.parametrize("has_class_token", [True, False])
@pytest.mark.parametrize("renormalize", [True, False])
def test_attention_to_self_only_has_zero_distance(has_class_token, renormalize):
    tokens = 12 + has_class_token
    attention = np.broadcast_to(np.eye(tokens), (3, 2, 4, tokens, tokens))
    distance = vz.attention_distance(attention, (3, 4), 16, has_class_token, renormalize)
    np.testing.assert_array_equal(distance, np.zeros((3, 4)))


def test_uniform_attention_distance_on_2x2_grid():
    # From any patch: distances 0, P, P, P * sqrt(2).
    attention = np.full((1, 1, 4, 4), 0.25)
    distance = vz.attention_distance(attention, (2, 2), 10, has_class_token=False)
    np.testing.assert_allclose(distance, [(2 + np.sqrt(2)) * 10 / 4])


def test_class_token_is_dropped_and_renormalised():
    # Every patch query gives half its attention to the class token and half to its
    # horizontal neighbour, one patch (8 pixels) away.
    grid, patches = (2, 3), 6
    attention = np.zeros((1, 1, patches + 1, patches + 1))
    attention[..., 0, 0] = 1.0
    for query in range(patches):
        row, col = divmod(query, 3)
        neighbour = row * 3 + (col + 1 if col < 2 else col - 1)
        attention[..., query + 1, 0] = 0.5
        attention[..., query + 1, neighbour + 1] = 0.5
    renormalised = vz.attention_distance(attention, grid, 8, has_class_token=True)
    plain = vz.attention_distance(attention, grid, 8, has_class_token=True, renormalize=False)
    np.testing.assert_allclose(renormalised, [8.0])
    np.testing.assert_allclose(plain, [4.0])
    with pytest.raises(
        ValueError, match=r"heads, 6, 6\) for grid \(2, 3\)\. Received: shape=\(1, 1, 7, 7\)"
    ):
        vz.attention_distance(attention, grid, 8, has_class_token=False)


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_mean_attention_distance_of_model(pooling):
    model = _model(pooling, num_layers=3)
    images = _images(model, count=5)
    distance = vz.mean_attention_distance(model, images, batch_size=2)
    assert distance.shape == (3, 2)
    maps = np.stack(vz.attention_maps(model, images))
    expected = vz.attention_distance(maps, (4, 6), 8, has_class_token=pooling == "token")
    np.testing.assert_allclose(distance, expected, rtol=1e-6)
    assert np.all(distance > 0) and np.all(distance < np.hypot(32, 48))


# === position embedding similarity ===


def _sincos_2d(grid_h, grid_w, width):
    """A 2-D sinusoidal position embedding: half the channels encode the row, half the column."""
    quarter = width // 4
    omega = 1.0 / 10000 ** (np.arange(quarter) / quarter)
    rows, cols = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")

    def encode(positions):
        angles = positions.reshape(-1, 1) * omega
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([encode(rows), encode(cols)], axis=1)


@pytest.mark.parametrize("pooling", ["token", "gap"])
def test_sinusoid_position_embedding_makes_grid_neighbours_most_similar(pooling):
    model = _model(pooling)
    encoder = model.get_layer("patch_encoder")
    table = _sincos_2d(4, 6, 32)
    if pooling == "token":
        table = np.concatenate([np.full((1, 32), 5.0), table])  # the class token is ignored
    encoder.position_embedding.assign(table[None].astype("float32"))
    similarity = vz.position_embedding_similarity(model)
    assert similarity.shape == (4, 6, 4, 6)
    flat = similarity.reshape(24, 24)
    np.testing.assert_allclose(np.diag(flat), 1.0, atol=1e-6)
    np.testing.assert_allclose(flat, flat.T, atol=1e-12)
    for patch in range(24):
        others = np.where(np.arange(24) == patch, -np.inf, flat[patch])
        best = np.unravel_index(np.argmax(others), (4, 6))
        assert abs(best[0] - patch // 6) + abs(best[1] - patch % 6) == 1


def test_cosine_similarity_grid_matches_sklearn(rng):
    embeddings = rng.normal(size=(12, 16))
    np.testing.assert_allclose(
        vz.cosine_similarity_grid(embeddings, (3, 4)).reshape(12, 12),
        cosine_similarity(embeddings),
        atol=1e-12,
    )
    with pytest.raises(ValueError, match=r"\(12, D\) embeddings for grid 3x4"):
        vz.cosine_similarity_grid(embeddings[:10], (3, 4))


# === patch embedding components ===


def test_patch_embedding_components_match_sklearn_pca():
    model = _model()
    components = vz.patch_embedding_components(model, n=5)
    assert components.images.shape == (5, 8, 8, 3)
    filters = model.get_layer("patch_encoder").projection.kernel.numpy().T.astype("float64")
    reference = PCA(n_components=5, svd_solver="full").fit(filters)
    for ours, theirs in zip(components.images.reshape(5, -1), reference.components_, strict=True):
        assert abs(np.dot(ours, theirs)) == pytest.approx(1.0, abs=1e-6)  # equal up to sign
    np.testing.assert_allclose(
        components.explained_variance_ratio, reference.explained_variance_ratio_, rtol=1e-6
    )


def test_patch_embedding_component_is_laid_out_like_a_patch(rng):
    # Filters = one spatial pattern times random amplitudes: PC 1 is that pattern, in the
    # pixel layout the Patches layer uses.
    model = _model(hidden_size=16)
    pattern = np.zeros((8, 8, 3))
    pattern[1, 6, 0] = 1.0  # row 1, column 6, red
    pattern[5, 2, 2] = -1.0  # row 5, column 2, blue
    amplitudes = rng.normal(size=16)
    kernel = pattern.reshape(-1, 1) * amplitudes
    model.get_layer("patch_encoder").projection.kernel.assign(kernel.astype("float32"))
    components = vz.patch_embedding_components(model, n=1)
    first = components.images[0] * np.sign(components.images[0][1, 6, 0])
    np.testing.assert_allclose(first, pattern / np.sqrt(2), atol=1e-6)
    assert components.explained_variance_ratio[0] == pytest.approx(1.0)
    # The Patches layer puts that pixel at the same index of the flattened patch.
    image = np.zeros((1, 32, 48, 3), "float32")
    image[0, 8 + 1, 6, 0] = 1.0  # patch (1, 0), pixel (1, 6), red
    flat = keras.ops.convert_to_numpy(model.get_layer("patches")(image))[0, 6]
    assert np.flatnonzero(flat).tolist() == [np.ravel_multi_index((1, 6, 0), (8, 8, 3))]


def test_patch_embedding_components_n_is_checked():
    model = _model()
    with pytest.raises(ValueError, match=r"n between 1 and 32 .*Received: n=33"):
        vz.patch_embedding_components(model, n=33)
    with pytest.raises(ValueError, match="Received: n=0"):
        vz.patch_embedding_components(model, n=0)


# === plots ===


def _is_png(path):
    with Image.open(path) as image:
        return image.format == "PNG" and image.size[0] > 50


def test_plot_helpers_write_pngs_and_refuse_to_overwrite(tmp_path):
    model = _model()
    images = _images(model, count=2)
    maps = vz.attention_maps(model, images)
    raw = ((images[0] + 1) * 127.5).astype("uint8")
    paths = [
        vz.plot_attention_rollout(
            raw, vz.attention_rollout(model, images).upsampled[0], tmp_path / "r.png"
        ),
        vz.plot_attention_heads(images[0], maps[-1][0], (4, 6), tmp_path / "h.png"),
        vz.plot_position_embedding_similarity(
            vz.position_embedding_similarity(model), tmp_path / "p.png"
        ),
        vz.plot_mean_attention_distance(
            vz.mean_attention_distance(model, images),
            tmp_path / "d.png",
            image_size=(32, 48),
            uniform_distance=20.0,
        ),
        vz.plot_patch_embedding_components(
            vz.patch_embedding_components(model, n=10), tmp_path / "c.png"
        ),
    ]
    assert all(_is_png(p) for p in paths)
    with pytest.raises(FileExistsError, match=r"r\.png already exists; pass --force"):
        vz.plot_attention_rollout(raw, np.zeros((32, 48)), tmp_path / "r.png")
    vz.plot_attention_rollout(raw, np.zeros((32, 48)), tmp_path / "r.png", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "c.png",
        "d.png",
        "h.png",
        "p.png",
        "r.png",
    ]


def test_plots_for_grey_gap_model(tmp_path):
    model = _model("gap", num_channels=1)
    images = _images(model, count=1)
    maps = vz.attention_maps(model, images)
    vz.plot_attention_heads(
        images[0], maps[0][0], (4, 6), tmp_path / "h.png", has_class_token=False
    )
    vz.plot_attention_rollout(
        images[0], vz.attention_rollout(model, images).upsampled[0], tmp_path / "r.png"
    )
    vz.plot_patch_embedding_components(vz.patch_embedding_components(model, 4), tmp_path / "c.png")
    assert all(_is_png(tmp_path / n) for n in ("h.png", "r.png", "c.png"))


# === images and the command line ===


def test_load_image_modes(tmp_path, rng):
    pixels = rng.integers(0, 256, (20, 30, 3), dtype="uint8")
    Image.fromarray(pixels).save(tmp_path / "rgb.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "grey.png")
    rgba = np.concatenate([pixels, np.full((20, 30, 1), 255, "uint8")], axis=-1)
    rgba[:, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(pixels[..., 0].astype("uint16") * 257).save(tmp_path / "deep.png")
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=95)

    np.testing.assert_array_equal(vz.load_image(tmp_path / "rgb.png", (20, 30)), pixels)
    grey = vz.load_image(tmp_path / "grey.png", (20, 30))
    np.testing.assert_array_equal(grey, np.repeat(pixels[..., :1], 3, axis=-1))
    # Alpha is dropped, as training's reader does: the colour under a transparent pixel stays.
    np.testing.assert_array_equal(vz.load_image(tmp_path / "rgba.png", (20, 30)), pixels)
    np.testing.assert_array_equal(vz.load_image(tmp_path / "deep.png", (20, 30)), grey)
    assert vz.load_image(tmp_path / "photo.jpg", (20, 30)).dtype == np.uint8
    assert vz.load_image(tmp_path / "rgb.png", (32, 48)).shape == (32, 48, 3)
    assert vz.load_image(tmp_path / "rgb.png", (8, 16), channels=1).shape == (8, 16, 1)


def test_load_image_errors(tmp_path):
    with pytest.raises(ValueError, match=r"Image file .*missing\.png does not exist"):
        vz.load_image(tmp_path / "missing.png", (32, 32))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"Cannot read image .*notes\.png"):
        vz.load_image(tmp_path / "notes.png", (32, 32))


@pytest.fixture
def checkpoint(tmp_path):
    model = _model()
    write_checkpoint(tmp_path / "ckpt", model, ["cat", "dog", "fish"])
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype="uint8")
    Image.fromarray(pixels).save(tmp_path / "a.jpg")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "b.png")
    return tmp_path


def test_cli_writes_every_plot(checkpoint, capsys):
    out = checkpoint / "out"
    argv = [str(checkpoint / "ckpt"), str(checkpoint / "a.jpg"), str(checkpoint / "b.png")]
    assert vz.main([*argv, "--output", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "attention_heads_a.png",
        "attention_heads_b.png",
        "mean_attention_distance.png",
        "patch_embedding_components.png",
        "position_embedding_similarity.png",
        "rollout_a.png",
        "rollout_b.png",
        "summary.json",
    ]
    assert all(_is_png(p) for p in out.glob("*.png"))
    summary = json.loads((out / "summary.json").read_text())
    assert np.shape(summary["mean_attention_distance_pixels"]) == (2, 2)
    assert [p["label"] for p in summary["predictions"]] == ["cat", "cat"]  # zero head: ties
    assert "Wrote 8 files" in capsys.readouterr().out
    # An existing output is refused without --force and replaced with it.
    assert vz.main([*argv, "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip().endswith("already exists; pass --force to overwrite it")
    assert vz.main([*argv[:2], "--output", str(out), "--force", "--head-fusion", "max"]) == 0
    assert len(list(out.iterdir())) == 6


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("foreign", "was not written by keras_vit.visualize"),
        ("ckpt", "is or holds the run directory"),
        (".", "is or holds the run directory"),
    ],
)
def test_cli_force_never_replaces_a_foreign_folder_or_the_run(checkpoint, capsys, target, message):
    (checkpoint / "foreign").mkdir()
    (checkpoint / "foreign" / "thesis.txt").write_text("years of work")
    before = sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*"))
    argv = [str(checkpoint / "ckpt"), str(checkpoint / "a.jpg")]
    assert vz.main([*argv, "--output", str(checkpoint / target), "--force"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*")) == before
    assert (checkpoint / "foreign" / "thesis.txt").read_text() == "years of work"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "a.jpg"], "Run directory nope does not exist"),
        (["ckpt", "missing.jpg"], "Image file missing.jpg does not exist"),
        (["ckpt", "ckpt/labels.txt"], "Cannot read image ckpt/labels.txt"),
        (["ckpt", "a.jpg", "sub/a.jpg"], "Image file names must differ"),
    ],
)
def test_cli_errors_are_one_line(checkpoint, capsys, monkeypatch, args, message):
    monkeypatch.chdir(checkpoint)
    (checkpoint / "sub").mkdir()
    (checkpoint / "sub" / "a.jpg").write_bytes((checkpoint / "a.jpg").read_bytes())
    assert vz.main([*args, "--output", "out"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (checkpoint / "out").exists()


def test_cli_reports_an_unloadable_model_in_one_line(checkpoint, capsys):
    (checkpoint / "ckpt" / "model.keras").write_bytes(b"not a zip file")
    argv = [str(checkpoint / "ckpt"), str(checkpoint / "a.jpg"), "--output", str(checkpoint / "o")]
    assert vz.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Cannot load ") and "model.keras" in err
    assert err.count("\n") == 1


def test_cli_on_grey_gap_model_with_small_patches(tmp_path):
    model = _model("gap", num_channels=1, patch_size=4, num_classes=2)
    write_checkpoint(tmp_path / "ckpt", model, ["no", "yes"])
    pixels = np.random.default_rng(0).integers(0, 256, (50, 20, 3), dtype="uint8")
    Image.fromarray(pixels).save(tmp_path / "tall.png")
    out = tmp_path / "out"
    assert vz.main([str(tmp_path / "ckpt"), str(tmp_path / "tall.png"), "--output", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["patch_embedding_explained_variance"]) == 16  # 4 * 4 * 1 pixels
    assert np.shape(summary["mean_attention_distance_pixels"]) == (2, 2)
    with Image.open(out / "rollout_tall.png") as image:
        assert image.format == "PNG"
