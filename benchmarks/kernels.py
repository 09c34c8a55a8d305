"""The two kernels a ViT forward is made of, alone: TensorFlow (XLA and graph) against PyTorch.

    python benchmarks/kernels.py [--peer-python .venv-peers/bin/python] [--output kernels.json]
        [--threads 2] [--repeats 16] [--force]

`benchmarks/run.py` compares whole models; this script asks where a gap between them comes
from. It times, at the shapes of the ViTs that `run.py` measures, the dense matmul (a Dense
layer: `x @ W + b`) and the batched attention matmul (`Q @ K^T` per batch and head), each
`--repeats` times inside one compiled function (so the per-call dispatch is amortised), as an
XLA-compiled `tf.function`, a plain TensorFlow graph (oneDNN kernels), and in PyTorch (run by
the peer interpreter, this same file with `--torch`). Output: microseconds per matmul,
GFLOP/s, and each TensorFlow row against PyTorch's, in a JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# (label, kind, shape): dense (M, K, N); attention (batch, heads, tokens, head_dim).
CASES = (
    ("B/16 batch 1: qkv projection (fused)", "dense", (197, 768, 2304)),
    ("B/16 batch 1: one of q / k / v / out", "dense", (197, 768, 768)),
    ("B/16 batch 1: MLP in", "dense", (197, 768, 3072)),
    ("B/16 batch 1: MLP out", "dense", (197, 3072, 768)),
    ("B/16 batch 1: Q K^T", "attention", (1, 12, 197, 64)),
    ("Ti/16 batch 32: one of q / k / v / out", "dense", (6304, 192, 192)),
    ("Ti/16 batch 32: MLP in", "dense", (6304, 192, 768)),
    ("Ti/16 batch 32: Q K^T", "attention", (32, 3, 197, 64)),
    ("bench ViT 32px batch 32: one of q / k / v / out", "dense", (2080, 64, 64)),
    ("bench ViT 32px batch 32: Q K^T", "attention", (32, 4, 65, 16)),
)


def flops(kind: str, shape: tuple[int, ...]) -> float:
    if kind == "dense":
        m, k, n = shape
        return 2.0 * m * k * n
    batch, heads, tokens, dim = shape
    return 2.0 * batch * heads * tokens * tokens * dim


def median_s(fn, runs: int = 15, warmup: int = 2) -> float:
    from peer_timm import times_ms  # beside this file; imports no TensorFlow or torch

    return float(np.median(times_ms(fn, runs, warmup))) / 1000.0


def tensorflow_times(threads: int, repeats: int) -> dict:
    """`{label: {"xla": s, "graph": s}}`, seconds per matmul."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rng = np.random.default_rng(0)
    out = {}
    for label, kind, shape in CASES:
        if kind == "dense":
            m, k, n = shape
            x = tf.constant(rng.standard_normal((m, k), np.float32))
            w = tf.Variable(rng.standard_normal((k, n), np.float32) * 0.01)
            b = tf.Variable(np.zeros(n, np.float32))

            def op(i, x=x, w=w, b=b):
                return tf.nn.bias_add(tf.matmul(x + i, w), b)

        else:
            q = tf.constant(rng.standard_normal(shape, np.float32))
            k = tf.constant(rng.standard_normal(shape, np.float32))

            def op(i, q=q, k=k):
                return tf.matmul(q + i, k, transpose_b=True)

        out[label] = {}
        for name, jit in (("xla", True), ("graph", False)):

            @tf.function(jit_compile=jit)
            def chain(op=op):
                total = tf.constant(0.0)
                for i in range(repeats):  # each input differs: nothing to share or fold
                    total += tf.reduce_sum(tf.reshape(op(float(i)), [-1])[:1])
                return total

            out[label][name] = median_s(lambda chain=chain: chain().numpy()) / repeats
    return out


def torch_times(threads: int, repeats: int) -> dict:
    """`{label: {"torch": s}}`, seconds per matmul (inference mode)."""
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    out = {}
    for label, kind, shape in CASES:
        if kind == "dense":
            m, k, n = shape
            x = torch.randn(m, k)
            layer = torch.nn.Linear(k, n)

            def op(i, x=x, layer=layer):
                return layer(x + i)

        else:
            q, k = torch.randn(*shape), torch.randn(*shape)

            def op(i, q=q, k=k):
                return (q + i) @ k.transpose(-1, -2)

        def chain(op=op):
            with torch.inference_mode():
                for i in range(repeats):
                    op(float(i))

        out[label] = {"torch": median_s(chain) / repeats}
    return out


def peer_times(python: str, threads: int, repeats: int) -> tuple[dict | None, str | None]:
    if not python or not Path(python).exists():
        return None, f"no peer interpreter at {python}"
    done = subprocess.run(
        [python, __file__, "--torch", "--threads", str(threads), "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["failed"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def table(results: dict) -> str:
    lines = [
        "# Kernels: TensorFlow (XLA, graph) against PyTorch",
        "",
        f"`{results['command']}` on {results['date']}; {results['machine']}; "
        f"{results['threads']} threads; {results['repeats']} matmuls per timed call, median "
        "of 15 calls.",
        "",
        "| matmul | shape | XLA us | graph us | torch us | XLA GFLOP/s | graph GFLOP/s | "
        "torch GFLOP/s | XLA / torch | graph / torch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        t = r.get("torch_us")

        def ratio(value, t=t):
            return f"{value / t:.2f}" if t else "-"

        lines.append(
            f"| {r['label']} | {tuple(r['shape'])} | {r['xla_us']:.0f} | {r['graph_us']:.0f} | "
            f"{t if t is None else round(t)} | {r['xla_gflops']:.0f} | {r['graph_gflops']:.0f} | "
            f"{'-' if t is None else round(r['torch_gflops'])} | {ratio(r['xla_us'])} | "
            f"{ratio(r['graph_us'])} |"
        )
    if results.get("peer_reason"):
        lines += ["", f"PyTorch not timed: {results['peer_reason']}"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--output", default="kernels.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=16)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--torch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1:
        parser.error("--threads and --repeats must be at least 1")
    if args.torch:  # the peer side: one JSON line on stdout
        print(json.dumps(torch_times(args.threads, args.repeats)))
        return 0
    output = Path(args.output)
    if output.exists() and not args.force:
        print(f"error: {output} already exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    import run  # benchmarks/run.py, beside this file

    machine = run.machine(args.threads)
    peer, reason = peer_times(args.peer_python, args.threads, args.repeats)
    ours = tensorflow_times(args.threads, args.repeats)
    rows = []
    for label, kind, shape in CASES:
        work = flops(kind, shape)
        r = {"label": label, "kind": kind, "shape": list(shape)}
        for name, seconds in {**ours[label], **(peer or {}).get(label, {})}.items():
            r[f"{name}_us"] = seconds * 1e6
            r[f"{name}_gflops"] = work / seconds / 1e9
        rows.append(r)
    results = {
        "command": "python benchmarks/kernels.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{machine['cpu']}, {machine['cores']} cores, "
        f"{machine['peak_fp32_gflops_per_core']} GFLOP/s fp32 peak per core",
        "versions": run.versions(),
        "threads": args.threads,
        "repeats": args.repeats,
        "peer_reason": reason,
        "rows": rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, output)
    markdown = table(results)
    md = output.with_suffix(".md")
    md.with_name(md.name + ".tmp").write_text(markdown)
    os.replace(md.with_name(md.name + ".tmp"), md)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
