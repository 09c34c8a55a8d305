"""benchmarks/run.py --quick, kernels.py and xla_profile.py: smoke tests that every row is produced
(not the timings)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import benchmark_module

ROOT = Path(__file__).resolve().parents[1]
INFERENCE_IMPLS = {
    "keras-vit (TF graph)",
    "keras-vit (XLA)",
    "tflite float32",
    "tflite float16",
    "tflite dynamic",
    "tflite int8",
    "tflite int8_cpu",
    "keras-hub",
    "timm",
}
TRAINING_IMPLS = {
    "keras-vit (TF graph)",
    "keras-vit (XLA)",
    "keras-vit (XLA, train_class_token_only)",
    "keras-hub",
    "timm",
}


def run_script(name: str, *argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python benchmarks/<name> argv...` from the repository root, output captured."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_quick_benchmark_produces_every_row(tmp_path):
    output = tmp_path / "results.json"
    done = run_script("run.py", "--quick", "--output", str(output))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.read_text())
    assert results["quick"] is True and output.with_suffix(".md").is_file()
    rows = results["rows"]
    for r in rows:
        assert r["status"] in ("ok", "unavailable"), r
        if r["status"] == "unavailable":
            assert r["reason"]
        else:
            assert r.get("median_ms", r.get("images_per_s", 0)) > 0
            assert r["gflops_per_s"] > 0 and r["percent_of_peak"] is not None
    inference = {(r["impl"], r["batch"], r["threads"]) for r in rows if r["section"] == "inference"}
    expected = set()
    for impl in INFERENCE_IMPLS:
        for batch in (1, 2):
            if impl.startswith("tflite"):
                expected |= {(impl, batch, 1), (impl, batch, 2)}
            else:
                expected.add((impl, batch, 2))
    assert inference == expected
    assert {r["impl"] for r in rows if r["section"] == "training"} == TRAINING_IMPLS
    int8 = results["int8"]
    labels = {"float32", "int8 before", "int8 after", "int8_cpu"}
    assert set(int8["files"]) == labels
    assert int8["files"]["int8 after"]["float_compute_ops"] == 0
    assert "SOFTMAX" in int8["files"]["int8_cpu"]["float_compute_op_names"]
    assert set(int8["profiles"]["bench ViT 32px"]) == labels
    names = " ".join(t["target"] for t in results["targets"])
    for expected_target in (
        "Keras tiny batch-1",
        "tiny int8 TFLite",
        "tiny int8_cpu TFLite",
        "digits int8:",
        "digits int8_cpu:",
        "bench ViT 32px int8_cpu TFLite",
        "training",
    ):
        assert expected_target in names
    for t in results["targets"]:
        assert t["met"] in (True, False) or t["by"] == "timm unavailable"
    machine = results["machine"]
    assert machine["threads"] == 2 and machine["peak_fp32_gflops_per_core"] > 0
    assert len(results["load_average"]["start"]) == 3


def test_existing_output_is_refused(tmp_path):
    output = tmp_path / "results.json"
    output.write_text("{}")
    done = run_script("run.py", "--quick", "--output", str(output), timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: {output} already exists; pass --force to overwrite it"
    ]


def test_kernels_writes_every_row(tmp_path):
    output = tmp_path / "kernels.json"
    argv = ["--repeats", "1", "--output", str(output)]
    done = run_script("kernels.py", *argv, "--peer-python", str(tmp_path / "none"))
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(output.read_text())
    assert [r["label"] for r in results["rows"]] == [case[0] for case in kernel_cases()]
    for r in results["rows"]:
        assert r["xla_us"] > 0 and r["graph_us"] > 0 and "torch_us" not in r
    assert results["peer_reason"].startswith("no peer interpreter")
    assert "| matmul | shape |" in output.with_suffix(".md").read_text()
    again = run_script("kernels.py", *argv)
    assert again.returncode == 1 and "already exists" in again.stderr


def kernel_cases():
    return benchmark_module("kernels").CASES


@pytest.mark.parametrize("train", [False, True], ids=["forward", "train"])
def test_xla_profile_writes_the_op_table(tmp_path, train):
    output = tmp_path / "profile.json"
    argv = ["--model", "tiny", "--runs", "2", "--output", str(output)]
    argv += ["--train", "--batch", "4"] if train else []
    done = run_script("xla_profile.py", *argv)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(output.read_text())
    assert results["train"] is train
    profile = results["profile"]
    assert profile["wall_ms"] > 0 and profile["matmul_ms"] > 0
    xla_profile = benchmark_module("xla_profile")
    assert any(xla_profile.is_matmul(kind) for kind in profile["ops"])
    assert all(v["ms"] >= 0 and v["count"] > 0 for v in profile["ops"].values())
    what = "training step" if train else "forward"
    assert f"| op | thread-ms per {what} |" in output.with_suffix(".md").read_text()
    again = run_script("xla_profile.py", *argv)
    assert again.returncode == 1 and "already exists" in again.stderr


def test_xla_profile_counts_every_matmul_thunk():
    is_matmul = benchmark_module("xla_profile").is_matmul
    assert all(map(is_matmul, ["MatMul", "MatMul_1", "MatMul_12", "dot", "dot_add_fusion"]))
    assert not any(map(is_matmul, ["MatMulx", "copy_bitcast_fusion", "wrapped_reduce-window"]))


def test_xla_profile_unknown_model_is_one_line(tmp_path):
    done = run_script("xla_profile.py", "--model", "X/99", "--output", str(tmp_path / "p.json"))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown --model 'X/99'")
    assert not (tmp_path / "p.json").exists()


# === ONNX Runtime / OpenVINO peer rows of fidelity.py (benchmarks/peers.py) ===

PEER_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
FAKE_PEER = """
import json, sys
import numpy as np
for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["cmd"] == "versions":
        answer = {"onnxruntime": "fake"}
    elif cmd["cmd"] == "load":
        held_out = np.load(cmd["held_out"])
        assert held_out.dtype == np.float32 and -1.0 <= held_out.min() <= held_out.max() <= 1.0
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(len(held_out), cmd["config"]["num_classes"]))
        paths = {}
        for i, runtime in enumerate(["timm"] + RUNTIMES):
            paths[runtime] = cmd["workdir"] + f"/{i}.npy"
            np.save(paths[runtime], logits + i)
        answer = {"logits": paths, "bf16": True}
    else:
        answer = {"times_ms": [cmd["threads"] * 10.0, 1.0, 99.0]}
    print(json.dumps(answer), flush=True)
