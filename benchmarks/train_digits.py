"""Times the default training run: `python -m keras_vit.train --output <tmp>` on digits.

Each seed runs in a fresh process, as a user would run it, and is timed from process
start to exit (imports, data, graph tracing, training, saving, test evaluation). The JSON
written holds, per run, that wall time, the training run's own figures from
`metrics.json` (training wall time; training images/s over all epochs, the first
including graph tracing, and over a median later epoch; test top-1 / top-5; the last
epoch's validation top-1, for choosing settings without the test split), the model's
parameter count, a summary over the seeds (test top-1 mean, spread and standard deviation)
and the machine: CPU model, cores usable, load average before and after (the figures are
only as good as the machine was quiet).

    python benchmarks/train_digits.py --output benchmarks/train_digits.json
    python benchmarks/train_digits.py --seeds 0 1 2 --output results.json -- --mixed-precision
    python benchmarks/train_digits.py --seeds 0 1 2 --output hybrid.json -- \
        --resnet-layers "()" --resnet-width 0.5 --image-size 32 --patch-size 2
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from keras_vit.atomic import atomic_write_json


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    except (ValueError, OSError, AttributeError):
        memory_gib = None
    versions = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, keras, numpy, tensorflow; print(json.dumps({'tensorflow': "
            "tensorflow.__version__, 'keras': keras.__version__, 'numpy': numpy.__version__}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": None if memory_gib is None else round(memory_gib, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        **json.loads(versions.stdout.strip().splitlines()[-1]),
    }


def final_validation_top1(history: Path) -> float:
    """The last epoch's validation top-1 in a run directory's `history.csv`."""
    with Path(history).open(newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows or "val_accuracy" not in rows[-1]:
        raise ValueError(f"{history}: no val_accuracy column or no epoch")
    return float(rows[-1]["val_accuracy"])


def count_parameters(run_dir: Path) -> int:
    """Parameters of a run directory's model, counted in a fresh process."""
    code = (
        "import sys; from keras_vit.run_dir import read_run_dir; "
        "print(read_run_dir(sys.argv[1]).load_model().count_params())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip().splitlines()[-1])


def summarize(runs: list[dict]) -> dict:
    """Mean, spread and sample standard deviation of the runs' test top-1, mean images/s."""
    top1 = [run["test_top1"] for run in runs]
    return {
        "seeds": [run["seed"] for run in runs],
        "parameters": runs[0]["parameters"],
        "test_top1_mean": statistics.fmean(top1),
        "test_top1_min": min(top1),
        "test_top1_max": max(top1),
        "test_top1_std": statistics.stdev(top1) if len(top1) > 1 else 0.0,
        "validation_top1_mean": statistics.fmean(run["validation_top1"] for run in runs),
        "process_wall_time_s_max": max(run["process_wall_time_s"] for run in runs),
        "train_images_per_second_mean": statistics.fmean(
            run["train_images_per_second"] for run in runs
        ),
        "steady_images_per_second_mean": statistics.fmean(
            run["steady_images_per_second"] for run in runs
        ),
    }


def run_once(seed: int, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="keras-vit-bench-") as tmp:
        out = Path(tmp) / "ckpt"
        command = [sys.executable, "-m", "keras_vit.train", "--output", str(out)]
        command += ["--seed", str(seed), "--quiet", *extra]
        load_before = os.getloadavg()
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        if done.returncode != 0:
            raise SystemExit(f"training failed (exit {done.returncode}): {done.stderr[-2000:]}")
        metrics = json.loads((out / "metrics.json").read_text())
        validation_top1 = final_validation_top1(out / "history.csv")
        parameters = count_parameters(out)
    return {
        "seed": seed,
        "command": " ".join(["python -m keras_vit.train --output <tmp>", *command[5:]]),
        "process_wall_time_s": round(wall, 1),
        "training_wall_time_s": metrics["training"]["wall_time_s"],
        "train_images_per_second": metrics["training"]["train_images_per_second"],
        "steady_images_per_second": metrics["training"]["steady_images_per_second"],
        "test_top1": metrics["top1"],
        "test_top5": metrics["top5"],
        "test_loss": round(metrics["loss"], 4),
        "test_examples": metrics["num_examples"],
        "validation_top1": validation_top1,
        "parameters": parameters,
        "load_average_1min_before": round(load_before[0], 2),
        "load_average_1min_after": round(load_after[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="JSON file to write")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--force", action="store_true", help="replace an existing --output")
    parser.add_argument("extra", nargs="*", help="flags passed on to keras_vit.train (after --)")
    args = parser.parse_args(argv)
    output = Path(args.output)
    if output.exists() and not args.force:
        print(f"error: {output} exists; pass --force to replace it", file=sys.stderr)
        return 1
    runs = []
    for seed in args.seeds:
        runs.append(run_once(seed, args.extra))
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "benchmark": " ".join(["digits training: python -m keras_vit.train", *args.extra]),
        "machine": machine_info(),
        "runs": runs,
        "summary": summarize(runs),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output, result)
    print(json.dumps(result["summary"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
