"""A stress model for int8: a ViT given the activation statistics of trained ViTs.

Random-weight ViTs quantize kindly: every channel of every activation has about the same
range. Trained ViTs do not, and per-tensor int8 ranges suffer for it:

- A few fixed feature dimensions carry activations far larger than the rest. Sun et al.,
  "Massive Activations in Large Language Models" (2024, arXiv 2402.17762), define massive
  activations as magnitudes above 100 and at least 1,000 times the median of their hidden
  state, find them in the same feature dimensions whatever the input, acting as biases,
  and report them in ViTs too (CLIP, DINOv2). FQ-ViT (Lin et al., 2022) reports severe
  inter-channel variation of LayerNorm inputs in ViT, DeiT and Swin, and that per-tensor
  MinMax post-training quantization collapses them; Bondarenko et al. (2021, 2023) trace
  such outlier dimensions to attention heads that learn "no-op" updates.
- Attention concentrates on a few tokens (Darcet et al., "Vision Transformers Need
  Registers", 2023: high-norm tokens that take most of the attention), so attention
  probabilities are heavy-tailed: most near 0, a few near 1.
- Post-GELU activations are heavy-tailed: a few hidden units fire far above the others.

`stress` edits a ViT's weights to give it these statistics:

1. `outlier_channels` residual-stream channels (the same in every block) get a constant
   offset `massive` times the stream's RMS in the position embedding, so every LayerNorm
   input has a few channels far larger than the rest (changes the function);
2. in each LayerNorm, the same channels' gamma and beta are multiplied by a factor drawn
   log-uniformly from `ln_scale` (10..100 by default) and the rows of the next Dense
   kernels divided by it: LayerNorm outputs with channels 10-100x larger than the rest,
   the same function in float;
3. each attention head's query is multiplied by a log-normal factor (`attention_sigma`):
   sharper, heavy-tailed attention (changes the function);
4. each MLP hidden unit's first-layer column is multiplied and its second-layer row
   divided by a log-normal factor (`gelu_sigma`): heavy-tailed post-GELU activations
   (nearly the same function: GELU is close to linear for large inputs).
"""

from __future__ import annotations

import numpy as np


def stress(
    model,
    seed: int = 0,
    outlier_channels: int | None = None,
    massive: float = 20.0,
    ln_scale: tuple[float, float] = (10.0, 100.0),
    attention_sigma: float = 0.5,
    gelu_sigma: float = 1.0,
):
    """A copy of a keras_vit ViT with outlier channels and heavy tails (module docstring).

    Args:
        model: a `VisionTransformer`.
        seed: seed of the channels and factors drawn.
        outlier_channels: how many channels carry the outliers; default `max(2, D // 64)`.
        massive: residual-stream offset of the outlier channels, in units of the position
            embedding's RMS; 0 leaves the stream alone.
        ln_scale: range of the LayerNorm output factors (log-uniform); `(1, 1)` for none.
        attention_sigma / gelu_sigma: log-normal sigma of the per-head query factors and
            the per-unit MLP factors; 0 for none.

    Returns:
        The edited copy (float32).
    """
    from export.classifier import rebuild
    from export.smoothing import migrate, norm_pairs

    rng = np.random.default_rng(seed)
    stressed = rebuild(model)
    width = stressed.hidden_size
    count = outlier_channels if outlier_channels is not None else max(2, width // 64)
    channels = rng.choice(width, size=min(count, width), replace=False)

    encoder = stressed.get_layer("patch_encoder")
    if massive:
        position = np.asarray(encoder.position_embedding.numpy(), np.float64)
        rms = float(np.sqrt(np.mean(position**2))) or 1.0
        signs = rng.choice([-1.0, 1.0], size=len(channels))
        position[..., channels] += massive * rms * signs
        encoder.position_embedding.assign(position.astype(np.float32))

    low, high = np.log(ln_scale[0]), np.log(ln_scale[1])
    for norm, consumers in norm_pairs(stressed):
        scales = np.ones(width)
        scales[channels] = np.exp(rng.uniform(low, high, size=len(channels)))
        migrate(norm, consumers, 1.0 / scales)  # gamma and beta times the factors

    for layer in stressed.layers:
        if not layer.name.startswith("encoderblock_"):
            continue
        attention = layer.attention
        if attention_sigma:
            heads = np.exp(rng.normal(0.0, attention_sigma, size=attention.num_heads))
            columns = np.repeat(heads, attention.head_dim)
            for variable in (attention.query.kernel, attention.query.bias):
                values = np.asarray(variable.numpy(), np.float64) * columns
                variable.assign(values.astype(np.float32))
        if gelu_sigma:
            units = np.exp(rng.normal(0.0, gelu_sigma, size=layer.mlp_dim))
            dense1, dense2 = layer.mlp_dense1, layer.mlp_dense2
            dense1.kernel.assign((np.asarray(dense1.kernel.numpy()) * units).astype(np.float32))
            dense1.bias.assign((np.asarray(dense1.bias.numpy()) * units).astype(np.float32))
            dense2.kernel.assign(
                (np.asarray(dense2.kernel.numpy()) / units[:, None]).astype(np.float32)
            )
    stressed.stress_channels = sorted(int(c) for c in channels)
    return stressed