"""


def test_peer_rows_hold_the_fidelity_figures_and_the_fp32_checks():
    peers = benchmark_module("peers")
    from export import fidelity

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(16, 5))
    logits = {"timm": reference + 1e-6}
    for i, runtime in enumerate(peers.RUNTIMES):
        logits[runtime] = reference + rng.normal(scale=0.1 * i, size=reference.shape)
    rows, checks = peers.rows("m", reference, logits)
    assert [r["file"] for r in rows] == list(peers.RUNTIMES)
    for r in rows:
        expected = fidelity.fidelity(reference, logits[r["file"]])
        assert r == {
            "model": "m",
            "file": r["file"],
            "variant": "-",
            **{k: round(v, 4) for k, v in expected.items()},
            "latency_ms": None,  # filled in with every other file's
            "max_abs_logit_diff": np.abs(logits[r["file"]] - reference).max(),
        }
    assert [c["impl"] for c in checks] == ["timm", "onnxruntime fp32", "openvino fp32"]
    assert checks[0]["max_abs_logit_diff"] == pytest.approx(1e-6)
    assert checks[1]["max_abs_logit_diff"] == 0.0  # the first runtime got no noise


def test_peers_measure_through_a_fake_peer_server(tmp_path):
    peers = benchmark_module("peers")
    run = benchmark_module("run")
    script = tmp_path / "fake_peer.py"
    script.write_text(f"RUNTIMES = {list(peers.RUNTIMES)!r}\n" + FAKE_PEER)
    model = run.vit({**run.TINY, "num_classes": 4})
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    client = peers.Peers(sys.executable, tmp_path, script=script)
    chosen = {"tiny": (model, images, images)}
    try:
        timed, section = peers.measure_all(client, chosen, peers_preprocessing())
        latency = [(timer(1, 3), timer(2, 3)) for _, timer in timed]
    finally:
        client.close()
    rows = [row for row, _ in timed]
    assert [r["file"] for r in rows] == list(peers.RUNTIMES)
    assert all(r["latency_ms"] is None for r in rows)  # filled in by fidelity.latency_ms
    assert latency == [(10.0, 20.0)] * len(rows)  # medians
    assert section["versions"] == {"onnxruntime": "fake"}
    assert section["bf16"] is True and len(section["checks"]) == 3
    assert (tmp_path / "tiny.npz").is_file()  # our weights, written by save_npz


def peers_preprocessing():
    return {"mean": [127.5] * 3, "std": [127.5] * 3}


def test_fidelity_times_every_file_in_each_round_and_takes_the_median():
    bench = benchmark_module("fidelity")
    calls = []

    def timer(name, values):
        def time(threads, runs):
            calls.append((name, threads, runs))
            return values[sum(c[0] == name and c[1] == threads for c in calls) - 1] * threads

        return time

    rows = [{"file": "ours"}, {"file": "peer"}]
    timed = [(rows[0], timer("ours", [5.0, 1.0, 3.0])), (rows[1], timer("peer", [2.0, 9.0, 4.0]))]
    bench.latency_ms(timed, rounds=3, runs=7)
    # Interleaved: each round times both files, at 1 and 2 threads, before the next round.
    assert [c[0] for c in calls] == ["ours", "ours", "peer", "peer"] * 3
    assert {c[2] for c in calls} == {7}
    assert rows[0]["latency_ms"] == {"1": 3.0, "2": 6.0}
    assert rows[1]["latency_ms"] == {"1": 4.0, "2": 8.0}


def test_peers_refuse_a_non_standard_vit():
    peers = benchmark_module("peers")
    run = benchmark_module("run")
    config = run.vit({**run.TINY, "num_classes": 4}, gelu="erf").get_config()
    with pytest.raises(ValueError, match=r"^tiny: .* needs gelu='tanh'\. Received: gelu='erf'$"):
        peers.check_standard("tiny", config)
    peers.check_standard("tiny", {**config, "gelu": "tanh"})  # the standard one passes


def test_fidelity_without_the_peer_interpreter_is_one_line(tmp_path):
    missing = tmp_path / "none" / "python"
    output = tmp_path / "out"
    done = run_script("fidelity.py", "--quick", "--peers", str(missing), "--output", str(output))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: --peers: no interpreter at {missing} (make bench-peers creates .venv-peers)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="no .venv-peers (make bench-peers)")
def test_fidelity_quick_with_the_real_peers(tmp_path):
    output = tmp_path / "peers"
    argv = ["--quick", "--models", "random", "--peers", str(PEER_PYTHON), "--output", str(output)]
    done = run_script("fidelity.py", *argv, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(output.with_suffix(".json").read_text())
    peers = benchmark_module("peers")
    files = [r["file"] for r in results["rows"]]
    assert files[-len(peers.RUNTIMES) :] == list(peers.RUNTIMES)
    for check in results["peers"]["checks"]:
        assert check["max_abs_logit_diff"] < 1e-4, check
    for r in results["rows"]:
        assert r["latency_ms"]["1"] > 0 and r["latency_ms"]["2"] > 0
    assert "fp32 equivalence" in output.with_suffix(".md").read_text()


def test_train_digits_reads_validation_and_summarizes(tmp_path):
    train_digits = benchmark_module("train_digits")
    history = tmp_path / "history.csv"
    history.write_text("epoch,accuracy,val_accuracy\n1,0.5,0.25\n2,0.9,0.75\n")
    assert train_digits.final_validation_top1(history) == 0.75
    (tmp_path / "empty.csv").write_text("epoch,accuracy\n")
    with pytest.raises(ValueError, match=r"empty\.csv: no val_accuracy"):
        train_digits.final_validation_top1(tmp_path / "empty.csv")
    runs = [
        dict(
            seed=seed,
            parameters=7,
            test_top1=top1,
            validation_top1=top1,
            process_wall_time_s=1,
            train_images_per_second=10,
            steady_images_per_second=20,
        )
        for seed, top1 in enumerate([0.25, 0.5, 0.75])
    ]
    summary = train_digits.summarize(runs)
    assert summary["seeds"] == [0, 1, 2] and summary["parameters"] == 7
    assert (summary["test_top1_min"], summary["test_top1_mean"], summary["test_top1_max"]) == (
        0.25,
        0.5,
        0.75,
    )
    assert summary["test_top1_std"] == pytest.approx(0.25)


# === benchmarks/int8_budget.py: one int8 rounding at a time ===


def test_int8_budget_quick_writes_every_rounding(tmp_path):
    output = tmp_path / "budget"
    done = run_script("int8_budget.py", "--quick", "--files", "--output", str(output), timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(output.with_suffix(".json").read_text())["rows"]
    budget = benchmark_module("int8_budget")
    files = ["int8 file, weights nearest", "dynamic file, weights nearest"]
    files += ["int8 file, weights GPTQ", "dynamic file, weights GPTQ"]
    for model in ("random tiny", "stress tiny"):
        found = {r["rounding"]: r for r in rows if r["model"] == model}
        assert list(found) == [*budget.ROUNDINGS, *files]
        for r in found.values():
            assert 0.0 < r["mean_logit_error"] < r["max_logit_error"], r
        # The exp form rounds the probabilities far less than int8 SOFTMAX's fixed grid.
        exp, softmax = found["exp on the int8 grid"], found["softmax on the int8 grid"]
        assert exp["mean_logit_error"] < 0.5 * softmax["mean_logit_error"]
    assert "| stress tiny | weights, GPTQ |" in output.with_suffix(".md").read_text()
    missing = tmp_path / "missing" / "budget"
    done = run_script("int8_budget.py", "--quick", "--output", str(missing))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: --output: folder {missing.parent} does not exist"
    )


# === benchmarks/digits_cv.py: settings chosen without the test split ===


def test_digits_cv_folds_cover_train_and_validation_and_never_the_test_split(monkeypatch):
    from sklearn.datasets import load_digits

    from keras_vit.data import digits

    cv = benchmark_module("digits_cv")
    labels = load_digits().target
    fixed = digits.digits_split_indices(labels)
    pool = set(fixed["train"]) | set(fixed["validation"])
    held_out = []
    for fold in range(3):
        split = cv.fold_split(fixed, labels, fold, 3)
        assert set(split["train"]).isdisjoint(split["validation"])
        assert set(split["train"]) | set(split["validation"]) == pool
        assert split["test"] is split["validation"]
        counts = np.bincount(labels[split["validation"]], minlength=10)
        expected = np.bincount(labels[list(pool)], minlength=10) / 3
        assert np.all(np.abs(counts - expected) < 1)  # stratified
        held_out += list(split["validation"])
    assert sorted(held_out) == sorted(pool)  # each image held out exactly once
    # In a fold's process the digits splits are the fold's: the test split is the held-out
    # fold, never the fixed split's test images.
    monkeypatch.setattr(digits, "digits_split_indices", digits.digits_split_indices)
    cv.use_fold(1, 3)
    images, fold_labels = digits.digits_arrays("test", 8)
    expected = cv.fold_split(fixed, labels, 1, 3)["validation"]
    np.testing.assert_array_equal(fold_labels, labels[expected])
    assert len(images) == len(expected)


def test_digits_cv_trains_every_fold_once_per_seed(tmp_path, monkeypatch, capsys):
    cv = benchmark_module("digits_cv")
    calls = []

    def fake_train_fold(name, flags, fold, folds, seed, threads):
        calls.append((name, flags, fold, folds, seed, threads))
        return dict(candidate=name, seed=seed, fold=fold, held_out=10, correct=9 + seed, top1=0)

    monkeypatch.setattr(cv, "train_fold", fake_train_fold)
    # The real one starts a Python that imports TensorFlow to read its version.
    monkeypatch.setattr(cv, "machine_info", lambda: {"cpu": "test"})
    output = tmp_path / "cv.json"
    argv = ["--output", str(output), "--folds", "2", "--seeds", "3", "0", "--parallel", "2"]
    assert cv.main([*argv, "--candidate", "a", "--epochs 1"]) == 0
    assert sorted(calls) == [("a", "--epochs 1", k, 2, s, 1) for k in (0, 1) for s in (0, 3)]
    result = json.loads(output.read_text())
    assert result["training_seeds"] == [3, 0] and len(result["runs"]) == 4
    assert result["summary"]["a"]["seed_correct"] == {"0": 18, "3": 24}
    assert result["machine"] == {"cpu": "test"}
    capsys.readouterr()


def test_digits_cv_pools_the_folds_and_refuses_bad_arguments(tmp_path, capsys):
    cv = benchmark_module("digits_cv")
    runs = [
        dict(candidate="a", seed=0, fold=1, held_out=10, correct=9, top1=0.9),
        dict(candidate="a", seed=0, fold=0, held_out=30, correct=30, top1=1.0),
        dict(candidate="b", seed=0, fold=0, held_out=40, correct=20, top1=0.5),
        dict(candidate="a", seed=1, fold=0, held_out=30, correct=27, top1=0.9),
        dict(candidate="a", seed=1, fold=1, held_out=10, correct=10, top1=1.0),
    ]
    summary = cv.summarize(runs)
    # Pooled over folds and seeds; per seed; the runs ordered by seed, then fold.
    assert summary["a"]["top1"] == 76 / 80 and summary["a"]["held_out"] == 80
    assert summary["a"]["seeds"] == [0, 1] and summary["a"]["folds"] == 2
    assert summary["a"]["seed_correct"] == {"0": 39, "1": 37}
    assert summary["a"]["fold_top1"] == [1.0, 0.9, 0.9, 1.0]
    assert summary["b"]["folds"] == 1 and summary["b"]["fold_top1_std"] == 0
    # Runs recorded before --seeds (no "seed" key) count as seed 0.
    old = cv.summarize([dict(candidate="c", fold=0, held_out=5, correct=4, top1=0.8)])
    assert old["c"]["seed_correct"] == {"0": 4}
    existing = tmp_path / "cv.json"
    existing.write_text("{}")
    assert cv.main(["--output", str(existing), "--candidate", "a", "--epochs 1"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    for argv, message in [
        (["--folds", "1"], "--folds must be at least 2"),
        (["--candidate", "a", "", "--candidate", "a", "--seed 1"], "candidate names must differ"),
        (["--candidate", "a", "", "--seeds", "0", "1", "0"], "--seeds must differ"),
    ]:
        with pytest.raises(SystemExit):
            cv.main(["--output", str(tmp_path / "new.json"), *argv])
        assert message in capsys.readouterr().err
    assert existing.read_text() == "{}" and not (tmp_path / "new.json").exists()
