"""ONNX Runtime and OpenVINO for `benchmarks/fidelity.py`, run by the peer interpreter.

    .venv-peers/bin/python benchmarks/peer_onnx.py --serve THREADS

The same server protocol as `peer_timm.py` (one JSON object per line each way):
`{"cmd": "load", "key", "config", "npz", "calibration", "held_out", "workdir"}` builds the
timm `VisionTransformer` of `peer_timm.py` with our `.npz` weights, exports it to ONNX
(TorchScript exporter, opset 17, batch 1), makes every runtime of `RUNTIMES` from it and
answers `{"logits": {"timm": path, runtime: path, ...}, "bf16": bool}`: `.npy` files of
each one's logits on the held-out inputs, one input per call;
`{"cmd": "time", "key", "runtime", "threads", "runs", "warmup"}` answers
`{"times_ms": [...]}`, batch-1 calls on the first held-out input at that thread count;
`{"cmd": "versions"}` answers the versions; end of input ends it.

The runtimes, all on the CPU:

- `onnxruntime fp32`: the ONNX file (all graph optimizations);
- `onnxruntime int8 (QDQ)`: `onnxruntime.quantization.quantize_static`, QDQ format, int8
  activations and per-channel int8 weights, MinMax ranges on the calibration inputs, after
  ONNX Runtime's recommended `quant_pre_process`;
- `openvino fp32`: `openvino.convert_model` of the ONNX file, inference precision f32
  (OpenVINO's CPU default is bf16 where the CPU has it);
- `openvino bf16`: the same model with inference precision bf16; where the CPU lacks bf16
  OpenVINO runs f32 instead, and the `bf16` answer of `load` says which;
- `openvino int8 (NNCF)`: `nncf.quantize(..., model_type=nncf.ModelType.TRANSFORMER)` on
  the calibration inputs, the remaining float ops in f32 (as in `openvino fp32`).

Inputs are NHWC float32 `.npy` files, normalised as our models take them; the ONNX graph
takes NCHW. Thread counts: ONNX Runtime `intra_op_num_threads` (1 inter-op thread),
OpenVINO `INFERENCE_NUM_THREADS` with one stream and the latency hint.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from peer_timm import build, load, serve, times_ms  # beside this file

RUNTIMES = (
    "onnxruntime fp32",
    "onnxruntime int8 (QDQ)",
    "openvino fp32",
    "openvino bf16",
    "openvino int8 (NNCF)",
)
OPSET = 17


def nchw(images: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32)


def export_onnx(config: dict, npz: str, path: Path):
    """The timm model with our weights, and its ONNX file at `path` (batch 1)."""
    import torch

    model = build(config).eval()
    load(model, npz)
    size = config["image_size"]
    example = torch.zeros((1, 3, size, size), dtype=torch.float32)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=["pixels"],
        output_names=["logits"],
        opset_version=OPSET,
        dynamo=False,
    )
    return model


def quantize_onnx(source: Path, target: Path, calibration: np.ndarray) -> None:
    """ONNX Runtime's static QDQ int8 of `source` (module docstring) into `target`."""
    from onnxruntime import quantization
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = target.with_name(target.stem + "_prepared.onnx")
    quant_pre_process(str(source), str(prepared))

    class Reader(quantization.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"pixels": x[None]} for x in calibration])

        def get_next(self):
            return next(self.items, None)

    quantization.quantize_static(
        str(prepared),
        str(target),
        Reader(),
        quant_format=quantization.QuantFormat.QDQ,
        per_channel=True,
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
        calibrate_method=quantization.CalibrationMethod.MinMax,
    )


def ort_runner(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"pixels": x})[0]


def openvino_runner(model, precision: str, threads: int):
    import openvino

    compiled = openvino.Core().compile_model(
        model,
        "CPU",
        {
            "INFERENCE_PRECISION_HINT": precision,
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY",
        },
    )
    request = compiled.create_infer_request()
    return lambda x: np.array(request.infer({0: x})[0])


def bf16_supported() -> bool:
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class Server:
    """Holds each model's runtimes (one per thread count) between commands."""

    def __init__(self):
        self.makers = {}  # key -> {runtime: threads -> runner}
        self.runners = {}  # (key, runtime, threads) -> runner
        self.inputs = {}  # key -> the held-out inputs, NCHW

    def runner(self, key: str, runtime: str, threads: int):
        if (key, runtime, threads) not in self.runners:
            self.runners[key, runtime, threads] = self.makers[key][runtime](threads)
        return self.runners[key, runtime, threads]

    def load(self, cmd: dict) -> dict:
        import nncf
        import openvino
        import torch

        key, workdir = cmd["key"], Path(cmd["workdir"])
        calibration = nchw(np.load(cmd["calibration"]))
        held_out = nchw(np.load(cmd["held_out"]))
        fp32 = workdir / f"{key}.onnx"
        model = export_onnx(cmd["config"], cmd["npz"], fp32)
        int8 = workdir / f"{key}_int8.onnx"
        quantize_onnx(fp32, int8, calibration)
        ov_model = openvino.convert_model(str(fp32))
        ov_int8 = nncf.quantize(
            ov_model,
            nncf.Dataset([x[None] for x in calibration]),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=len(calibration),
        )
        self.makers[key] = {
            "onnxruntime fp32": lambda t: ort_runner(fp32, t),
            "onnxruntime int8 (QDQ)": lambda t: ort_runner(int8, t),
            "openvino fp32": lambda t: openvino_runner(ov_model, "f32", t),
            "openvino bf16": lambda t: openvino_runner(ov_model, "bf16", t),
            "openvino int8 (NNCF)": lambda t: openvino_runner(ov_int8, "f32", t),
        }
        self.inputs[key] = held_out
        paths = {}
        with torch.inference_mode():
            timm_logits = np.concatenate(
                [model(torch.from_numpy(x[None])).numpy() for x in held_out]
            )
        paths["timm"] = str(workdir / f"{key}_timm.npy")
        np.save(paths["timm"], timm_logits)
        for runtime in RUNTIMES:
            run = self.runner(key, runtime, 2)
            logits = np.concatenate([run(x[None]) for x in held_out])
            paths[runtime] = str(workdir / f"{key}_{RUNTIMES.index(runtime)}.npy")
            np.save(paths[runtime], logits)
        return {"logits": paths, "bf16": bf16_supported()}

    def time(self, cmd: dict) -> dict:
        run = self.runner(cmd["key"], cmd["runtime"], cmd["threads"])
        x = self.inputs[cmd["key"]][:1]
        return {"times_ms": times_ms(lambda: run(x), cmd["runs"], cmd["warmup"])}

    def versions(self, cmd: dict) -> dict:
        from importlib.metadata import version

        names = ("torch", "timm", "onnx", "onnxruntime", "openvino", "nncf")
        return {name: version(name) for name in names}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "--serve":
        print("usage: peer_onnx.py --serve THREADS", file=sys.stderr)
        return 2
    import os

    import torch

    # NNCF and the converters print progress: the answers get their own copy of stdout, and
    # everything else written to stdout (Python or native code) goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    torch.set_num_threads(int(argv[1]))
    return serve(Server(), answers)


if __name__ == "__main__":
    raise SystemExit(main())
