"""Google's published ViT checkpoints: names, URLs, download and cache.

`PRETRAINED` maps a published name (`"imagenet21k"`, `"augreg"`, ...) to one file per
variant under `PUBLIC_BASE_URL`; `get_weights_file` resolves a name, a URL or a path to a
local `.npz` (downloading once into the Keras cache, optionally verifying a hash), and
`load_weights(model, weights)` resolves and loads in one call, as
`keras_vit.ViT(..., weights=...)` does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import keras

from keras_vit.checkpoints.loading import LoadSummary, load_npz
from keras_vit.checkpoints.posemb import PosembMethod
from keras_vit.model import VisionTransformer
from keras_vit.variant_table import variant_of

logger = logging.getLogger(__name__)

PUBLIC_BASE_URL = "https://storage.googleapis.com/vit_models/"


def _files(folder: str, names: Mapping[str, str]) -> MappingProxyType:
    return MappingProxyType({variant: f"{folder}/{name}.npz" for variant, name in names.items()})


_AUGREG = MappingProxyType(
    {
        "Ti/16": "Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
        "S/16": "S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0",
        "S/32": "S_32-i21k-300ep-lr_0.001-aug_none-wd_0.1-do_0.0-sd_0.0",
        "B/16": "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0",
        "B/32": "B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
        "L/16": "L_16-i21k-300ep-lr_0.001-aug_strong1-wd_0.1-do_0.0-sd_0.0",
        "R+Ti/16": "R_Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0",
        "R26+S/32": "R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0",
        "R50+L/32": "R50_L_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1",
    }
)
_AUGREG_IMAGENET2012 = MappingProxyType(
    {
        "Ti/16": "--imagenet2012-steps_20k-lr_0.03-res_384",
        "S/16": "--imagenet2012-steps_20k-lr_0.03-res_384",
        "S/32": "--imagenet2012-steps_20k-lr_0.01-res_384",
        "B/16": "--imagenet2012-steps_20k-lr_0.03-res_384",
        "B/32": "--imagenet2012-steps_20k-lr_0.01-res_384",
        "L/16": "--imagenet2012-steps_20k-lr_0.01-res_384",
        "R+Ti/16": "--imagenet2012-steps_20k-lr_0.03-res_384",
        "R26+S/32": "--imagenet2012-steps_20k-lr_0.01-res_384",
        "R50+L/32": "--imagenet2012-steps_20k-lr_0.01-res_384",
    }
)

PRETRAINED: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        # ImageNet-21k pre-training (21,843 classes, with a pre_logits layer), 224 px.
        "imagenet21k": _files(
            "imagenet21k",
            {
                "B/8": "ViT-B_8",
                "B/16": "ViT-B_16",
                "B/32": "ViT-B_32",
                "L/16": "ViT-L_16",
                "L/32": "ViT-L_32",
                "H/14": "ViT-H_14",
                "R50+B/16": "R50+ViT-B_16",
            },
        ),
        # ImageNet-21k pre-training, ImageNet-1k fine-tuning (1,000 classes), 384 px.
        "imagenet21k+imagenet2012": _files(
            "imagenet21k+imagenet2012",
            {
                "B/8": "ViT-B_8",
                "B/16": "ViT-B_16",
                "B/32": "ViT-B_32",
                "L/16": "ViT-L_16",
                "L/32": "ViT-L_32",
                "R50+B/16": "R50+ViT-B_16",
            },
        ),
        # The same, fine-tuned at 224 px.
        "imagenet21k+imagenet2012-224": _files(
            "imagenet21k+imagenet2012", {"B/16": "ViT-B_16-224", "L/16": "ViT-L_16-224"}
        ),
        # ImageNet-1k with the SAM optimizer, 224 px.
        "sam": _files(
            "sam",
            {
                "S/16": "ViT-S_16",
                "B/16": "ViT-B_16",
                "B/32": "ViT-B_32",
                "L/16": "ViT-L_16",
                "L/32": "ViT-L_32",
            },
        ),
        # "How to train your ViT" (AugReg): the recommended ImageNet-21k checkpoints, 224 px.
        "augreg": _files("augreg", _AUGREG),
        # ... and their ImageNet-1k fine-tunings at 384 px.
        "augreg+imagenet2012": _files(
            "augreg", {v: _AUGREG[v] + suffix for v, suffix in _AUGREG_IMAGENET2012.items()}
        ),
    }
)
"""Published checkpoint names -> {variant: file under `PUBLIC_BASE_URL`}.

