"""All the plots for a run directory and some images, and the command line.

python -m keras_vit.visualize RUN_DIR img.jpg [more.png ...] --output DIR [--force]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from keras_vit.visualize.attention import (
    HEAD_FUSIONS,
    HeadFusion,
    attention_distance,
    attention_maps,
    check_vit,
    class_token_count,
    patch_distances,
    rollout_from_attention,
    rollout_grid,
    upsample,
)
from keras_vit.visualize.embeddings import (
    patch_embedding_components,
    position_embedding_similarity,
)
from keras_vit.visualize.plots import (
    plot_attention_heads,
    plot_attention_rollout,
    plot_mean_attention_distance,
    plot_patch_embedding_components,
    plot_position_embedding_similarity,
)

PathLike = str | os.PathLike

SUMMARY_FILE = "summary.json"


def load_image(path: PathLike, image_size: Sequence[int], channels: int = 3) -> np.ndarray:
    """Reads an image as the model sees it: `keras_vit.images.read_resized`, as in serving.

    The file goes through the reader training and `export.predict` use (EXIF orientation,
    16-bit scaling, palette / CMYK to RGB, alpha dropped) and a bilinear resize (aspect
    ratio not kept) to `image_size`; a one-channel model gets the luminance.

    Args:
        path: the image file.
        image_size: `(height, width)`.
        channels: 3 (RGB) or 1 (grey).

    Returns:
        `(height, width, channels)` uint8; `keras_vit.data.scale_images` maps it to the
        model's [-1, 1] input.

    Raises:
        ImageFileError: (a ValueError) the file is missing or cannot be read.
    """
    from PIL import Image

    from keras_vit.images import read_resized

    image = read_resized(path, tuple(image_size))
    if channels == 3:
        return image
    return np.asarray(Image.fromarray(image).convert("L"), "uint8")[..., None]


def is_visualization(folder: PathLike) -> bool:
    """True if `folder` holds the `summary.json` that `visualize_run` writes."""
    import json

    summary = Path(folder) / SUMMARY_FILE
    try:
        content = json.loads(summary.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and {"images", "head_fusion"} <= content.keys()


def check_replaceable(output: PathLike, run_dir: PathLike) -> None:
    """Raises FileExistsError unless `output` is an earlier visualization, apart from `run_dir`.

    `--force` replaces only what this command wrote: never the run directory, a folder that
    holds it, or a folder or file of anything else.
    """
    output, run_dir = Path(output).resolve(), Path(run_dir).resolve()
    if output == run_dir or output in run_dir.parents:
        raise FileExistsError(
            f"Output {output} is or holds the run directory {run_dir}; choose another --output"
        )
    if not is_visualization(output):
        raise FileExistsError(
            f"Output {output} exists and was not written by keras_vit.visualize "
            f"(no {SUMMARY_FILE}); --force replaces only an earlier visualization"
        )


def _predictions(model, images: np.ndarray, labels: Sequence[str]) -> list[dict]:
    if not model.include_top:
        return [{} for _ in images]
    outputs = np.asarray(model.predict(images, verbose=0), "float64")
    if model.classifier_activation is None:
        outputs = np.exp(outputs - outputs.max(axis=-1, keepdims=True))
        outputs /= outputs.sum(axis=-1, keepdims=True)
    best = outputs.argmax(axis=-1)
    names = [labels[i] if i < len(labels) else str(i) for i in best]
    return [
        {"label": name, "index": int(i), "probability": float(out[i])}
        for name, i, out in zip(names, best, outputs, strict=True)
    ]


def visualize_run(
    run_dir: PathLike,
    image_paths: Sequence[PathLike],
    output: PathLike,
    head_fusion: HeadFusion = "mean",
    overwrite: bool = False,
) -> Path:
    """Writes every plot for a run directory and some images into `output`.

    Per image: `rollout_<stem>.png` and `attention_heads_<stem>.png` (last layer); for the
    model: `position_embedding_similarity.png`, `patch_embedding_components.png`,
    `mean_attention_distance.png` (over the given images); and `summary.json` with the
    predictions and the distances. The folder is built aside and moved into place.

    Args:
        run_dir: a run directory written by `python -m keras_vit.train`.
        image_paths: image files.
        output: the folder to create.
        head_fusion: rollout head fusion.
        overwrite: replace an existing `output` that an earlier call wrote (one holding
            its `summary.json`); any other folder, or one holding the run directory, is
            refused.

    Returns:
        The output folder.
    """
    from keras_vit.atomic import atomic_directory
    from keras_vit.run_dir import read_run_dir

    run = read_run_dir(run_dir)
    stems = _checked_stems(image_paths)
    output = Path(output)
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        if not overwrite:
            raise FileExistsError(f"Output {output} already exists; pass --force to overwrite it")
        check_replaceable(output, run.path)
    model = _run_model(run)
    raw = np.stack([load_image(p, model.image_size, model.num_channels) for p in image_paths])
    analyses = _analyses(model, raw, run.labels, head_fusion)
    with atomic_directory(output, overwrite=overwrite) as folder:
        _write_image_plots(folder, model, raw, stems, analyses)
        _write_model_plots(folder, model, analyses, len(raw))
        _write_summary(folder, run.path, image_paths, head_fusion, analyses)
    return output


def _checked_stems(image_paths: Sequence[PathLike]) -> list[str]:
    """The images' file stems, which name the outputs: at least one, all different."""
    if not image_paths:
        raise ValueError("Expected at least one image. Received: none")
    stems = [Path(p).stem for p in image_paths]
    if len(set(stems)) != len(stems):
        raise ValueError(f"Image file names must differ (outputs are named after them): {stems}")
    return stems


