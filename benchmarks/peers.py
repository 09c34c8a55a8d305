"""ONNX Runtime and OpenVINO rows beside ours in `benchmarks/fidelity.py --peers PEER_PYTHON`.

The peers live in their own interpreter (`make bench-peers` builds `.venv-peers`), never in
keras-vit's dependencies. For each model, `Peers.load` writes our weights with
`keras_vit.checkpoints.save_npz`, hands them to `peer_onnx.py` in that interpreter (timm
loads them, exports ONNX, and ONNX Runtime / OpenVINO / NNCF make fp32, bf16 and int8 from
it with the same calibration inputs as our int8 files), and turns the peers' logits on the
same held-out inputs into the rows of `fidelity.py`: the `export.fidelity` figures against
our float Keras model, the largest absolute logit difference from it, and the median
batch-1 latency at 1 and 2 threads (`Peers.latency_ms`, timed when `fidelity.py` times its
own files, in the same rounds).
"""

from __future__ import annotations

import functools
import statistics
import subprocess
from pathlib import Path

import numpy as np
from peer_onnx import RUNTIMES  # beside this file; no TensorFlow or torch import
from run import Peer, timm_config

PEER_SCRIPT = Path(__file__).resolve().with_name("peer_onnx.py")
PEER_MODULES = ("torch", "timm", "onnx", "onnxruntime", "openvino", "nncf")
THREADS = (1, 2)
FLOAT_RUNTIMES = ("timm", "onnxruntime fp32", "openvino fp32")
"""Whose logits must equal ours up to float rounding: the fp32 equivalence check."""
TIMM_STANDARD = {  # our ViT options that `peer_timm.build` assumes
    "pooling": "token",
    "representation_size": None,
    "gelu": "tanh",
    "layer_norm_epsilon": 1e-6,
    "include_preprocessing": False,
    "resnet_layers": None,
    "num_channels": 3,
}