File names are those listed by the vision_transformer README (AugReg table) and by its
`vit_jax.ipynb` bucket listing. No SHA-256 of these files is recorded here; pass `file_hash=`
to `get_weights_file` to have a download verified."""


def weights_url(name: str, variant: str, base_url: str | None = None) -> str:
    """The URL of a published checkpoint.

    Args:
        name: a key of `PRETRAINED`, e.g. `"imagenet21k"`.
        variant: a `VARIANTS` key, e.g. `"B/16"`.
        base_url: where the files live; defaults to `PUBLIC_BASE_URL`.

    Raises:
        ValueError: an unknown name, or no file of that name for the variant (one line
            listing the choices).
    """
    if name not in PRETRAINED:
        raise ValueError(
            f"Unknown weights {name!r}. Expected a path to an .npz file, a URL, or one of: "
            f"{', '.join(PRETRAINED)}"
        )
    files = PRETRAINED[name]
    if variant not in files:
        raise ValueError(f"No {name!r} weights for ViT {variant}; {name!r} has: {', '.join(files)}")
    return (base_url or PUBLIC_BASE_URL).rstrip("/") + "/" + files[variant]


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "file://"))


def get_weights_file(
    weights: str | os.PathLike,
    variant: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    file_hash: str | None = None,
    base_url: str | None = None,
) -> Path:
    """Resolves `weights` to a local `.npz` file, downloading it when needed.

    Args:
        weights: a local path, a URL (`https://`, `http://`, `file://`), or a published name
            (a key of `PRETRAINED`, resolved for `variant`).
        variant: the ViT variant (`"B/16"`, ...), needed for a published name.
        cache_dir: the download cache; defaults to Keras' (`~/.keras`). Files go to its
            `keras_vit/` subfolder and are reused on later calls.
        file_hash: the file's expected SHA-256 (or MD5) hex digest. Downloads are verified
            against it; a mismatching file is deleted and an error raised.
        base_url: overrides `PUBLIC_BASE_URL` for published names (a mirror).

    Returns:
        The local path.

    Example:
    >>> path = get_weights_file("augreg", "S/16", file_hash="<sha256 you trust>")
    >>> model = keras_vit.ViT_S16(weights=path)
    """
    text = os.fspath(weights)
    if text in PRETRAINED:
        if variant is None:
            raise ValueError(
                f"Published weights {text!r} exist per variant: pass a variant such as "
                "'B/16' (a model whose architecture matches keras_vit.VARIANTS has one)"
            )
        url = weights_url(text, variant, base_url)
    elif _is_url(text):
        url = text
    elif Path(text).exists() or text.endswith(".npz") or os.sep in text:
        path = Path(text)
        if not path.exists():
            raise FileNotFoundError(f"Checkpoint file {path} does not exist")
        if file_hash is not None and _file_digest(path, file_hash) != file_hash.lower():
            raise ValueError(f"{path} does not match file_hash={file_hash}")
        return path
    else:
        weights_url(text, variant or "", base_url)  # raises: unknown name, with the choices
    return _download(url, cache_dir, file_hash)


def _download(url: str, cache_dir: str | os.PathLike | None, file_hash: str | None) -> Path:
    """`url` through the Keras download cache, verified against `file_hash` when given."""
    parsed = url.split("?", 1)[0].rstrip("/")
    fname = parsed.rsplit("/", 1)[-1]
    folder = parsed.rsplit("/", 2)[-2] if parsed.count("/") >= 3 else "files"
    subdir = os.path.join("keras_vit", re.sub(r"[^A-Za-z0-9_.+-]", "_", folder))
    if cache_dir is not None:
        # get_file falls back to /tmp/.keras when the folder is missing (not writable).
        Path(cache_dir).mkdir(parents=True, exist_ok=True)

    def download(force: bool) -> Path:
        try:
            local = keras.utils.get_file(
                fname=fname,
                origin=url,
                cache_subdir=subdir,
                cache_dir=None if cache_dir is None else os.fspath(cache_dir),
                force_download=force,
            )
        except Exception as error:  # get_file raises a bare Exception on URL failures
            raise OSError(f"Could not download {url}: {error}") from None
        return Path(local)

    local = download(force=False)
    if file_hash is not None and _file_digest(local, file_hash) != file_hash.lower():
        logger.info("%s does not match file_hash; downloading it again", local)
        local = download(force=True)
        if _file_digest(local, file_hash) != file_hash.lower():
            local.unlink(missing_ok=True)
            raise ValueError(
                f"Downloaded {url} does not match file_hash={file_hash}; the file was deleted"
            )
    return local


def _file_digest(path: Path, file_hash: str) -> str:
    """SHA-256 hex digest of `path`, or MD5 when `file_hash` is an MD5 (32 hex digits)."""
    hasher = hashlib.md5() if len(file_hash) == 32 else hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def load_weights(
    model: VisionTransformer,
    weights: str | os.PathLike,
    posemb_method: PosembMethod = "zoom",
    source_grid: int | Sequence[int] | None = None,
    cache_dir: str | os.PathLike | None = None,
    file_hash: str | None = None,
    variant: str | None = None,
) -> LoadSummary:
    """Loads a local file, a URL or a published checkpoint into `model`.

    A published name (`"imagenet21k"`, ...) resolves from the model's variant, so
    `ViT_B16(weights="imagenet21k")` downloads `imagenet21k/ViT-B_16.npz`. See
    `get_weights_file` for the arguments about files and `load_npz` for the loading rules;
    `variant` (a `VARIANTS` name) overrides the one read from the model's architecture.

    Example:
    >>> summary = load_weights(model, "finetuned.npz")
    """
    if variant is None:
        variant = variant_of(model)
    path = get_weights_file(weights, variant, cache_dir=cache_dir, file_hash=file_hash)
    return load_npz(model, path, posemb_method=posemb_method, source_grid=source_grid)