def _run_model(run):
    """The run directory's ViT, checked against its own preprocessing spec."""
    model = run.load_model()
    check_vit(model)
    if tuple(model.image_size) != run.image_size:
        raise ValueError(
            f"{run.path} preprocessing image_size {run.image_size} differs from the "
            f"model's {tuple(model.image_size)}"
        )
    return model


class _Analyses(NamedTuple):
    attentions: list[np.ndarray]
    rollout: np.ndarray  # upsampled to the image, (batch, height, width)
    distances: np.ndarray
    predictions: list[dict]
    components: object  # embeddings.Components, None for a hybrid


def _analyses(model, raw: np.ndarray, labels: Sequence[str], head_fusion: HeadFusion):
    """Every analysis of the model on the images `raw` (uint8 pixels)."""
    from keras_vit.data import scale_images

    # A model built with include_preprocessing scales the pixels itself.
    images = raw.astype("float32") if model.include_preprocessing else scale_images(raw).numpy()
    attentions = attention_maps(model, images)
    grid = rollout_grid(model, rollout_from_attention(attentions, head_fusion))
    distances = attention_distance(
        np.stack(attentions), model.grid_size, model.token_size, bool(class_token_count(model))
    )
    components = None  # a hybrid's patch filters read the stem's feature map, not pixels
    if model.stem is None:
        pixels = model.patch_size**2 * model.num_channels
        components = patch_embedding_components(model, n=min(28, model.hidden_size, pixels))
    return _Analyses(
        attentions=attentions,
        rollout=upsample(grid, model.image_size),
        distances=distances,
        predictions=_predictions(model, images, labels),
        components=components,
    )


def _write_image_plots(folder: Path, model, raw, stems, analyses: _Analyses) -> None:
    """`rollout_<stem>.png` and `attention_heads_<stem>.png` for each image."""
    for index, stem in enumerate(stems):
        guess = analyses.predictions[index]
        label = stem
        if guess:
            label = f"{stem}: predicted {guess['label']} ({guess['probability']:.2f})"
        plot_attention_rollout(
            raw[index], analyses.rollout[index], folder / f"rollout_{stem}.png", title=label
        )
        plot_attention_heads(
            raw[index],
            analyses.attentions[-1][index],
            model.grid_size,
            folder / f"attention_heads_{stem}.png",
            has_class_token=bool(class_token_count(model)),
            title=f"{stem}: layer {model.num_layers - 1} attention of the pooled output",
        )


def _write_model_plots(folder: Path, model, analyses: _Analyses, image_count: int) -> None:
    """The position-embedding, patch-embedding and mean-attention-distance plots."""
    plot_position_embedding_similarity(
        position_embedding_similarity(model), folder / "position_embedding_similarity.png"
    )
    if analyses.components is not None:
        plot_patch_embedding_components(
            analyses.components, folder / "patch_embedding_components.png"
        )
    plot_mean_attention_distance(
        analyses.distances,
        folder / "mean_attention_distance.png",
        image_size=model.image_size,
        uniform_distance=float(patch_distances(model.grid_size, model.token_size).mean()),
        title=f"Mean attention distance over {image_count} image(s)",
    )


def _write_summary(folder: Path, run_path, image_paths, head_fusion, analyses: _Analyses) -> None:
    """`summary.json`: predictions and the figures behind the plots."""
    from keras_vit.atomic import atomic_write_json

    components = analyses.components
    explained = None if components is None else components.explained_variance_ratio.round(6)
    atomic_write_json(
        folder / SUMMARY_FILE,
        {
            "run_dir": str(run_path),
            "images": [str(p) for p in image_paths],
            "predictions": analyses.predictions,
            "head_fusion": head_fusion,
            "mean_attention_distance_pixels": analyses.distances.round(4).tolist(),
            "patch_embedding_explained_variance": None if explained is None else explained.tolist(),
        },
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_vit.visualize",
        description="Attention rollout, per-head attention and the paper's Figure 7 "
        "analyses for a keras-vit run directory, as PNG files.",
    )
    parser.add_argument(
        "run_dir", help="run directory written by keras_vit.train (model.keras, config.json, ...)"
    )
    parser.add_argument("images", nargs="+", help="JPEG/PNG images (RGB, grey or with alpha)")
    parser.add_argument("--output", required=True, help="folder to create for the PNGs")
    parser.add_argument("--head-fusion", choices=HEAD_FUSIONS, default="mean")
    parser.add_argument(
        "--force", action="store_true", help="replace an earlier visualization at --output"
    )
    args = parser.parse_args(argv)
    try:
        output = visualize_run(
            args.run_dir, args.images, args.output, args.head_fusion, overwrite=args.force
        )
    except (FileNotFoundError, FileExistsError, ValueError, TypeError) as error:
        print("error:", " ".join(str(error).split()), file=sys.stderr)
        return 2
    print(f"Wrote {len(os.listdir(output))} files to {output}")
    return 0


def visualize_checkpoint(checkpoint: PathLike, *args, **kwargs) -> Path:
    """Deprecated alias of `visualize_run` (the training output is now a "run directory")."""
    import warnings

    warnings.warn(
        "visualize_checkpoint is deprecated; use visualize_run", DeprecationWarning, stacklevel=2
    )
    return visualize_run(checkpoint, *args, **kwargs)
