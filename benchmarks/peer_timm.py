"""The timm side of `benchmarks/run.py`, run by the peer interpreter (`.venv-peers`).

    .venv-peers/bin/python benchmarks/peer_timm.py SPEC.json RESULT.json

No keras-vit or TensorFlow here: `run.py` writes our weights with `keras_vit.checkpoints.
save_npz`, and this script loads them with timm's own `.npz` loader
(`timm.models.vision_transformer._load_weights`) into a timm `VisionTransformer` of the same
configuration (class token, tanh GELU as the checkpoints' `flax.linen.gelu`, LayerNorm
epsilon 1e-6), returns its logits on the check batch (so `run.py` can prove it is the same
model) and times it: inference latency per batch size, and training steps (Adam, cross
entropy) on the given images.

SPEC.json: `{"threads": int, "inference": [{"key", "config", "npz", "check_input",
"batches", "runs", "warmup"}], "training": [{"key", "config", "npz", "images", "labels",
"batch", "steps", "warmup", "learning_rate"}]}`; images are NHWC float32 `.npy` files in
[-1, 1], as our models take them.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def build(config: dict):
    import timm
    from timm.models import vision_transformer

    model = vision_transformer.VisionTransformer(
        img_size=config["image_size"],
        patch_size=config["patch_size"],
        embed_dim=config["hidden_size"],
        depth=config["num_layers"],
        num_heads=config["num_heads"],
        mlp_ratio=config["mlp_dim"] / config["hidden_size"],
        num_classes=config["num_classes"],
        global_pool="token",
        class_token=True,
        qkv_bias=True,
        act_layer=timm.layers.get_act_layer("gelu_tanh"),
    )
    return model


def load(model, npz: str) -> None:
    from timm.models import vision_transformer

    vision_transformer._load_weights(model, npz)


def nchw(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def inference(spec: dict) -> dict:
    import torch

    model = build(spec["config"]).eval()
    load(model, spec["npz"])
    check = nchw(np.load(spec["check_input"]))
    with torch.inference_mode():
        outputs = model(check).numpy()
        latency = {}
        for batch in spec["batches"]:
            x = check[:1].repeat(batch, 1, 1, 1).contiguous()
            latency[str(batch)] = median_ms(
                lambda x=x: model(x), spec["runs"][str(batch)], spec["warmup"]
            )
    return {"key": spec["key"], "outputs": outputs.tolist(), "latency_ms": latency}


def training(spec: dict) -> dict:
    import torch

    model = build(spec["config"]).train()
    load(model, spec["npz"])
    images = nchw(np.load(spec["images"]))
    labels = torch.from_numpy(np.load(spec["labels"]).astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["learning_rate"])
    loss_fn = torch.nn.CrossEntropyLoss()
    batch = spec["batch"]
    position = {"i": 0}

    def step():
        start = position["i"] % (len(images) - batch + 1)
        position["i"] += batch
        x, y = images[start : start + batch], labels[start : start + batch]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    step_ms = median_ms(step, spec["steps"], spec["warmup"])
    return {"key": spec["key"], "step_ms": step_ms, "images_per_s": batch / (step_ms / 1000.0)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: peer_timm.py SPEC.json RESULT.json", file=sys.stderr)
        return 2
    spec = json.loads(open(argv[0]).read())
    import timm
    import torch

    torch.set_num_threads(spec["threads"])
    torch.set_num_interop_threads(1)
    result = {
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
        "threads": torch.get_num_threads(),
        "inference": [inference(s) for s in spec.get("inference", [])],
        "training": [training(s) for s in spec.get("training", [])],
    }
    with open(argv[1], "w") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
