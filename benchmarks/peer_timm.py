"""The timm side of `benchmarks/run.py`, run by the peer interpreter (`.venv-peers`).

    .venv-peers/bin/python benchmarks/peer_timm.py --serve THREADS

A small server on stdin / stdout, one JSON object per line each way, so that `run.py` can
time timm right beside our rows (the same minute, the same machine load):
`{"cmd": "load", "key", "config", "npz", "check_input"}` answers `{"outputs": logits}`;
`{"cmd": "time", "key", "batch", "runs", "warmup"}` answers `{"times_ms": [...]}`;
`{"cmd": "train", "key", "config", "npz", "images", "labels", "batch", "steps", "warmup",
"learning_rate"}` answers `{"times_ms": [...]}` (one per training step);
`{"cmd": "versions"}` answers the versions; end of input ends it.

No keras-vit or TensorFlow here: `run.py` writes our weights with `keras_vit.checkpoints.
save_npz`, and this script loads them with timm's own `.npz` loader
(`timm.models.vision_transformer._load_weights`) into a timm `VisionTransformer` of the same
configuration (class token, tanh GELU as the checkpoints' `flax.linen.gelu`, LayerNorm
epsilon 1e-6), returns its logits on the check batch (so `run.py` can prove it is the same
model) and times it: inference latency per batch size, and training steps (Adam, cross
entropy) on the given images.

Images are NHWC float32 `.npy` files in [-1, 1], as our models take them.
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


def times_ms(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


class Server:
    """Holds the loaded models between commands."""

    def __init__(self):
        self.models = {}
        self.trainers = {}

    def load(self, cmd: dict) -> dict:
        import torch

        model = build(cmd["config"]).eval()
        load(model, cmd["npz"])
        check = nchw(np.load(cmd["check_input"]))
        with torch.inference_mode():
            outputs = model(check).numpy()
        self.models[cmd["key"]] = (model, check)
        return {"outputs": outputs.tolist()}

    def time(self, cmd: dict) -> dict:
        import torch

        model, check = self.models[cmd["key"]]
        x = check[:1].repeat(cmd["batch"], 1, 1, 1).contiguous()
        with torch.inference_mode():
            return {"times_ms": times_ms(lambda: model(x), cmd["runs"], cmd["warmup"])}

    def train(self, cmd: dict) -> dict:
        import torch

        if cmd["key"] not in self.trainers:
            model = build(cmd["config"]).train()
            load(model, cmd["npz"])
            images = nchw(np.load(cmd["images"]))
            labels = torch.from_numpy(np.load(cmd["labels"]).astype(np.int64))
            optimizer = torch.optim.Adam(model.parameters(), lr=cmd["learning_rate"])
            self.trainers[cmd["key"]] = (model, images, labels, optimizer, {"i": 0})
        model, images, labels, optimizer, position = self.trainers[cmd["key"]]
        loss_fn = torch.nn.CrossEntropyLoss()
        batch = cmd["batch"]

        def step():
            start = position["i"] % (len(images) - batch + 1)
            position["i"] += batch
            x, y = images[start : start + batch], labels[start : start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()

        return {"times_ms": times_ms(step, cmd["steps"], cmd["warmup"])}

    def versions(self, cmd: dict) -> dict:
        import timm
        import torch

        return {"torch": torch.__version__, "timm": timm.__version__}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "--serve":
        print("usage: peer_timm.py --serve THREADS", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(int(argv[1]))
    torch.set_num_interop_threads(1)
    return serve(Server(), sys.stdout)


def serve(server, answers) -> int:
    """Answers each JSON line of stdin with `server.<cmd>(request)`, one JSON line on `answers`.

    An exception becomes `{"error": "Type: message"}`, reported by the caller (`run.py`
    marks the rows, `fidelity.py` stops). Returns 0 at the end of input.
    """
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        try:
            answer = getattr(server, cmd["cmd"])(cmd)
        except Exception as error:
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
