"""Chooses digits training settings by k-fold cross-validation, never reading the test split.

The training and validation splits of the fixed digits split (1,438 images) are pooled and
cut into `--folds` stratified, seeded folds. Each candidate (a set of `keras_vit.train`
flags) is trained once per fold and training seed (`--seeds`), on the other folds, and
scored on the held-out fold; its score is the share of all pooled images it classified
right when held out, over all its seeds, and each seed's count (two seeds of one candidate
show how far the score moves by chance). The digits test split is never loaded: the child
process that trains a fold replaces the fixed split with the fold's (`digits_split_indices`
returns the fold's train / held-out indices, the held-out fold standing in for both
validation and test), so the digits recipe, preprocessing and training code run unchanged.

    python benchmarks/digits_cv.py --output cv.json \\
        --candidate base "--resnet-layers () --resnet-width 0.5 --image-size 32 --patch-size 2" \\
        --candidate rot10 "--resnet-layers () --resnet-width 0.5 --image-size 32 \\
            --patch-size 2 --rotation 10"

`--parallel 2` trains two folds at a time, each with one TensorFlow thread per op.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from train_digits import machine_info

from keras_vit.atomic import atomic_write_json

CV_SEED = 0


def fold_indices(pool: np.ndarray, labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Stratified folds of `pool` (example indices): per class, a seeded permutation dealt
    round-robin, so every fold holds each class's count divided by `folds`, rounded."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in range(folds)]
    for label in np.unique(labels[pool]):
        members = rng.permutation(pool[labels[pool] == label])
        for k in range(folds):
            parts[k].append(members[k::folds])
    return [np.sort(np.concatenate(p)).astype("int64") for p in parts]


def fold_split(fixed: dict[str, np.ndarray], labels: np.ndarray, fold: int, folds: int):
    """The split a fold's run trains on: train = the other folds, validation = test = the
    held-out fold, all drawn from the `fixed` split's train + validation images."""
    pool = np.sort(np.concatenate([fixed["train"], fixed["validation"]]))
    parts = fold_indices(pool, labels, folds, CV_SEED)
    held_out = parts[fold]
    train = np.sort(np.concatenate([p for k, p in enumerate(parts) if k != fold]))
    return {"train": train, "validation": held_out, "test": held_out}


def use_fold(fold: int, folds: int) -> None:
    """Makes this process's digits splits the fold's (see the module docstring)."""
    from keras_vit.data import digits

    fixed_split = digits.digits_split_indices

    def split_indices(labels):
        return fold_split(fixed_split(labels), labels, fold, folds)

    digits.digits_split_indices = split_indices


def run_fold(fold: int, folds: int, train_args: list[str]) -> int:
    """In a child process: trains with `keras_vit.train` on the fold's split."""
    from keras_vit import train

    use_fold(fold, folds)
    return train.main(train_args)


def train_fold(name: str, flags: str, fold: int, folds: int, seed: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="keras-vit-cv-") as tmp:
        out = Path(tmp) / "ckpt"
        train_args = ["--output", str(out), "--seed", str(seed), "--quiet", *shlex.split(flags)]
        command = [sys.executable, __file__, "--run-fold", str(fold), "--folds", str(folds)]
        env = dict(os.environ)
        if threads:
            env.update(TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads))
        start = time.perf_counter()
        done = subprocess.run(
            [*command, "--", *train_args], capture_output=True, text=True, env=env
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{name} fold {fold} failed: {done.stderr[-2000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
    correct = round(metrics["top1"] * metrics["num_examples"])
    return {
        "candidate": name,
        "seed": seed,
        "fold": fold,
        "held_out": metrics["num_examples"],
        "correct": correct,
        "top1": metrics["top1"],
        "process_wall_time_s": round(wall, 1),
        "steady_images_per_second": metrics["training"]["steady_images_per_second"],
    }


def summarize(runs: list[dict]) -> dict:
    """Per candidate: held-out top-1 pooled over its folds and seeds, the pooled count of
    each seed, and the per-run figures (ordered by seed, then fold)."""
    summary = {}
    for name in dict.fromkeys(run["candidate"] for run in runs):
        mine = sorted(
            (run for run in runs if run["candidate"] == name),
            key=lambda r: (r.get("seed", 0), r["fold"]),
        )
        seeds = list(dict.fromkeys(run.get("seed", 0) for run in mine))
        summary[name] = {
            "seeds": seeds,
            "folds": len({run["fold"] for run in mine}),
            "held_out": sum(run["held_out"] for run in mine),
            "correct": sum(run["correct"] for run in mine),
            "top1": sum(run["correct"] for run in mine) / sum(run["held_out"] for run in mine),
            "seed_correct": {
                str(seed): sum(r["correct"] for r in mine if r.get("seed", 0) == seed)
                for seed in seeds
            },
            "fold_top1": [run["top1"] for run in mine],
            "fold_top1_std": statistics.stdev([r["top1"] for r in mine]) if len(mine) > 1 else 0,
        }
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="JSON file to write")
    parser.add_argument(
        "--candidate",
        nargs=2,
        action="append",
        metavar=("NAME", "FLAGS"),
        help="a candidate: its name and its keras_vit.train flags as one string",
    )
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument(
        "--seeds",
        "--seed",
        nargs="+",
        type=int,
        default=[0],
        help="training seeds: each candidate trains every fold once per seed (default: 0)",
    )
    parser.add_argument("--parallel", type=int, default=1, help="folds trained at once")
    parser.add_argument("--force", action="store_true", help="replace an existing --output")
    parser.add_argument("--run-fold", type=int, help=argparse.SUPPRESS)
    parser.add_argument("train_args", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error(f"--folds must be at least 2. Received: {args.folds}")
    if args.run_fold is not None:
        return run_fold(args.run_fold, args.folds, args.train_args)
    if not args.output or not args.candidate:
        parser.error("--output and at least one --candidate are required")
    output = Path(args.output)
    if output.exists() and not args.force:
        print(f"error: {output} exists; pass --force to replace it", file=sys.stderr)
        return 1
    names = [name for name, _ in args.candidate]
    if len(set(names)) != len(names):
        parser.error(f"candidate names must differ. Received: {names}")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds must differ. Received: {args.seeds}")
    threads = 1 if args.parallel > 1 else 0
    jobs = [(n, f, s, k) for n, f in args.candidate for s in args.seeds for k in range(args.folds)]
    load_before = os.getloadavg()[0]
    with ThreadPoolExecutor(args.parallel) as pool:
        futures = [pool.submit(train_fold, n, f, k, args.folds, s, threads) for n, f, s, k in jobs]
        runs = []
        for future in futures:
            runs.append(future.result())
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "benchmark": "digits cross-validation on the train + validation splits",
        "folds": args.folds,
        "cv_seed": CV_SEED,
        "training_seeds": args.seeds,
        "candidates": dict(args.candidate),
        "machine": machine_info(),
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "runs": runs,
        "summary": summarize(runs),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output, result)
    print(json.dumps(result["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
