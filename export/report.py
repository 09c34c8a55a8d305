"""The export report: one entry per file, written as `report.json` and printed as a table."""

from __future__ import annotations

import sys
import time

import numpy as np

REPORT_FILE = "report.json"


def new_report(checkpoint, model, calibration, seed: int, test, options=None) -> dict:
    """The report's header: the model, its calibration sample and test split; no files yet.

    Args:
        checkpoint: the `keras_vit.RunDir` exported.
        model: its Keras model.
        calibration: the calibration images, or None.
        seed: the calibration sample's seed.
        test: `(images, labels, reference probabilities)` of the test split, or None.
        options: the int8 options (`calibration_method`, `percentile`, `smooth_alpha`,
            `mlp_spans`, `weight_rounding`).
    """
    report: dict = {
        "checkpoint": str(checkpoint.path),
        "model": model.name,
        "image_size": list(checkpoint.image_size),
        "num_params": int(model.count_params()),
        "num_classes": len(checkpoint.labels),
        "input": "RGB pixels 0..255 (uint8 for int8 files, float32 otherwise)",
        "output": "class probabilities (uint8 scale 1/256 for int8 files, float32 otherwise)",
        "calibration": (
            {"split": "train", "samples": len(calibration), "seed": seed, **(options or {})}
            if calibration is not None
            else None
        ),
        "test_split": None,
        "files": [],
        "versions": versions(),
    }
    if test is not None:
        images, labels, reference = test
        report["test_split"] = {
            "source": checkpoint.config["dataset"]["source"],
            "num_examples": len(images),
            "keras_accuracy": float((np.argmax(reference, axis=1) == labels).mean()),
        }
    return report


def finish_report(report: dict, started: float) -> dict:
    """Adds each file's size relative to float32, the total time and the peak memory."""
    sizes = {e["quantization"]: e["size_bytes"] for e in report["files"]}
    if "float32" in sizes:
        for entry in report["files"]:
            entry["size_vs_float32"] = round(entry["size_bytes"] / sizes["float32"], 4)
    report["export_seconds"] = round(time.perf_counter() - started, 1)
    report["peak_rss_mb"] = peak_rss_mb()
    return report


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MiB (None where unknown)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(usage / (1024.0 if sys.platform != "darwin" else 1024.0**2), 1)


def versions() -> dict:
    import keras
    import tensorflow as tf

    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        from importlib.metadata import version

        versions["ai_edge_litert"] = version("ai-edge-litert")
    except Exception:  # not installed
        pass
    return versions


def format_table(report: dict) -> str:
    """The report as a fixed-width table, one row per file."""
    header = (
        f"{'file':28s} {'size KiB':>9s} {'x f32':>6s} {'ops':>5s} {'float':>5s} {'flex':>4s} "
        f"{'agree %':>8s} {'rank %':>7s} {'max err':>7s} {'max|dp|':>8s} {'acc %':>7s} "
        f"{'ms 1t':>8s} {'ms 2t':>8s} "
        f"{'runtime':>8s}"
    )
    lines = [header, "-" * len(header)]

    def pct(value):
        return f"{100 * value:.2f}" if value is not None else "-"

    for e in report["files"]:
        latency = e.get("latency_ms", {})
        diff = e.get("max_abs_prob_diff")
        error = e.get("max_logit_error")
        lines.append(
            f"{e['file']:28s} {e['size_bytes'] / 1024:9.1f} "
            f"{e.get('size_vs_float32', float('nan')):6.3f} {e['num_ops']:5d} "
            f"{e['float_compute_ops']:5d} {len(e['flex_ops']):4d} "
            f"{pct(e.get('top1_agreement')):>8s} {pct(e.get('ranking_agreement')):>7s} "
            f"{(f'{error:.4f}' if error is not None else '-'):>7s} "
            f"{(f'{diff:.4f}' if diff is not None else '-'):>8s} {pct(e.get('accuracy')):>7s} "
            f"{latency.get('1', float('nan')):8.3f} {latency.get('2', float('nan')):8.3f} "
            f"{'>=' + e['min_runtime'] if e.get('min_runtime') else '-':>8s}"
        )
    if report.get("test_split"):
        split = report["test_split"]
        lines.append(
            f"Keras model: {100 * split['keras_accuracy']:.2f} % on {split['num_examples']} "
            f"test images of {split['source']!r}"
        )
    lines.append(
        "rank %: top-1 agreement after subtracting each class's mean over the test images; "
        "max err: largest logit error relative to the input's float logit spread "
        "(export.fidelity)"
    )
    for e in report["files"]:
        if e.get("worst_layers"):
            worst = e["worst_layers"][0]
            lines.append(
                f"{e['file']}: op adding the most error: {worst['op']} {worst['tensor']} "
                f"(+{worst['gain']:.4f} relative RMS)"
            )
    lines.append(
        "runtime: the oldest TFLite runtime (tflite-runtime or TensorFlow version) that runs "
        "the file, from its operator versions"
    )
    for e in report["files"]:
        if "edgetpu" in e:
            edge = e["edgetpu"]
            lines.append(
                f"{e['file']}: first op off the Edge TPU table: "
                f"{edge['first_unsupported'] if edge['first_unsupported'] is not None else 'none'}"
                f"; {100 * edge['mac_share_before_first_unsupported']:.1f} % of MACs before it"
            )
    return "\n".join(lines)
