"""Reads image files as uint8 RGB arrays: the one image reader of training and serving.

Training (`keras_vit.data`, folders of class sub-folders) and serving
(`export.runtime.load_image`, `python -m export.predict`) both read files through
`read_image`, so a file gives the same pixels in both. This module needs only NumPy and
Pillow (no TensorFlow, no Keras): it runs on a device.

The rules, whatever the file format (JPEG, PNG, WebP, TIFF, BMP, GIF and anything else
Pillow decodes):

- the EXIF orientation is applied (a phone photo is read upright);
- 16-bit and 32-bit integer grey images are scaled by their bit depth to 0..255
  (`round(value * 255 / (2**bits - 1))`), never clipped; 16-bit RGB is reduced to 8 bits
  by Pillow;
- grey, bilevel, palette, CMYK and YCbCr images are converted to RGB;
- alpha is dropped: a transparent pixel keeps the colour stored under it (as TensorFlow's
  decoders and tensorflow-datasets do), it is not composited onto a background;
- an animated file (GIF, WebP) gives its first frame;
- floating-point images are refused (their value range is not defined by the file).

A file that cannot be read raises `ImageFileError` with one line naming the file and the
cause.

Example:
>>> from keras_vit.images import read_image
>>> read_image("cat.jpg").shape
(480, 640, 3)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from keras_vit.validation import first_line

# File extensions a folder scan treats as images (compared lower-case).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".tif",
    ".tiff",
    ".bmp",
    ".gif",
)

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_TIFF_BITS_PER_SAMPLE = 258


class ImageFileError(ValueError):
    """An image file cannot be read; the message is one line naming the file and cause."""


def _integer_bits(image) -> int:
    """The bit depth of an integer grey image in mode `I;16*` or `I`."""
    if image.mode in _SIXTEEN_BIT_MODES:
        return 16
    tag = getattr(image, "tag_v2", None)
    bits = tag.get(_TIFF_BITS_PER_SAMPLE) if tag is not None else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    # Pillow opens 16-bit PNG / PGM grey as `I` in some versions; TIFF says its depth.
    return int(bits) if bits else 16


def _to_rgb_array(image) -> np.ndarray:
    """A loaded Pillow image -> uint8 `(H, W, 3)` by the module's rules."""
    if image.mode in (*_SIXTEEN_BIT_MODES, "I"):
        bits = _integer_bits(image)
        top = float(2**bits - 1)
        values = np.clip(np.asarray(image, dtype=np.float64), 0.0, top)
        grey = np.round(values * (255.0 / top)).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
    if image.mode == "F":
        raise ValueError("floating-point image (mode F) has no defined pixel range")
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as uint8 RGB `(height, width, 3)` (see the module's rules).

    Args:
        path: the image file.

    Returns:
        uint8 array `(H, W, 3)` at the file's own size, upright by its EXIF orientation.

    Raises:
        ImageFileError: the file is missing, a folder, not an image, truncated or
            otherwise undecodable (one line naming the file and the cause).
    """
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.exists():
        raise ImageFileError(f"Image file {path} does not exist")
    if path.is_dir():
        raise ImageFileError(f"Image file {path} is a folder")
    try:
        with Image.open(path) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return _to_rgb_array(upright)
    except Exception as error:  # Pillow's decoders raise many types for broken files
        raise ImageFileError(f"Cannot read image {path}: {first_line(error)}") from None


def read_resized(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """`read_image(path)` resized bilinearly (Pillow) to `size = (height, width)`.

    What serving (`export.runtime.load_image`) and `keras_vit.visualize` feed a model.

    Returns:
        uint8 array `(height, width, 3)`.

    Raises:
        ImageFileError: as `read_image`.
    """
    from PIL import Image

    image = read_image(path)
    if image.shape[:2] != (size[0], size[1]):
        resized = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        image = np.asarray(resized, dtype=np.uint8)
    return image
