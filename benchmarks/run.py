"""keras-vit against its peers on this machine, in one run: latency, training speed, GFLOP/s.

    python benchmarks/run.py [--quick] [--output results.json] [--force]
        [--peer-python .venv-peers/bin/python] [--threads 2] [--wait-idle 1200]

Writes `results.json` and `results.md` (the same tables in Markdown). Sections:

- inference: median latency at batch 1 and 8 of ViT-Ti/16, S/16 and B/16 at 224 (1000
  classes, random weights with a random head, fixed seeds): our Keras model as a TensorFlow
  graph and XLA-compiled (`keras_vit.inference.predict_function`), our TFLite files
  (float32, float16, dynamic, int8, int8_cpu; batch 8 is eight batch-1 invokes, the files
  have a static batch of 1) on the LiteRT interpreter with 1 and 2 threads, keras-hub's
  `ViTImageClassifier` with our weights copied in, and timm on CPU PyTorch loading our
  weights through timm's own `.npz` loader (run by the peer interpreter,
  `benchmarks/peer_timm.py`). Peers' logits are checked against ours on a batch before
  they are timed.
- training: images/s of `model.fit` steps (Adam, cross entropy) for the bench ViT 32px (32 px)
  and Ti/16 at 224 on digits images, ours (graph and XLA), keras-hub and timm, same batch.
- int8: the bench ViT 32px trained here, exported float32, int8 with and without the
  XNNPACK-friendly matmul ranges (`export.tflite.convert(symmetric_matmul=...)`) and
  int8_cpu (softmax, rsqrt and GELU left in float): accuracy, agreement with Keras, float
  ops, delegate partitions, latency; and per-op profiles (`export.profile`) of the digits
  and Ti/16 files.
- GFLOP/s from analytic FLOP counts against this CPU's peak, and the issue's targets.

Timings are medians over repeated runs after warm-up; every ratio is computed from rows of
the same run. TensorFlow runs with `--threads` intra-op threads (and 1 inter-op), PyTorch
with the same count; LiteRT rows say their count. `--quick` runs a tiny configuration with
few repetitions: a smoke test of every code path (`tests/test_benchmarks.py`), no figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
from peer_timm import times_ms  # beside this file; no TensorFlow or torch import

ROOT = Path(__file__).resolve().parents[1]
PEER_SCRIPT = ROOT / "benchmarks" / "peer_timm.py"
DEFAULT_PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
TFLITE_QUANTIZATIONS = ("float32", "float16", "dynamic", "int8", "int8_cpu")
INT8_FILES = ("int8", "int8_cpu")  # each against float32 in the targets
# "bench ViT 32px": the benchmarks' digits model (142,026 parameters at 10 classes), named apart
# from the default digits ViT of `python -m keras_vit.train` (306,730 parameters).
DIGITS = dict(image_size=32, patch_size=4, hidden_size=64, num_layers=4, num_heads=4, mlp_dim=128)
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
LOGIT_TOLERANCE = 1e-3


@dataclass
class Plan:
    """What one run measures."""

    quick: bool
    threads: int
    models: dict[str, dict] = field(default_factory=dict)  # name -> ViT arguments
    batches: tuple[int, ...] = (1, 8)
    lite_threads: tuple[int, ...] = (1, 2)
    max_runs: int = 30
    min_runs: int = 5
    budget_s: float = 6.0
    rounds: int = 2
    warmup: int = 3
    calibration_images: int = 8
    training: dict[str, dict] = field(default_factory=dict)
    train_batch: int = 32
    train_steps: int = 10
    train_warmup: int = 3
    digits: dict = field(default_factory=lambda: {**DIGITS, "num_classes": 10})
    digits_epochs: int = 30
    profile_models: tuple[str, ...] = ()
    profile_runs: int = 20


def make_plan(quick: bool, threads: int) -> Plan:
    from keras_vit.variants import variant_config

    if quick:
        tiny = {**TINY, "num_classes": 10}
        return Plan(
            quick=True,
            threads=threads,
            models={"tiny": tiny},
            batches=(1, 2),
            max_runs=2,
            min_runs=1,
            budget_s=0.5,
            rounds=1,
            warmup=1,
            calibration_images=2,
            training={"tiny": tiny},
            train_batch=8,
            train_steps=2,
            train_warmup=1,
            digits=tiny,
            digits_epochs=1,
            profile_models=(),
            profile_runs=1,
        )
    models = {
        name: {**variant_config(name), "image_size": 224, "num_classes": 1000}
        for name in ("Ti/16", "S/16", "B/16")
    }
    return Plan(
        quick=False,
        threads=threads,
        models=models,
        training={
            "bench ViT 32px": {**DIGITS, "num_classes": 10},
            "Ti/16": {**variant_config("Ti/16"), "image_size": 224, "num_classes": 10},
        },
        profile_models=("Ti/16",),
    )


# === Machine ===


def _cpuinfo() -> dict:
    info = {"model_name": platform.processor() or platform.machine(), "flags": [], "mhz": None}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name":
            info["model_name"] = value
        elif key == "flags" and not info["flags"]:
            info["flags"] = value.split()
        elif key == "cpu MHz" and info["mhz"] is None:
            info["mhz"] = float(value)
    return info


def machine(threads: int) -> dict:
    """CPU, vector extensions, cores and the peak this run compares against."""
    cpu = _cpuinfo()
    flags = set(cpu["flags"])
    wanted = (
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "amx_tile",
        "amx_int8",
        "amx_bf16",
        "avx_vnni",
    )
    ghz = (cpu["mhz"] or 0.0) / 1000.0
    fp32_per_cycle = 64 if "avx512f" in flags else (32 if "fma" in flags else 8)
    if "amx_int8" in flags:
        int8_per_cycle, int8_basis = 2048, "int8 AMX"
        int8_note = "AMX-INT8 (one 16x16x64 TDPBSSD tile product per 16 cycles: 1024 MAC)"
    elif "avx512_vnni" in flags:
        int8_per_cycle, int8_basis = 256, "int8 VNNI"
        int8_note = "AVX512-VNNI (VPDPBUSD: 64 MAC per instruction on two ports)"
    else:
        int8_per_cycle, int8_basis = 64, "int8 SIMD"
        int8_note = "no VNNI or AMX: a rough SIMD figure"
    return {
        "cpu": cpu["model_name"],
        "cores": os.cpu_count(),
        "ghz": ghz,
        "flags": [f for f in wanted if f in flags],
        "threads": threads,
        "peak_fp32_gflops_per_core": round(ghz * fp32_per_cycle, 1),
        "peak_int8_gops_per_core": round(ghz * int8_per_cycle, 1),
        "int8_basis": int8_basis,
        "peak_note": (
            f"fp32: {fp32_per_cycle} FLOP/cycle/core (two 512-bit FMA units x 16 lanes x 2 FLOP) "
            f"x {ghz:.2f} GHz, the clock /proc/cpuinfo reports (turbo, if any, is hidden by "
            f"the hypervisor). int8: {int8_per_cycle} op/cycle/core, {int8_note}. The int8 and "
            "dynamic-range TFLite rows are counted against the int8 figure (their matmuls run "
            "in int8); XNNPACK's int8 GEMMs here exceed the AVX512-VNNI ceiling (256 op/cycle), "
            "so they use AMX tiles."
        ),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict:
    out = {}
    for package in ("tensorflow", "keras", "ai-edge-litert", "numpy", "keras-hub", "keras-vit"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def heavy_processes(threshold: float = 30.0) -> list[str]:
    """Other processes using more than `threshold` % CPU right now (Linux `ps`)."""
    try:
        lines = subprocess.run(
            ["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.splitlines()[1:]
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in lines:
        parts = line.split(None, 2)
        if len(parts) == 3 and int(parts[0]) != os.getpid() and float(parts[1]) > threshold:
            found.append(f"{parts[2]} ({parts[1]} %)")
    return found


def wait_for_idle(limit_s: float, load_below: float = 0.6) -> dict:
    """Waits (at most `limit_s`) until the 1-minute load average is low and nothing heavy runs."""
    start = time.time()
    while True:
        load = os.getloadavg()[0]
        busy = heavy_processes()
        if (load < load_below and not busy) or time.time() - start >= limit_s:
            return {
                "waited_s": round(time.time() - start),
                "idle": load < load_below and not busy,
                "busy": busy,
            }
        time.sleep(20)


# === Measuring ===


def call_times(fn, runs: int) -> list[float]:
    """Wall milliseconds of `runs` calls of `fn()` (the peer's own timing loop, no warm-up)."""
    return times_ms(fn, runs, warmup=0)


def runs_for(estimate_ms: float, plan: Plan) -> int:
    """Timed calls per round: as many as fit in the time budget, within the plan's bounds."""
    fit = int(plan.budget_s * 1000.0 / max(estimate_ms, 1e-3) / plan.rounds)
    return max(plan.min_runs, min(plan.max_runs // plan.rounds, fit))


def median_ms(fn, plan: Plan) -> tuple[float, int]:
    """Median wall milliseconds of `fn()` after `plan.warmup` calls: `(median, runs)`."""
    warm = call_times(fn, plan.warmup)
    times = call_times(fn, runs_for(warm[-1], plan) * plan.rounds)
    return float(np.median(times)), len(times)


def forward_flops(config: dict, class_token_only: bool = False) -> float:
    """Multiply-add FLOPs (2 per MAC) of one image's forward pass, counted from the shapes.

    Patch projection `2 N (P^2 C) D`; per block the q, k, v and output projections
    `4 * 2 T D^2`, the two attention products `2 * 2 T^2 D`, the MLP `2 * 2 T D M`; the head
    `2 D K`. LayerNorm, softmax, GELU and additions (O(T D) each) are left out: under 1 %.
    `class_token_only`: the last block computes one query row (as ours do, not the peers):
    `2 * 2 T D^2` for keys and values, `2 * 2 D^2` for query and output, `2 * 2 T D`, `4 D M`.
    """
    size, patch = config["image_size"], config["patch_size"]
    n = (size // patch) ** 2
    t, d, m = n + 1, config["hidden_size"], config["mlp_dim"]
    block = 8 * t * d * d + 4 * t * t * d + 4 * t * d * m
    last = block
    if class_token_only:
        last = 4 * t * d * d + 4 * d * d + 4 * t * d + 4 * d * m
    patches = 2 * n * patch * patch * 3 * d
    blocks = (config["num_layers"] - 1) * block + last
    return float(patches + blocks + 2 * d * config["num_classes"])


def computes_class_token_only(impl: str) -> bool:
    """Whether an inference row is ours: `predict_function` and the TFLite files compute the
    last block for the class token only."""
    return impl.startswith(("keras-vit", "tflite"))


def vit(config: dict, seed: int = 0, **overrides):
    """Our model with random weights, including a random head (a fresh head is all zeros)."""
    import keras_vit

    model = keras_vit.ViT(**{**config, **overrides}, seed=seed)
    rng = np.random.default_rng(seed)
    encoder = model.get_layer("patch_encoder")
    for variable in (*model.get_layer("head").weights, encoder.class_token):
        variable.assign(rng.normal(0.0, 0.02, variable.shape).astype("float32"))
    return model


def row(section: str, model: str, impl: str, **values) -> dict:
    return {"section": section, "model": model, "impl": impl, "status": "ok", **values}


def unavailable(section: str, model: str, impl: str, reason: str, **values) -> dict:
    return {
        "section": section,
        "model": model,
        "impl": impl,
        "status": "unavailable",
        "reason": reason,
        **values,
    }


# === Inference ===


def interleaved_rows(
    name: str, impls: dict, plan: Plan, section: str = "inference", extra=None
) -> list:
    """Times every implementation at every batch size in alternating rounds.

    `impls` maps a row name to `timer(batch, runs)` returning call times in ms (runs=0 warms
    up). Round after round each implementation runs its share of the calls, so that a
    change of machine load during the run touches every implementation alike.
    """
    rows = []
    for batch in plan.batches:
        times = {impl: [] for impl in impls}
        estimate = {}
        for impl, timer in impls.items():
            warm = timer(batch, plan.warmup)
            estimate[impl] = runs_for(warm[-1], plan) if warm else plan.min_runs
        for _ in range(plan.rounds):
            for impl, timer in impls.items():
                times[impl] += timer(batch, estimate[impl])
        for impl, values in times.items():
            rows.append(
                row(
                    section,
                    name,
                    impl,
                    batch=batch,
                    threads=plan.threads,
                    median_ms=float(np.median(values)),
                    runs=len(values),
                    **(extra or {}).get(impl, {}),
                )
            )
    return rows


def keras_timer(predict, check: np.ndarray):
    def timer(batch: int, runs: int) -> list[float]:
        x = np.repeat(check[:1], batch, axis=0)
        return call_times(lambda: predict(x), runs)

    return timer


def tflite_rows(name: str, model, config: dict, plan: Plan, calibration: np.ndarray) -> list:
    from export import tflite
    from export.classifier import PixelClassifier
    from export.runtime import Classifier

    classifier = PixelClassifier(model, [127.5] * 3, [127.5] * 3)
    rows = []
    with tempfile.TemporaryDirectory(prefix="keras_vit_bench_") as tmp:
        for quantization in TFLITE_QUANTIZATIONS:
            started = time.perf_counter()
            content = tflite.convert(classifier, quantization, calibration)
            convert_s = time.perf_counter() - started
            path = Path(tmp) / f"{quantization}.tflite"
            path.write_bytes(content)
            image = calibration[0]
            for threads in plan.lite_threads:
                runner = Classifier(path, num_threads=threads)
                runner.interpreter.set_tensor(runner.input["index"], runner._prepare(image))
                for batch in plan.batches:

                    def invoke(batch=batch, runner=runner):
                        for _ in range(batch):
                            runner.interpreter.invoke()

                    ms, runs = median_ms(invoke, plan)
                    rows.append(
                        row(
                            "inference",
                            name,
                            f"tflite {quantization}",
                            batch=batch,
                            threads=threads,
                            median_ms=ms,
                            runs=runs,
                            size_mb=round(len(content) / 2**20, 2),
                            convert_s=round(convert_s, 1),
                        )
                    )
    return rows


def keras_hub_available() -> str | None:
    try:
        import keras_hub  # noqa: F401
    except Exception as error:  # ImportError, or a broken optional install
        return f"keras-hub not importable ({type(error).__name__}: {error}); run make bench-peers"
    return None


def keras_hub_model(ours):
    """keras-hub's `ViTImageClassifier` of `ours`'s configuration with `ours`'s weights."""
    import keras_hub

    height, width = ours.image_size
    heads, width_d = ours.num_heads, ours.hidden_size
    head_dim = width_d // heads
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(height, width, 3),
        patch_size=ours.patch_size,
        num_layers=ours.num_layers,
        num_heads=heads,
        hidden_dim=width_d,
        mlp_dim=ours.mlp_dim,
        layer_norm_epsilon=ours.layer_norm_epsilon,
    )
    model = keras_hub.models.ViTImageClassifier(backbone, num_classes=ours.num_classes)
    get = {w.path: w for w in model.weights}

    def put(path: str, value) -> None:
        target = get[path]
        target.assign(np.asarray(value, np.float32).reshape(target.shape))

    def value(variable):
        return np.asarray(variable.numpy())

    encoder = ours.get_layer("patch_encoder")
    put("vit_patching_and_embedding/class_token", value(encoder.class_token))
    put("vit_patching_and_embedding/patch_embedding/kernel", value(encoder.projection.kernel))
    put("vit_patching_and_embedding/patch_embedding/bias", value(encoder.projection.bias))
    put(
        "vit_patching_and_embedding/position_embedding/embeddings",
        value(encoder.position_embedding)[0],
    )
    for i in range(ours.num_layers):
        block = ours.get_layer(f"encoderblock_{i}")
        prefix = f"vit_encoder/transformer_block_{i + 1}"
        attention = block.attention
        for ln_ours, ln_hub in ((block.norm1, "ln_1"), (block.norm2, "ln_2")):
            put(f"{prefix}/{ln_hub}/gamma", value(ln_ours.gamma))
            put(f"{prefix}/{ln_hub}/beta", value(ln_ours.beta))
        for dense in ("query", "key", "value"):
            layer = getattr(attention, dense)
            put(f"{prefix}/mha/{dense}/kernel", value(layer.kernel))
            put(f"{prefix}/mha/{dense}/bias", value(layer.bias).reshape(heads, head_dim))
        put(f"{prefix}/mha/attention_output/kernel", value(attention.out.kernel))
        put(f"{prefix}/mha/attention_output/bias", value(attention.out.bias))
        for ours_dense, hub_dense in ((block.mlp_dense1, "dense_1"), (block.mlp_dense2, "dense_2")):
            put(f"{prefix}/mlp/{hub_dense}/kernel", value(ours_dense.kernel))
            put(f"{prefix}/mlp/{hub_dense}/bias", value(ours_dense.bias))
    norm = ours.get_layer("encoder_norm")
    put("vit_encoder/ln/gamma", value(norm.gamma))
    put("vit_encoder/ln/beta", value(norm.beta))
    head = ours.get_layer("head")
    put("predictions/kernel", value(head.kernel))
    put("predictions/bias", value(head.bias))
    return model


def keras_hub_timer(ours, check: np.ndarray):
    """`(timer, max |logit difference|)` of keras-hub's ViT with `ours`'s weights.

    keras-hub's MLP uses the exact (erf) GELU; it is compared with ours in that form.
    """
    import tensorflow as tf

    from export.classifier import rebuild

    reference = rebuild(ours, gelu="erf")
    hub = keras_hub_model(reference)
    diff = float(np.abs(hub.predict_on_batch(check) - reference.predict_on_batch(check)).max())
    forward = tf.function(lambda x: hub(x, training=False))

    def timer(batch: int, runs: int) -> list[float]:
        x = tf.constant(np.repeat(check[:1], batch, axis=0))
        return call_times(lambda: forward(x).numpy(), runs)

    return timer, diff


# === Peers in the peer interpreter ===


def peer_python(path: str | None) -> tuple[str | None, str | None]:
    """`(interpreter, None)` or `(None, reason)`."""
    candidate = Path(path) if path else DEFAULT_PEER_PYTHON
    if not candidate.exists():
        return None, f"no peer interpreter at {candidate} (make bench-peers creates it)"
    probe = subprocess.run(
        [str(candidate), "-c", "import timm, torch"], capture_output=True, text=True, timeout=300
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        return None, f"timm/torch do not import in {candidate}: {last}"
    return str(candidate), None


class PeerError(RuntimeError):
    """The peer interpreter failed a command."""


class Peer:
    """A server in the peer interpreter: `script --serve THREADS`, by default the timm one
    (`benchmarks/peer_timm.py`); `benchmarks/peers.py` runs `peer_onnx.py` with it."""

    def __init__(self, python: str, threads: int, log: Path, script: Path = PEER_SCRIPT):
        self._log = open(log, "w")  # closed in close()
        self.process = subprocess.Popen(
            [python, str(script), "--serve", str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.log = log

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            tail = self.log.read_text().strip().splitlines() or ["no output"]
            raise PeerError(f"peer interpreter exited: {tail[-1]}")
        answer = json.loads(line)
        if "error" in answer:
            raise PeerError(answer["error"])
        return answer

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        self._log.close()


def timm_timer(peer: Peer, key: str):
    def timer(batch: int, runs: int) -> list[float]:
        if runs == 0:
            return []
        return peer.ask(cmd="time", key=key, batch=batch, runs=runs, warmup=0)["times_ms"]

    return timer


def timm_config(config: dict) -> dict:
    keys = (
        "image_size",
        "patch_size",
        "hidden_size",
        "num_layers",
        "num_heads",
        "mlp_dim",
        "num_classes",
    )
    return {k: config[k] for k in keys}


# === Training ===


CLASS_TOKEN_TRAINING = "keras-vit (XLA, train_class_token_only)"
"""The training row of a model built with `train_class_token_only=True` (an opt-in: the last
block trains on the class token alone; timm's rows compute every token)."""


def digits_training_data(image_size: int, limit: int | None = None):
    from keras_vit import data

    images, labels = data.digits_arrays("train", image_size)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return ((images.astype(np.float32) - 127.5) / 127.5), labels.astype(np.int32)


class StepTimer:
    """A Keras callback that records the wall time of every training step (ms)."""

    def __new__(cls):
        import keras

        class _Timer(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                self._start = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append((time.perf_counter() - self._start) * 1000.0)

        timer = _Timer()
        timer.times = []
        return timer


def compile_for_training(model, jit_compile) -> None:
    """What every Keras training row trains with: Adam(1e-3), sparse cross entropy on logits
    (timm's rows: the same, in `peer_timm.py`)."""
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )


def keras_fit_timer(model, images, labels, plan: Plan, jit_compile):
    """Timer of `model.fit` steps on in-memory batches (Adam, cross entropy)."""
    import tensorflow as tf

    compile_for_training(model, jit_compile)
    dataset = (
        tf.data.Dataset.from_tensor_slices((images, labels))
        .repeat()
        .batch(plan.train_batch, drop_remainder=True)
        .prefetch(2)
    )

    def timer(batch: int, runs: int) -> list[float]:
        recorder = StepTimer()
        # One extra first step per call: it also builds the iterator.
        model.fit(dataset, steps_per_epoch=runs + 1, epochs=1, verbose=0, callbacks=[recorder])
        return recorder.times[1:]

    return timer


def training_rows(plan: Plan, peer: Peer | None, peer_reason: str | None, tmp: Path) -> list:
    from keras_vit import checkpoints

    rows = []
    saved = plan.batches
    plan.batches = (plan.train_batch,)
    try:
        for name, config in plan.training.items():
            images, labels = digits_training_data(config["image_size"], plan.train_batch * 8)
            impls = {
                "keras-vit (TF graph)": keras_fit_timer(vit(config), images, labels, plan, False),
                "keras-vit (XLA)": keras_fit_timer(vit(config), images, labels, plan, True),
                CLASS_TOKEN_TRAINING: keras_fit_timer(
                    vit(config, train_class_token_only=True), images, labels, plan, True
                ),
            }
            missing = []
            reason = keras_hub_available()
            if reason:
                missing.append(("keras-hub", reason))
            else:
                hub = keras_hub_model(vit(config, gelu="erf"))
                impls["keras-hub"] = keras_fit_timer(hub, images, labels, plan, False)
            if peer is not None:
                key = "train_" + name.replace("/", "_").replace(" ", "_")
                np.save(tmp / f"{key}_x.npy", images)
                np.save(tmp / f"{key}_y.npy", labels)
                npz = checkpoints.save_npz(vit(config), tmp / f"{key}.npz", overwrite=True)
                spec = dict(
                    cmd="train",
                    key=key,
                    config=timm_config(config),
                    npz=str(npz),
                    images=str(tmp / f"{key}_x.npy"),
                    labels=str(tmp / f"{key}_y.npy"),
                    batch=plan.train_batch,
                    learning_rate=1e-3,
                )

                def timm_train(batch, runs, spec=spec):
                    return peer.ask(**spec, steps=max(runs, 1), warmup=0)["times_ms"]

                impls["timm"] = timm_train
            else:
                missing.append(("timm", peer_reason or "no peer interpreter"))
            # Backward ~ twice the forward. `model.fit` trains the full last block, except in
            # the opt-in row.
            flops = 3 * forward_flops(config)
            for r in interleaved_rows(name, impls, plan, section="training"):
                opt_in = r["impl"] == CLASS_TOKEN_TRAINING
                r["train_flops_per_image"] = 3 * forward_flops(config, class_token_only=opt_in)
                r["step_ms"] = r.pop("median_ms")
                r["images_per_s"] = plan.train_batch / (r["step_ms"] / 1000.0)
                rows.append(r)
            for impl, why in missing:
                rows.append(
                    unavailable(
                        "training",
                        name,
                        impl,
                        why,
                        batch=plan.train_batch,
                        threads=plan.threads,
                        train_flops_per_image=flops,
                    )
                )
    finally:
        plan.batches = saved
    return rows


# === int8 ===


def train_digits(plan: Plan):
    """The bench ViT 32px, trained `plan.digits_epochs` epochs; `(model, test images, labels)`."""
    import keras

    from keras_vit import data

    images, labels = digits_training_data(plan.digits["image_size"])
    model = vit(plan.digits, seed=1)
    for variable in model.get_layer("head").weights:  # train from the original zero head
        variable.assign(np.zeros(variable.shape, np.float32))
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(images, labels, batch_size=32, epochs=plan.digits_epochs, verbose=0)
    test_images, test_labels = data.digits_arrays("test", plan.digits["image_size"])
    return model, test_images, test_labels


def int8_section(plan: Plan, tiny_model=None) -> dict:
    """Digits int8 accuracy and latency before / after, and per-op profiles."""
    from export import analysis, profile, tflite, tflite_reader
    from export.classifier import PixelClassifier
    from export.convert import SavedModels
    from keras_vit import data
    from keras_vit.run_dir import preprocessing_spec

    model, test_images, test_labels = train_digits(plan)
    preprocessing = preprocessing_spec(model.image_size)
    reference = tflite.keras_probabilities(model, test_images, preprocessing)
    calibration, _ = data.digits_arrays("train", plan.digits["image_size"])
    calibration = calibration[np.random.default_rng(0).permutation(len(calibration))[:256]]
    classifier = PixelClassifier(model, preprocessing["mean"], preprocessing["std"])
    variants = {
        "float32": ("float32", True),
        "int8 before": ("int8", False),
        "int8 after": ("int8", True),
        "int8_cpu": ("int8_cpu", True),
    }
    out = {
        "keras_accuracy": float((reference.argmax(1) == test_labels).mean()),
        "test_images": len(test_images),
        "files": {},
        "profiles": {},
    }
    contents = {}
    with tempfile.TemporaryDirectory(prefix="keras_vit_bench_int8_") as tmp:
        saved_models = SavedModels(tmp)  # each graph's SavedModel, written once
        for label, (quantization, symmetric) in variants.items():
            content = tflite.convert(
                classifier, quantization, calibration, symmetric, saved_models=saved_models
            )
            contents[("bench ViT 32px", label)] = content
            path = Path(tmp) / f"{label.replace(' ', '_')}.tflite"
            path.write_bytes(content)
            runs = max(plan.max_runs, 50) if not plan.quick else 2
            entry = tflite.evaluate_file(
                path, test_images, test_labels, reference, plan.lite_threads, runs
            )
            floats = analysis.float_compute_ops(tflite_reader.read_summary(content))
            entry["float_compute_ops"] = len(floats)
            entry["float_compute_op_names"] = sorted({op.name for op in floats})
            entry["delegate_partitions"] = profile.delegate_partitions(content)
            entry["size_kib"] = round(len(content) / 1024, 1)
            out["files"][label] = entry
        for name in plan.profile_models:
            config = plan.models.get(name) or plan.training.get(name)
            big = PixelClassifier(vit(config), [127.5] * 3, [127.5] * 3)
            calib, _ = data.digits_arrays("train", config["image_size"])
            calib = calib[: plan.calibration_images]
            for label, (quantization, symmetric) in variants.items():
                contents[(name, label)] = tflite.convert(
                    big, quantization, calib, symmetric, saved_models=saved_models
                )
    for (name, label), content in contents.items():
        report = profile.profile_model(content, 1, plan.profile_runs)
        report.pop("ops")
        out["profiles"].setdefault(name, {})[label] = report
    return out


# === Report ===


def add_rates(rows: list, plan: Plan, mach: dict) -> None:
    """GFLOP/s and share of the peak for every timed row."""
    configs = {**plan.models, **plan.training, "bench ViT 32px": plan.digits}
    for r in rows:
        if r["status"] not in ("ok", "mismatch"):
            continue
        config = configs[r["model"]]
        threads = r.get("threads", plan.threads)
        int8 = r["impl"] in ("tflite int8", "tflite int8_cpu", "tflite dynamic")
        peak = mach["peak_int8_gops_per_core"] if int8 else mach["peak_fp32_gflops_per_core"]
        if r["section"] == "inference":
            flops = forward_flops(config, computes_class_token_only(r["impl"])) * r["batch"]
            rate = flops / (r["median_ms"] / 1000.0) / 1e9
        else:
            rate = r["train_flops_per_image"] * r["images_per_s"] / 1e9
        r["gflops_per_s"] = round(rate, 2)
        r["peak_basis"] = mach["int8_basis"] if int8 else "fp32 FMA"
        r["percent_of_peak"] = round(100 * rate / (peak * threads), 1) if peak else None


def add_ratios(rows: list) -> None:
    """Latency (or images/s) of each row against timm's in the same run."""
    timm = {
        (r["section"], r["model"], r.get("batch")): r
        for r in rows
        if r["impl"] == "timm" and r["status"] == "ok"
    }
    for r in rows:
        base = timm.get((r["section"], r["model"], r.get("batch")))
        if base is None or r["status"] not in ("ok", "mismatch"):
            continue
        if r["section"] == "inference":
            r["vs_timm"] = round(r["median_ms"] / base["median_ms"], 3)
        else:
            r["vs_timm"] = round(r["images_per_s"] / base["images_per_s"], 3)


def targets(rows: list, int8: dict, plan: Plan) -> list:
    from export.tflite import FLOAT_ISLAND_OPS

    found = []
    model = "B/16" if "B/16" in plan.models else next(iter(plan.models))
    keras_b1 = [
        r
        for r in rows
        if r["section"] == "inference"
        and r["model"] == model
        and r.get("batch") == 1
        and r["impl"].startswith("keras-vit")
        and "vs_timm" in r
    ]
    target = f"Keras {model} batch-1 latency <= 0.9x timm's"
    if keras_b1:
        best = min(keras_b1, key=lambda r: r["vs_timm"])
        found.append(
            {
                "target": target,
                "value": best["vs_timm"],
                "by": best["impl"],
                "met": best["vs_timm"] <= 0.9,
            }
        )
    else:
        found.append({"target": target, "value": None, "met": None, "by": "timm unavailable"})
    for threads in plan.lite_threads:
        for name in plan.models:
            lat = {
                r["impl"]: r["median_ms"]
                for r in rows
                if r["model"] == name
                and r.get("batch") == 1
                and r.get("threads") == threads
                and r["impl"].startswith("tflite")
            }
            for quantization in INT8_FILES:
                impl = f"tflite {quantization}"
                if impl in lat and "tflite float32" in lat:
                    ratio = lat[impl] / lat["tflite float32"]
                    found.append(
                        {
                            "target": f"{name} {quantization} TFLite <= 0.5x float32 "
                            f"({threads} thread)",
                            "value": round(ratio, 3),
                            "met": ratio <= 0.5,
                        }
                    )
    files = int8["files"]
    for label in ("int8 after", "int8_cpu"):
        for threads in plan.lite_threads:
            key = str(threads)
            ratio = files[label]["latency_ms"][key] / files["float32"]["latency_ms"][key]
            quantization = label.split()[0]
            found.append(
                {
                    "target": f"bench ViT 32px {quantization} TFLite <= 0.5x float32 "
                    f"({threads} thread)",
                    "value": round(ratio, 3),
                    "met": ratio <= 0.5,
                }
            )
    for label, floats in (("int8 after", "0 float ops"), ("int8_cpu", "float only in islands")):
        entry = files[label]
        drop = int8["keras_accuracy"] - entry["accuracy"]
        islands = set(entry["float_compute_op_names"]) <= {
            *FLOAT_ISLAND_OPS,
            "DEQUANTIZE",
            "QUANTIZE",
        }
        found.append(
            {
                "target": f"digits {label.split()[0]}: agreement >= 99 %, accuracy drop "
                f"<= 0.5 pt, {floats}",
                "value": f"{100 * entry['top1_agreement']:.2f} %, {100 * drop:+.2f} pt, "
                f"{entry['float_compute_ops']} float ops",
                "met": entry["top1_agreement"] >= 0.99
                and drop <= 0.005
                and (entry["float_compute_ops"] == 0 if label == "int8 after" else islands),
            }
        )
    for name in plan.training:
        ours = [
            r
            for r in rows
            if r["section"] == "training"
            and r["model"] == name
            and r["impl"].startswith("keras-vit")
            and "vs_timm" in r
        ]
        target = f"{name} training images/s >= 1.2x timm's"
        if ours:
            best = max(ours, key=lambda r: r["vs_timm"])
            found.append(
                {
                    "target": target,
                    "value": best["vs_timm"],
                    "by": best["impl"],
                    "met": best["vs_timm"] >= 1.2,
                }
            )
        else:
            found.append({"target": target, "value": None, "met": None, "by": "timm unavailable"})
    return found


def _fmt(value, digits=2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# keras-vit benchmark"
        + (" (quick smoke run: tiny configs, not figures)" if results["quick"] else ""),
        "",
        f"`{results['command']}` on {results['date']}",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores, {m['ghz']:.2f} GHz, "
        f"flags: {', '.join(m['flags'])}",
        f"- threads: TensorFlow and PyTorch {m['threads']} (intra-op; inter-op 1); LiteRT as "
        "listed",
        f"- peak: {m['peak_fp32_gflops_per_core']} GFLOP/s fp32 and "
        f"{m['peak_int8_gops_per_core']} GOP/s int8 per core. {m['peak_note']}",
        "- GFLOP/s count the multiply-adds each implementation performs: at inference our "
        "Keras forward (`keras_vit.inference`) and TFLite files compute the last block for the "
        "class token only (the head reads nothing else), keras-hub and timm for every token, "
        "so the same latency means fewer GFLOP/s for ours; training (`model.fit`) computes "
        "the full block everywhere except in the opt-in "
        f"`{CLASS_TOKEN_TRAINING}` row (a model built with `train_class_token_only=True`)",
        f"- versions: {', '.join(f'{k} {v}' for k, v in results['versions'].items() if v)}",
        f"- load average (1/5/15 min) at start {results['load_average']['start']}, at end "
        f"{results['load_average']['end']}; waited {results['idle']['waited_s']} s for an idle "
        f"machine (idle: {results['idle']['idle']})",
        "",
        "## Targets",
        "",
        "| target | value | met |",
        "|---|---|---|",
    ]
    for t in results["targets"]:
        by = f" ({t['by']})" if t.get("by") else ""
        met = "n/a" if t["met"] is None else ("yes" if t["met"] else "NO")
        lines.append(f"| {t['target']} | {_fmt(t['value'], 3)}{by} | {met} |")
    lines += [
        "",
        "## Inference latency (median ms per batch)",
        "",
        "| model | impl | batch | threads | ms | × timm | GFLOP/s | % peak | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        if r["section"] != "inference":
            continue
        if r["status"] == "unavailable":
            lines.append(
                f"| {r['model']} | {r['impl']} | {r['batch']} | {r['threads']} | "
                f"unavailable: {r['reason']} | | | | |"
            )
            continue
        note = " (logits differ!)" if r["status"] == "mismatch" else ""
        lines.append(
            f"| {r['model']} | {r['impl']}{note} | {r['batch']} | {r['threads']} | "
            f"{_fmt(r['median_ms'])} | {_fmt(r.get('vs_timm'), 3)} | {_fmt(r['gflops_per_s'], 1)}"
            f" | {_fmt(r['percent_of_peak'], 1)} ({r['peak_basis']}) | {r['runs']} |"
        )
    lines += [
        "",
        "TFLite files have a static batch of 1: batch N is N invokes. Peers' logits "
        "agree with ours before timing: "
        + ", ".join(
            f"{c['model']} {c['impl']} {c['max_abs_logit_diff']:.1e}" for c in results["checks"]
        ),
        "",
    ]
    lines += [
        "## Training throughput",
        "",
        "| model | impl | batch | images/s | × timm | step ms | GFLOP/s | % peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        if r["section"] != "training":
            continue
        if r["status"] == "unavailable":
            lines.append(
                f"| {r['model']} | {r['impl']} | {r['batch']} | unavailable: "
                f"{r['reason']} | | | | |"
            )
            continue
        lines.append(
            f"| {r['model']} | {r['impl']} | {r['batch']} | {_fmt(r['images_per_s'], 1)} | "
            f"{_fmt(r.get('vs_timm'), 3)} | {_fmt(r['step_ms'], 1)} | "
            f"{_fmt(r['gflops_per_s'], 1)} | {_fmt(r['percent_of_peak'], 1)} |"
        )
    int8 = results["int8"]
    lines += [
        "",
        "## int8 on LiteRT: bench ViT 32px (trained here), before / after the matmul ranges, "
        "and int8_cpu",
        "",
        f"Keras accuracy {100 * int8['keras_accuracy']:.2f} % on {int8['test_images']} "
        "test images.",
        "",
        "| file | KiB | float ops | XNNPACK partitions | agreement | accuracy | "
        "ms 1 thread | ms 2 threads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, e in int8["files"].items():
        lat = e["latency_ms"]
        lines.append(
            f"| {label} | {e['size_kib']} | {e['float_compute_ops']} | "
            f"{e['delegate_partitions']} | {100 * e['top1_agreement']:.2f} % | "
            f"{100 * e['accuracy']:.2f} % | {lat['1']:.3f} | {lat.get('2', float('nan')):.3f} |"
        )
    for name, profiles in int8["profiles"].items():
        lines += ["", f"### Per-op profile: {name} (1 thread, standalone op latency, ms)", ""]
        labels = list(profiles)
        ops = sorted(
            {row["op"] for p in profiles.values() for row in p["by_op"]},
            key=lambda op: (
                -max(
                    next((r["ms"] for r in p["by_op"] if r["op"] == op), 0)
                    for p in profiles.values()
                )
            ),
        )
        lines.append("| op | " + " | ".join(f"{lb}: count, XNNPACK, ms" for lb in labels) + " |")
        lines.append("|---|" + "---|" * len(labels))
        for op in ops:
            cells = []
            for lb in labels:
                found = [r for r in profiles[lb]["by_op"] if r["op"] == op]
                cells.append(
                    f"{found[0]['count']}, {found[0]['delegated']}, {found[0]['ms']:.3f}"
                    if found
                    else "-"
                )
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
        lines.append(
            "| **whole model** | "
            + " | ".join(
                f"{p['model_ms']:.3f} ms, {p['delegate_partitions']} partitions"
                for p in profiles.values()
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


# === Main ===


def inference_rows(name: str, config: dict, plan: Plan, peer, peer_reason, tmp: Path):
    """Every inference row of one model, and the logit checks of the peers."""
    from keras_vit import checkpoints, data
    from keras_vit.inference import predict_function

    calibration, _ = data.digits_arrays("train", config["image_size"])
    calibration = calibration[: plan.calibration_images]
    check = ((calibration[:2].astype(np.float32) - 127.5) / 127.5).astype(np.float32)
    model = vit(config)
    ours = np.asarray(model.predict_on_batch(check))
    impls = {
        "keras-vit (TF graph)": keras_timer(predict_function(model, jit_compile=False), check),
        "keras-vit (XLA)": keras_timer(predict_function(model, jit_compile=True), check),
    }
    checks, extra, missing = [], {}, []
    reason = keras_hub_available()
    if reason:
        missing.append(("keras-hub", reason))
    else:
        impls["keras-hub"], diff = keras_hub_timer(model, check)
        checks.append({"model": name, "impl": "keras-hub", "max_abs_logit_diff": diff})
        extra["keras-hub"] = {"max_abs_logit_diff": diff}
    if peer is not None:
        key = name.replace("/", "_")
        npz = checkpoints.save_npz(model, tmp / f"{key}.npz", overwrite=True)
        np.save(tmp / f"{key}_check.npy", check)
        answer = peer.ask(
            cmd="load",
            key=key,
            config=timm_config(config),
            npz=str(npz),
            check_input=str(tmp / f"{key}_check.npy"),
        )
        diff = float(np.abs(np.asarray(answer["outputs"]) - ours).max())
        checks.append({"model": name, "impl": "timm", "max_abs_logit_diff": diff})
        extra["timm"] = {"max_abs_logit_diff": diff}
        impls["timm"] = timm_timer(peer, key)
    else:
        missing.append(("timm", peer_reason or "no peer interpreter"))
    rows = interleaved_rows(name, impls, plan, extra=extra)
    for r in rows:
        if r.get("max_abs_logit_diff", 0.0) >= LOGIT_TOLERANCE:
            r["status"] = "mismatch"
    for impl, why in missing:
        rows += [
            unavailable("inference", name, impl, why, batch=b, threads=plan.threads)
            for b in plan.batches
        ]
    rows += tflite_rows(name, model, config, plan, calibration)
    return rows, checks


def run(plan: Plan, peer_python_path: str | None, wait_idle_s: float, command: str) -> dict:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(plan.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    keras.utils.set_random_seed(0)  # the benchmark is a script: fixed weights for every run
    idle = wait_for_idle(wait_idle_s) if wait_idle_s > 0 else {"waited_s": 0, "idle": None}
    load_start = [round(v, 2) for v in os.getloadavg()]
    mach = machine(plan.threads)
    python, peer_reason = peer_python(peer_python_path)
    rows, checks, vers = [], [], versions()
    with tempfile.TemporaryDirectory(prefix="keras_vit_bench_peer_") as tmp_name:
        tmp = Path(tmp_name)
        peer = Peer(python, plan.threads, tmp / "peer.log") if python else None
        try:
            if peer is not None:
                vers.update(peer.ask(cmd="versions"))
            for name, config in plan.models.items():
                model_rows, model_checks = inference_rows(
                    name, config, plan, peer, peer_reason, tmp
                )
                rows += model_rows
                checks += model_checks
            rows += training_rows(plan, peer, peer_reason, tmp)
        finally:
            if peer is not None:
                peer.close()
    int8 = int8_section(plan)
    add_rates(rows, plan, mach)
    add_ratios(rows)
    return {
        "command": command,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": plan.quick,
        "machine": mach,
        "versions": vers,
        "idle": idle,
        "load_average": {"start": load_start, "end": [round(v, 2) for v in os.getloadavg()]},
        "rows": rows,
        "checks": checks,
        "int8": int8,
        "targets": targets(rows, int8, plan),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/run.py",
        description="Benchmark keras-vit against keras-hub and timm (latency, training, int8).",
    )
    parser.add_argument("--quick", action="store_true", help="tiny configs: a smoke test")
    parser.add_argument("--output", default="results.json", help="JSON path; Markdown beside it")
    parser.add_argument("--force", action="store_true", help="overwrite existing outputs")
    parser.add_argument(
        "--peer-python",
        default=None,
        help=f"interpreter with torch + timm (default {DEFAULT_PEER_PYTHON})",
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="TensorFlow / PyTorch threads (default: %(default)s)"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        help="wait up to this many seconds for an idle machine first",
    )
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    output = Path(args.output)
    markdown_path = output.with_suffix(".md")
    if output.suffix != ".json":
        print(f"error: --output must end in .json, got {output}", file=sys.stderr)
        return 1
    if args.threads < 1:
        print(f"error: --threads must be at least 1, got {args.threads}", file=sys.stderr)
        return 1
    existing = [p for p in (output, markdown_path) if p.exists()]
    if existing and not args.force:
        print(f"error: {existing[0]} already exists; pass --force to overwrite it", file=sys.stderr)
        return 1
    command = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    plan = make_plan(args.quick, args.threads)
    results = run(plan, args.peer_python, args.wait_idle, command.strip())
    from keras_vit.atomic import atomic_write_json, atomic_write_text

    atomic_write_json(output, results)
    atomic_write_text(markdown_path, markdown(results))
    print(markdown(results))
    print(f"Wrote {output} and {markdown_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
