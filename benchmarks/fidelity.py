"""int8 fidelity and latency: random Ti/16, the stress Ti/16, digits; each int8 option.

    python benchmarks/fidelity.py --output benchmarks/results/DATE-fidelity [--quick]
        [--models random stress digits] [--size Ti/16] [--inputs 256] [--calibration-images 64]
        [--peers .venv-peers/bin/python] [--variants minmax mse ...] [--int16x8] [--dynamic]

For each model, the float32 file and the `int8` and `int8_cpu` files of each variant
(the default minmax calibration, `percentile`, `mse`, LayerNorm smoothing with `mse`, and
smoothing with the MLPs split in unit spans, `export.mlp_spans`)
against the float Keras model's logits on held-out inputs (`export.fidelity`): max and
mean logit error relative to the logit spread, the max centred error (relative to the
part of the logits the input changes), ranking agreement, top-1 agreement; the two
ops that add the most error against the float32 file of the same graph
(`export.tflite_fidelity.layer_report`, on a few inputs); and
the median batch-1 latency on the LiteRT interpreter at 1 and 2 threads, taken after every
file exists, ours and the peers' alike: `--latency-rounds R` passes over all files, each
timing every file once (`--latency-runs` calls), a file's figure the median of its passes.

Models: `random` is ViT-Ti/16 at 224 with 1000 classes, random weights and a random head
(`run.vit`), probed with uniform-noise images; `stress` is the same model through
`stress.stress` (outlier channels, heavy tails); `digits` is the bench ViT 32px of
`run.train_digits`, on its test split. Writes `<output>.json` and `<output>.md`.
`--variants` picks some of the variants (default: all); `--int16x8` adds the `int16x8`
file (int16 activations, int8 weights; minmax calibration) of each model, `--dynamic` the
dynamic-range file (int8 weights, activations quantized per input at run time) of the
plain graph and of each smoothed / split graph the chosen variants use.
`--weight-rounding nearest gptq` adds, for each chosen variant, the files whose int8 weights
are rounded with GPTQ (`export.weight_rounding`, what `--weight-rounding gptq` exports),
labelled `<variant>+gptq`; `--quantizations` picks the static files (`int8`, `int8_cpu`,
none: `--quantizations` alone, with `--dynamic` for the dynamic-range files only).
`--size B/16` makes the random and stress models ViT-B/16 (same construction).
`--quick` runs tiny models with few inputs: a smoke test of every code path.
`--peers PEER_PYTHON` adds ONNX Runtime and OpenVINO rows (fp32, bf16, int8) of the same
weights on the same inputs, run by that interpreter (`peers.py`, `make bench-peers`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import peers
from run import DIGITS, TINY, Plan, machine, train_digits, vit
from stress import stress

from export.weight_rounding import WEIGHT_ROUNDINGS

VARIANTS = {  # name -> (calibration method, smoothing alpha or None, MLP spans)
    "minmax": ("minmax", None, 1),
    "percentile": ("percentile", None, 1),
    "mse": ("mse", None, 1),
    "smooth0.5+mse": ("mse", 0.5, 1),
    "smooth1+mse": ("mse", 1.0, 1),
    "smooth1+spans4+mse": ("mse", 1.0, 4),
}
QUANTIZATIONS = ("int8", "int8_cpu")
PREPROCESSING = {"mean": [127.5] * 3, "std": [127.5] * 3}
THREADS = peers.THREADS  # the thread counts every file is timed at


def models(names, quick: bool, rng, calibration_images: int, inputs: int, size: str = "Ti/16"):
    """`{name: (keras model, calibration uint8 images, held-out uint8 images)}`; the random
    and stress models are the `size` variant (`Ti/16`, `B/16`, ...) at 224."""
    from keras_vit.variants import variant_config

    config = (
        {**TINY, "num_classes": 10}
        if quick
        else {**variant_config(size), "image_size": 224, "num_classes": 1000}
    )
    pixels = config["image_size"]
    count_cal, count_in = (4, 8) if quick else (calibration_images, inputs)
    out = {}
    if {"random", "stress"} & set(names):
        base = vit(config, seed=0)
        for variable in base.get_layer("head").weights:  # logits with a spread to measure
            variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(np.float32))
        calibration = rng.integers(0, 256, (count_cal, pixels, pixels, 3), dtype=np.uint8)
        held_out = rng.integers(0, 256, (count_in, pixels, pixels, 3), dtype=np.uint8)
        if "random" in names:
            out[f"random {size}" if not quick else "random tiny"] = (base, calibration, held_out)
        if "stress" in names:
            out[f"stress {size}" if not quick else "stress tiny"] = (
                stress(base, seed=0),
                calibration,
                held_out,
            )
    if "digits" in names:
        from keras_vit import data

        digits = {**(TINY if quick else DIGITS), "num_classes": 10}
        plan = Plan(quick=quick, threads=2, digits=digits, digits_epochs=1 if quick else 10)
        model, test_images, _ = train_digits(plan)
        train_images, _ = data.digits_arrays("train", digits["image_size"])
        pick = rng.choice(len(train_images), size=count_cal, replace=False)
        out["digits"] = (model, train_images[pick], test_images[: (8 if quick else None)])
    return out


def measure(
    name,
    model,
    calibration,
    held_out,
    quick: bool,
    scratch: Path,
    variants=None,
    int16x8=False,
    dynamic=False,
    weight_roundings=("nearest",),
    quantizations=QUANTIZATIONS,
) -> list[dict]:
    from export import fidelity, tflite_fidelity
    from export.classifier import PixelClassifier
    from export.convert import SavedModels, convert
    from export.run_data import normalised
    from export.tflite import prepared_model
    from export.weight_rounding import fold_norms, round_weights

    reference = tflite_fidelity.keras_logits(model, held_out, PREPROCESSING)
    rows = []
    key = "".join(c if c.isalnum() else "_" for c in name)
    saved_models = SavedModels(scratch / f"{key}_saved_models")  # one per graph

    def convert_file(source, quantization, calibration=None, method="minmax"):
        return convert(
            source, quantization, calibration, calibration_method=method, saved_models=saved_models
        )

    graph = PixelClassifier(model, **PREPROCESSING)
    float_file = convert_file(graph, "float32")
    few = held_out[: (2 if quick else 4)]
    files = [("float32", "-", float_file, float_file)]
    # Prepared graphs (smoothing, MLP spans, weight rounding) by `(alpha, spans, rounding)`,
    # each with the float32 file of its unrounded graph as the per-layer reference
    # (smoothing rescales tensors, rounding folds the LayerNorms into the next kernels; the
    # rounded weights' error counts as the file's).
    images = normalised(calibration, PREPROCESSING)
    prepared = {(None, 1, "nearest"): (graph, float_file, "-")}
    edited_models = {}
    chosen = [v for v in VARIANTS if variants is None or v in variants]
    for variant, rounding in [(v, r) for r in weight_roundings for v in chosen]:
        method, alpha, spans = VARIANTS[variant]
        if (alpha, spans) not in edited_models:
            edited = prepared_model(model, calibration, PREPROCESSING, alpha, spans)
            source = PixelClassifier(edited, **PREPROCESSING)
            reference_file = float_file if edited is model else convert_file(source, "float32")
            edited_models[(alpha, spans)] = (edited, reference_file)
        edited, reference_file = edited_models[(alpha, spans)]
        label = "-" if edited is model else variant.removesuffix("+mse")
        if rounding != "nearest":
            variant = f"{variant}+{rounding}"
            label = rounding if label == "-" else f"{label}+{rounding}"
        if (alpha, spans, rounding) not in prepared:
            if rounding != "nearest":  # per-layer reference: the folded, unrounded graph
                folded = PixelClassifier(fold_norms(edited), **PREPROCESSING)
                reference_file = convert_file(folded, "float32")
                edited = round_weights(edited, images, rounding, std=PREPROCESSING["std"])
            source = PixelClassifier(edited, **PREPROCESSING)
            prepared[(alpha, spans, rounding)] = (source, reference_file, label)
        source, reference_file, _ = prepared[(alpha, spans, rounding)]
        for quantization in quantizations:
            started = time.perf_counter()
            content = convert_file(source, quantization, calibration, method)
            print(f"{name}: {quantization} {variant} in {time.perf_counter() - started:.0f} s")
            files.append((quantization, variant, content, reference_file))
    if int16x8:
        int16 = convert_file(graph, "int16x8", calibration)
        files.append(("int16x8", "minmax", int16, float_file))
    if dynamic:  # one dynamic-range file per prepared graph (no calibration ranges)
        for source, reference_file, label in prepared.values():
            files.append(("dynamic", label, convert_file(source, "dynamic"), reference_file))
    for number, (quantization, variant, content, layer_reference) in enumerate(files):
        path = scratch / f"{key}_{number}.tflite"
        path.write_bytes(content)
        logits = tflite_fidelity.logits(content, held_out)
        row = {
            "model": name,
            "file": quantization,
            "variant": variant,
            **{k: round(v, 4) for k, v in fidelity.fidelity(reference, logits).items()},
            "latency_ms": None,  # `latency_ms`, with every other file
        }
        if quantization != "float32":
            layers = tflite_fidelity.layer_report(layer_reference, content, few, count=2)
            row["worst_op"] = "; ".join(
                f"{w['op']} {w['tensor'][:60]} (+{w['gain']})" for w in layers["worst"]
            )
        rows.append((row, file_timer(path)))
        print(json.dumps(row))
    return rows


def file_timer(path: Path):
    """`timer(threads, runs)`: the median batch-1 milliseconds of a `.tflite` file."""
    from export.runtime import Classifier

    classifiers = {}

    def timer(threads: int, runs: int) -> float:
        if threads not in classifiers:
            classifiers[threads] = Classifier(path, num_threads=threads)
        return classifiers[threads].latency_ms(runs=runs)

    return timer


def latency_ms(timed: list, rounds: int, runs: int) -> None:
    """Fills in each row's `latency_ms` from its `timer` (`[(row, timer)]`).

    Every file, ours and the peers', is timed once per thread count in each of `rounds`
    passes over all of them, so that a change of machine load or clock hits every file
    alike; a row's figure is the median of its rounds' medians (of `runs` calls each).
    """
    samples = [{t: [] for t in THREADS} for _ in timed]
    for _ in range(rounds):
        for (_, timer), times in zip(timed, samples, strict=True):
            for threads in THREADS:
                times[threads].append(timer(threads, runs))
    for (row, _), times in zip(timed, samples, strict=True):
        row["latency_ms"] = {str(t): round(statistics.median(times[t]), 3) for t in THREADS}


def markdown(results: dict) -> str:
    lines = [
        f"# int8 fidelity ({results['date']})",
        "",
        f"CPU: {results['cpu']}; command: `{results['command']}`",
        "",
        "Latency: batch 1, the median over {rounds} pass(es) of each pass's median of {runs} "
        "calls; every file, ours and the peers', timed once in each pass.".format(
            **results.get("latency", {"rounds": 1, "runs": 30})
        ),
        "",
        "| model | file | variant | max err | mean err | max centred err | ranking % | top-1 % "
        "| ms 1t | ms 2t | ops adding most error |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['model']} | {r['file']} | {r['variant']} | {r['max_logit_error']:.3f} | "
            f"{r['mean_logit_error']:.4f} | {r['max_centred_error']:.3f} | "
            f"{100 * r['ranking_agreement']:.1f} | "
            f"{100 * r['top1_agreement']:.1f} | {r['latency_ms']['1']:.2f} | "
            f"{r['latency_ms']['2']:.2f} | {r.get('worst_op') or '-'} |"
        )
    lines += [
        "",
        "Errors are relative to each input's float logit spread (`export.fidelity`); ranking:",
        "top-1 agreement after subtracting each class's mean over the inputs; centred error:",
        "the error of the logits centred by their class means over the inputs, relative to the",
        "centred float spread (the part of the logits the input changes).",
    ]
    notes = peers.markdown(results["peers"]) if "peers" in results else ""
    return "\n".join(lines) + "\n" + notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="path without extension")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--size", default="Ti/16", help="variant of the random and stress models (default Ti/16)"
    )
    parser.add_argument("--models", nargs="+", default=["random", "stress", "digits"])
    parser.add_argument("--inputs", type=int, default=256)
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument(
        "--peers",
        metavar="PEER_PYTHON",
        help="also ONNX Runtime and OpenVINO rows, run by this interpreter (benchmarks/peers.py)",
    )
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None)
    parser.add_argument("--int16x8", action="store_true", help="add the int16x8 file")
    parser.add_argument(
        "--dynamic", action="store_true", help="add the dynamic-range file (int8 weights)"
    )
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=1,
        help="passes over every file (ours and the peers') that time each once (default 1)",
    )
    parser.add_argument(
        "--latency-runs", type=int, default=30, help="timed calls per file and pass (default 30)"
    )
    parser.add_argument(
        "--weight-rounding",
        nargs="+",
        choices=WEIGHT_ROUNDINGS,
        default=["nearest"],
        help="int8 weight roundings of each variant (default: nearest, the converter's)",
    )
    parser.add_argument(
        "--quantizations",
        nargs="*",
        choices=QUANTIZATIONS,
        default=list(QUANTIZATIONS),
        help="static int8 files of each variant (default: int8 int8_cpu)",
    )
    args = parser.parse_args(argv)
    if not Path(args.output).parent.is_dir():
        print(f"error: --output: folder {Path(args.output).parent} does not exist", file=sys.stderr)
        return 1
    counts = {"--latency-rounds": args.latency_rounds, "--latency-runs": args.latency_runs}
    for flag, value in counts.items():
        if value < 1:
            print(f"error: {flag} must be at least 1, got {value}", file=sys.stderr)
            return 1
    reason = args.peers and peers.unavailable(args.peers)
    if reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    import tempfile

    rng = np.random.default_rng(0)
    runs = 2 if args.quick else args.latency_runs  # timed calls per file and pass
    timed = []  # [(row, timer)]: every file's row, timed at the end
    chosen = models(args.models, args.quick, rng, args.calibration_images, args.inputs, args.size)
    with tempfile.TemporaryDirectory(prefix="fidelity_") as scratch:
        peer = peers.Peers(args.peers, Path(scratch)) if args.peers else None
        try:
            for name, (model, calibration, held_out) in chosen.items():
                timed += measure(
                    name,
                    model,
                    calibration,
                    held_out,
                    args.quick,
                    Path(scratch),
                    args.variants,
                    args.int16x8,
                    args.dynamic,
                    args.weight_rounding,
                    args.quantizations,
                )
            if peer is not None:
                peer_timed, peer_section = peers.measure_all(peer, chosen, PREPROCESSING)
                timed += peer_timed
            latency_ms(timed, args.latency_rounds, runs)
        finally:
            if peer is not None:
                peer.close()
    rows = [row for row, _ in timed]
    rows.sort(key=lambda r: list(chosen).index(r["model"]))  # each model's rows together
    extra = {"peers": peer_section} if args.peers else {}
    extra["latency"] = {"rounds": args.latency_rounds, "runs": runs}
    write_results(args.output, "fidelity.py", argv, rows, markdown, **extra)
    return 0


def write_results(output, script: str, argv, rows: list, to_markdown, **extra) -> None:
    """`<output>.json` and `<output>.md` of a benchmark's rows, with date, CPU and command."""
    import datetime

    results = {
        "date": datetime.date.today().isoformat(),
        "cpu": machine(2)["cpu"],
        "command": f"python benchmarks/{script} " + " ".join(argv or sys.argv[1:]),
        "rows": rows,
        **extra,
    }
    output = Path(output)
    output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    output.with_suffix(".md").write_text(to_markdown(results))
    print(to_markdown(results))


if __name__ == "__main__":
    raise SystemExit(main())