def unavailable(python: str) -> str | None:
    """Why `python` cannot run the peer rows (one line), or None when it can."""
    if not Path(python).is_file():
        return f"--peers: no interpreter at {python} (make bench-peers creates .venv-peers)"
    probe = subprocess.run(
        [python, "-c", f"import {', '.join(PEER_MODULES)}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        return f"--peers: {python} cannot import {', '.join(PEER_MODULES)}: {last}"
    return None


def check_standard(name: str, config: dict) -> None:
    """Raises ValueError unless our ViT `config` is the one `peer_timm.build` rebuilds."""
    for option, value in TIMM_STANDARD.items():
        if config[option] != value:
            raise ValueError(
                f"{name}: timm's ViT of peer_timm.py needs {option}={value!r}. "
                f"Received: {option}={config[option]!r}"
            )


def rows(
    name: str, reference: np.ndarray, logits: dict[str, np.ndarray]
) -> tuple[list[dict], list[dict]]:
    """`(rows, checks)` of one model from the peers' logits; each row's `latency_ms` is
    None until `fidelity.py`'s `latency_ms` fills it in.

    Args:
        name: the model's name in the table.
        reference: our float Keras model's logits `(N, K)` on the held-out inputs.
        logits: `{runtime: (N, K) logits}` on the same inputs, for every runtime of
            `RUNTIMES` and for `"timm"` (the PyTorch model the ONNX file was exported from).

    Returns:
        One row per runtime (the fields of `fidelity.py`'s rows and `max_abs_logit_diff`),
        and the fp32 equivalence checks `{"model", "impl", "max_abs_logit_diff"}` of
        `FLOAT_RUNTIMES`.
    """
    from export import fidelity

    def diff(runtime: str) -> float:
        return float(np.abs(np.asarray(logits[runtime], np.float64) - reference).max())

    out = []
    for runtime in RUNTIMES:
        figures = fidelity.fidelity(reference, logits[runtime])
        out.append(
            {
                "model": name,
                "file": runtime,
                "variant": "-",
                **{k: round(v, 4) for k, v in figures.items()},
                "latency_ms": None,
                "max_abs_logit_diff": diff(runtime),
            }
        )
    checks = [{"model": name, "impl": r, "max_abs_logit_diff": diff(r)} for r in FLOAT_RUNTIMES]
    return out, checks


class Peers:
    """The `peer_onnx.py` server in the peer interpreter, and the files it reads."""

    def __init__(self, python: str, scratch: Path, script: Path = PEER_SCRIPT):
        self.scratch = scratch
        self.peer = Peer(python, max(THREADS), scratch / "peer_onnx.log", script=script)
        self.bf16 = None

    def versions(self) -> dict:
        return self.peer.ask(cmd="versions")

    def load(
        self, name: str, model, calibration: np.ndarray, held_out: np.ndarray, preprocessing: dict
    ) -> tuple[str, np.ndarray, dict[str, np.ndarray]]:
        """Our `model`'s weights in every peer runtime: `(key, reference, logits)`.

        `calibration` and `held_out` are uint8 images `(N, H, W, 3)`, normalised here with
        `preprocessing` (`mean`, `std`) as our files normalise them; `reference` is our
        float Keras model's logits on `held_out` (`export.tflite_fidelity.keras_logits`),
        `logits` the peers' (`rows`); `key` names the model in `latency_ms`.
        """
        from export.tflite_fidelity import keras_logits
        from keras_vit import checkpoints

        check_standard(name, model.get_config())
        reference = keras_logits(model, held_out, preprocessing)

        key = "".join(c if c.isalnum() else "_" for c in name)
        mean = np.asarray(preprocessing["mean"], np.float32)
        std = np.asarray(preprocessing["std"], np.float32)
        paths = {}
        for part, images in (("calibration", calibration), ("held_out", held_out)):
            paths[part] = str(self.scratch / f"{key}_{part}.npy")
            np.save(paths[part], ((images.astype(np.float32) - mean) / std).astype(np.float32))
        npz = checkpoints.save_npz(model, self.scratch / f"{key}.npz", overwrite=True)
        config = timm_config({**model.get_config(), "image_size": held_out.shape[1]})
        answer = self.peer.ask(
            cmd="load", key=key, config=config, npz=str(npz), workdir=str(self.scratch), **paths
        )
        self.bf16 = answer["bf16"]
        logits = {runtime: np.load(path) for runtime, path in answer["logits"].items()}
        return key, reference, logits

    def latency_ms(self, key: str, runtime: str, threads: int, runs: int) -> float:
        """Median of `runs` timed batch-1 calls of a loaded model in one runtime."""
        times = self.peer.ask(
            cmd="time", key=key, runtime=runtime, threads=threads, runs=runs, warmup=3
        )["times_ms"]
        return round(statistics.median(times), 3)

    def close(self) -> None:
        self.peer.close()


def measure_all(peers: Peers, chosen: dict, preprocessing: dict) -> tuple[list, dict]:
    """The peer rows of every model, without latency, and the `peers` section of the results.

    Args:
        peers: the open peer server.
        chosen: `{name: (keras model, calibration uint8 images, held-out uint8 images)}`.
        preprocessing: `mean` and `std` of our files' normalisation.

    Returns:
        `([(row, timer)], {"versions", "bf16", "checks"})`: `timer(threads, runs)` gives
        the row's median batch-1 milliseconds, for `latency_ms` to fill in.
    """
    out, section = [], {"versions": peers.versions(), "bf16": None, "checks": []}
    for name, (model, calibration, held_out) in chosen.items():
        key, reference, logits = peers.load(name, model, calibration, held_out, preprocessing)
        model_rows, checks = rows(name, reference, logits)
        for row in model_rows:
            out.append((row, functools.partial(peers.latency_ms, key, row["file"])))
        section["checks"] += checks
        section["bf16"] = peers.bf16
    return out, section


def markdown(section: dict) -> str:
    """The notes under `fidelity.py`'s table: versions and the fp32 equivalence checks."""
    versions = ", ".join(f"{k} {v}" for k, v in section["versions"].items())
    lines = [
        "",
        "Peer rows (`--peers`): our `.npz` weights loaded by timm, exported to ONNX and run by",
        "ONNX Runtime and OpenVINO (`benchmarks/peer_onnx.py`) on the same held-out inputs; the",
        "int8 peers calibrated on the same images as our int8 files. OpenVINO fp32 and int8 run",
        "with inference precision f32, bf16 with bf16.",
        f"Versions: {versions}.",
        f"OpenVINO bf16 supported by this CPU: {section['bf16']}.",
        "",
        "fp32 equivalence (largest absolute logit difference from our float Keras model):",
        "",
        "| model | peer | max abs logit diff |",
        "|---|---|---|",
    ]
    for check in section["checks"]:
        lines.append(f"| {check['model']} | {check['impl']} | {check['max_abs_logit_diff']:.2e} |")
    return "\n".join(lines) + "\n"
