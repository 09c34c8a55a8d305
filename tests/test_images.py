"""The one image reader (`keras_vit.images.read_image`) and its use by training and serving."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from export import runtime
from keras_vit import data
from keras_vit.images import IMAGE_EXTENSIONS, ImageFileError, read_image

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 12, 10


def _pattern(rng) -> np.ndarray:
    return rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _grey16(path: Path) -> np.ndarray:
    """A 16-bit grey PNG; returns the 8-bit values it stands for."""
    eight = np.arange(HEIGHT * WIDTH, dtype=np.uint16).reshape(HEIGHT, WIDTH) * 2
    Image.fromarray((eight * 257).astype(np.uint16)).save(path)
    return np.repeat(eight.astype(np.uint8)[..., None], 3, axis=-1)


def _exif_rotated_jpeg(path: Path) -> np.ndarray:
    """A JPEG stored sideways with EXIF Orientation 6 (display rotated 90 degrees clockwise)."""
    stored = np.zeros((WIDTH, HEIGHT, 3), np.uint8)  # stored as width x height
    stored[:, : HEIGHT // 2] = (250, 0, 0)
    stored[:, HEIGHT // 2 :] = (0, 0, 250)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, quality=100, subsampling=0, exif=exif)
    return np.rot90(stored, k=-1)  # clockwise


def _cmyk_jpeg(path: Path) -> np.ndarray:
    image = Image.new("CMYK", (WIDTH, HEIGHT), (0, 255, 255, 0))  # red
    image.save(path, quality=100)
    return np.broadcast_to(np.array([255, 0, 0], np.uint8), (HEIGHT, WIDTH, 3))


def _palette_with_transparency(path: Path, rng) -> np.ndarray:
    index = rng.integers(0, 4, (HEIGHT, WIDTH), dtype=np.uint8)
    palette = np.array([[10, 20, 30], [200, 0, 0], [0, 200, 0], [0, 0, 200]], np.uint8)
    image = Image.fromarray(index, mode="P")
    image.putpalette(palette.ravel().tolist())
    image.save(path, transparency=0)  # index 0 transparent: its stored colour is kept
    return palette[index]


def _write_all(folder: Path, rng) -> dict[str, tuple[Path, np.ndarray, int]]:
    """Every format case: name -> (path, expected pixels, tolerance)."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = _pattern(rng)
    cases = {}
    cases["grey16"] = (folder / "grey16.png", _grey16(folder / "grey16.png"), 0)
    cases["exif"] = (folder / "exif.jpg", _exif_rotated_jpeg(folder / "exif.jpg"), 12)
    cases["cmyk"] = (folder / "cmyk.jpg", _cmyk_jpeg(folder / "cmyk.jpg"), 3)
    cases["palette"] = (
        folder / "palette.png",
        _palette_with_transparency(folder / "palette.png", rng),
        0,
    )
    Image.fromarray(rgb).save(folder / "lossless.webp", lossless=True)
    cases["webp"] = (folder / "lossless.webp", rgb, 0)
    Image.fromarray(rgb).save(folder / "plain.tiff")
    cases["tiff"] = (folder / "plain.tiff", rgb, 0)
    rgba = np.dstack([rgb, np.full((HEIGHT, WIDTH), 7, np.uint8)])
    Image.fromarray(rgba).save(folder / "alpha.png")
    cases["rgba"] = (folder / "alpha.png", rgb, 0)
    grey = rgb[..., 0]
    Image.fromarray(np.dstack([grey, grey // 2])).convert("LA").save(folder / "la.png")
    cases["la"] = (folder / "la.png", np.dstack([grey] * 3), 0)
    frames = [Image.fromarray(np.full((HEIGHT, WIDTH, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    cases["gif"] = (folder / "anim.gif", np.zeros((HEIGHT, WIDTH, 3), np.uint8), 0)
    Image.fromarray(rgb).save(folder / "plain.bmp")
    cases["bmp"] = (folder / "plain.bmp", rgb, 0)
    return cases


def test_read_image_formats(tmp_path):
    for name, (path, expected, tolerance) in _write_all(tmp_path, np.random.default_rng(0)).items():
        image = read_image(path)
        assert image.dtype == np.uint8 and image.shape == (HEIGHT, WIDTH, 3), name
        error = np.abs(image.astype(int) - expected.astype(int)).max()
        assert error <= tolerance, (name, error)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    Image.fromarray(values).save(tmp_path / "deep.tif")
    expected = np.round(values.astype(float) * 255 / 65535).astype(np.uint8)
    for name in ("deep.png", "deep.tif"):
        image = read_image(tmp_path / name)
        np.testing.assert_array_equal(image, np.dstack([expected] * 3))
    assert read_image(tmp_path / "deep.png")[0, 2, 0] == 128  # half range, not clipped to 255


@pytest.mark.parametrize(
    "name, content, cause",
    [
        ("missing.png", None, "does not exist"),
        ("notes.png", b"just some text", "Cannot read image"),
        ("empty.jpg", b"", "Cannot read image"),
    ],
)
def test_unreadable_files_are_one_line(tmp_path, name, content, cause):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageFileError, match=cause) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_truncated_folder_and_float_images_are_refused(tmp_path):
    Image.fromarray(_pattern(np.random.default_rng(1))).save(tmp_path / "full.png")
    content = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(content[: len(content) // 2])
    Image.fromarray(np.ones((4, 4), np.float32)).save(tmp_path / "float.tif")
    (tmp_path / "dir.png").mkdir()
    for name in ("cut.png", "float.tif", "dir.png"):
        with pytest.raises(ImageFileError, match=name):
            read_image(tmp_path / name)


def test_training_and_serving_read_the_same_pixels(tmp_path):
    cases = _write_all(tmp_path / "data" / "all", np.random.default_rng(2))
    _write_all(tmp_path / "data" / "more", np.random.default_rng(3))
    _, files = data.folder_files(tmp_path / "data")
    trained = {}
    for split in data.SPLITS:
        examples = data.load_examples(str(tmp_path / "data"), split, (HEIGHT, WIDTH))
        for (path, _), (image, _) in zip(
            files[split], examples.dataset.as_numpy_iterator(), strict=True
        ):
            trained[Path(path)] = image
    assert len(trained) == 2 * len(cases)
    for path, image in trained.items():
        np.testing.assert_array_equal(image, read_image(path), err_msg=str(path))
        np.testing.assert_array_equal(image, runtime.load_image(path, (HEIGHT, WIDTH)))


def test_folder_scan_accepts_every_extension(tmp_path):
    rgb = _pattern(np.random.default_rng(4))
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for ext in IMAGE_EXTENSIONS:
            Image.fromarray(rgb).save(tmp_path / cls / f"x{ext.upper()}")
    _, files = data.folder_files(tmp_path)
    found = {Path(p).suffix.lower() for split in files.values() for p, _ in split}
    assert found == set(IMAGE_EXTENSIONS)


def test_images_module_needs_neither_tensorflow_nor_keras(tmp_path):
    Image.fromarray(_pattern(np.random.default_rng(5))).save(tmp_path / "x.png")
    code = (
        "import importlib.util, sys\n"
        f"path = {str(REPO / 'keras_vit' / 'images.py')!r}\n"
        "spec = importlib.util.spec_from_file_location('images', path)\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"assert module.read_image({str(tmp_path / 'x.png')!r}).shape == (12, 10, 3)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_damaged_files_give_an_array_or_one_line_error(tmp_path):
    """Truncations and byte flips of valid files: a correct array or ImageFileError, never
    another exception."""
    rng = np.random.default_rng(6)
    originals = []
    for name in ("a.png", "a.jpg", "a.webp", "a.tiff", "a.gif", "a.bmp"):
        Image.fromarray(_pattern(rng)).save(tmp_path / name)
        originals.append((name, (tmp_path / name).read_bytes()))
    outcomes = {"array": 0, "error": 0}
    for case in range(240):
        name, content = originals[case % len(originals)]
        damaged = bytearray(content)
        if case % 2:
            damaged = damaged[: int(rng.integers(0, len(damaged)))]
        else:
            for index in rng.integers(0, len(damaged), size=4):
                damaged[index] ^= int(rng.integers(1, 256))
        path = tmp_path / f"damaged{case}{Path(name).suffix}"
        path.write_bytes(bytes(damaged))
        try:
            image = read_image(path)
        except ImageFileError as error:
            assert str(path) in str(error) and "\n" not in str(error)
            outcomes["error"] += 1
        else:
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            outcomes["array"] += 1
    assert outcomes["error"] > 0
