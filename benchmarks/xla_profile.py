"""Where an XLA-compiled Keras ViT forward or training step spends its time, per op.

    python benchmarks/xla_profile.py [--model B/16] [--batch 1] [--threads 2] [--runs 5]
        [--train] [--output xla_profile.json] [--force]

`benchmarks/run.py` times whole models and `benchmarks/kernels.py` single matmuls; this
script looks inside one compiled forward (`keras_vit.inference.predict_function`, XLA) or,
with `--train`, one compiled `model.fit` step (Adam and sparse cross entropy, as
`benchmarks/run.py` trains: forward, backward and the optimizer update). It turns on
XLA:CPU's per-op trace events (`--xla_cpu_enable_xprof_traceme`, added to `XLA_FLAGS`
before TensorFlow loads), records `--runs` calls with the TensorFlow profiler, and sums the
events of the compute threads by op: matmuls (`MatMul`, `dot`) and each kind of fused loop,
named by XLA after its ops (`subtract_exponential` is the softmax's `exp(x - max)`,
`copy_bitcast` a transpose, `wrapped_reduce-window` the first stage of a sum that XLA
splits in two: LayerNorm means, and in training the LayerNorm-scale and bias gradients
summed over the batch's rows). Times are thread-milliseconds per call: two ops that ran
side by side on two threads both count, so the column can add up to more than the wall
time, which is reported beside it (median of untraced calls). `--model digits` is
`benchmarks/run.py`'s bench ViT 32px, `--model tiny` a 32 px, 2-block model for a smoke test.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

# Trace events that wrap or wait for the ops rather than compute.
NOT_OPS = ("ThunkExecutor", "ThreadpoolListener", "SlinkyThreadPool", "end:")


def is_matmul(kind: str) -> bool:
    """XLA:CPU's dot thunks (`MatMul`, `MatMul_1`, ...) and dot fusions (`dot`,
    `dot_add_fusion`, ...)."""
    return re.fullmatch(r"MatMul(_\d+)?", kind) is not None or kind.startswith("dot")


def model_config(name: str) -> dict:
    if name in ("tiny", "digits"):
        from run import DIGITS, TINY  # benchmarks/run.py's models

        return {**(TINY if name == "tiny" else DIGITS), "num_classes": 10}
    from keras_vit.variants import variant_config

    return {**variant_config(name), "image_size": 224, "num_classes": 1000}


def op_times(xspace_path: Path, runs: int) -> dict[str, dict]:
    """`{op kind: {"ms": thread-ms per run, "count": events per run}}` from an XSpace file."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    space.ParseFromString(xspace_path.read_bytes())
    totals: dict[str, float] = collections.Counter()
    counts: dict[str, int] = collections.Counter()
    for plane in space.planes:
        names = plane.event_metadata
        for line in plane.lines:
            if "Eigen" not in line.name:  # XLA:CPU's compute threads
                continue
            for event in line.events:
                name = names[event.metadata_id].name
                if name.startswith(NOT_OPS):
                    continue
                kind = re.sub(r"\.\d+$", "", name)
                totals[kind] += event.duration_ps / 1e9
                counts[kind] += 1
    return {
        kind: {"ms": totals[kind] / runs, "count": counts[kind] / runs}
        for kind in sorted(totals, key=totals.get, reverse=True)
    }


def train_step(model, images: np.ndarray):
    """One XLA-compiled `model.fit` step on `images` (random labels), as a no-argument call."""
    import tensorflow as tf
    from run import compile_for_training  # benchmarks/run.py's training setup

    compile_for_training(model, jit_compile=True)
    labels = np.random.default_rng(1).integers(0, model.num_classes, len(images), np.int32)
    iterator = iter(tf.data.Dataset.from_tensors((images, labels)).repeat())
    model.make_train_function()

    def step():
        logs = model.train_function(iterator)
        return [np.asarray(value) for value in tf.nest.flatten(logs)]  # wait for the step

    return step


def profile(config: dict, batch: int, threads: int, runs: int, train: bool = False) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras_vit
    from keras_vit.inference import predict_function

    model = keras_vit.ViT(**config, seed=0)
    images = np.random.default_rng(0).uniform(-1, 1, (batch, *model.image_size, 3))
    images = images.astype(np.float32)
    if train:
        call = train_step(model, images)
    else:
        predict = predict_function(model, jit_compile=True)

        def call():
            return predict(images)

    from peer_timm import times_ms  # beside this file; imports no TensorFlow or torch

    wall = float(np.median(times_ms(call, max(runs, 5), 3)))
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        for _ in range(runs):
            call()
        tf.profiler.experimental.stop()
        (xspace,) = Path(logdir).glob("plugins/profile/*/*.xplane.pb")
        ops = op_times(xspace, runs)
    matmul = sum(v["ms"] for k, v in ops.items() if is_matmul(k))
    return {"wall_ms": wall, "matmul_ms": matmul, "ops": ops}


def table(results: dict) -> str:
    p = results["profile"]
    what = "training step" if results.get("train") else "forward"
    lines = [
        f"# XLA {what} profile: {results['model']}, batch {results['batch']}",
        "",
        f"`{results['command']}` on {results['date']}; {results['machine']}; "
        f"{results['threads']} threads; {results['runs']} traced {what}s.",
        "",
        f"Wall time {p['wall_ms']:.2f} ms per {what} (median, untraced); matmuls "
        f"{p['matmul_ms']:.2f} thread-ms.",
        "",
        f"| op | thread-ms per {what} | events per {what} |",
        "|---|---|---|",
    ]
    for kind, v in p["ops"].items():
        lines.append(f"| {kind} | {v['ms']:.3f} | {v['count']:g} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default="B/16", help="a variant name such as B/16, or digits, or tiny"
    )
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--train", action="store_true", help="profile a model.fit step, not a forward"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--output", default="xla_profile.json")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    if min(args.batch, args.threads, args.runs) < 1:
        parser.error("--batch, --threads and --runs must be at least 1")
    output = Path(args.output)
    if output.exists() and not args.force:
        print(f"error: {output} already exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    try:
        config = model_config(args.model)
    except (KeyError, ValueError) as error:
        print(f"error: unknown --model {args.model!r}: {error}", file=sys.stderr)
        return 2
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_enable_xprof_traceme=true".strip()
    import run  # benchmarks/run.py, beside this file

    machine = run.machine(args.threads)
    results = {
        "command": "python benchmarks/xla_profile.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{machine['cpu']}, {machine['cores']} cores",
        "versions": run.versions(),
        "model": args.model,
        "batch": args.batch,
        "threads": args.threads,
        "runs": args.runs,
        "train": args.train,
        "profile": profile(config, args.batch, args.threads, args.runs, args.train),
    }
    from keras_vit.atomic import atomic_write_text

    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, json.dumps(results, indent=2) + "\n")
    markdown = table(results)
    atomic_write_text(output.with_suffix(".md"), markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
