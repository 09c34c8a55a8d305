"""See inside a Vision Transformer: attention maps, rollout and the paper's Figure 7.

Analyses return NumPy arrays (`attention`, `embeddings`); `plots` writes them as PNG files;
`report` writes every plot for a run directory and some images, and is the command line

    python -m keras_vit.visualize RUN_DIR img.jpg [more.png ...] --output DIR [--force]

Every analysis works for any `VisionTransformer`: class-token or `pooling="gap"` models,
non-square images, any depth.
"""

from keras_vit.visualize.attention import (
    HEAD_FUSIONS,
    HeadFusion,
    Rollout,
    attention_distance,
    attention_maps,
    attention_rollout,
    mean_attention_distance,
    patch_distances,
    rollout_from_attention,
    upsample,
)
from keras_vit.visualize.embeddings import (
    Components,
    cosine_similarity_grid,
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
from keras_vit.visualize.report import load_image, main, visualize_checkpoint, visualize_run

__all__ = [
    "HEAD_FUSIONS",
    "Components",
    "HeadFusion",
    "Rollout",
    "attention_distance",
    "attention_maps",
    "attention_rollout",
    "cosine_similarity_grid",
    "load_image",
    "main",
    "mean_attention_distance",
    "patch_distances",
    "patch_embedding_components",
    "plot_attention_heads",
    "plot_attention_rollout",
    "plot_mean_attention_distance",
    "plot_patch_embedding_components",
    "plot_position_embedding_similarity",
    "position_embedding_similarity",
    "rollout_from_attention",
    "upsample",
    "visualize_checkpoint",
    "visualize_run",
]
