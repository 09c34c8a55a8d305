import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import NANO_FLAGS, history_rows

from keras_vit import distribute, run_dir, train, training

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "distribute_scripts"


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("TF_CONFIG", None)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "TF_CONFIG environment variable, which is not set"),
        ("", "which is not set"),
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', "has no 'cluster' object"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}}', "has no 'task' object"),
        (
            '{"cluster": {"ps": ["127.0.0.1:1"]}, "task": {"type": "ps", "index": 0}}',
            "has a 'ps' job",
        ),
        (
            '{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}',
            "has address '127.0.0.1'; expected 'host:port'",
        ),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}',
            "task type 'chief' is not a job of its cluster",
        ),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
            "task index 1 is out of range for job 'worker'",
        ),
    ],
)
def test_parse_tf_config_rejects_bad_clusters(text, message):
    with pytest.raises(distribute.DistributeError) as info:
        distribute.parse_tf_config(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_parse_tf_config_accepts_a_cluster():
    text = json.dumps(
        {
            "cluster": {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2", "127.0.0.1:3"]},
            "task": {"type": "worker", "index": 1},
        }
    )
    assert distribute.parse_tf_config(text)["task"] == {"type": "worker", "index": 1}


def test_default_strategy_facts():
    import tensorflow as tf

    gpus = len(tf.config.list_logical_devices("GPU"))
    strategy = distribute.make_strategy("default")
    assert strategy.num_replicas_in_sync == 1
    assert distribute.is_chief(strategy) and distribute.num_workers(strategy) == 1
    expected = "mixed_float16" if gpus else "mixed_bfloat16"
    assert distribute.mixed_precision_policy(strategy) == expected
    distribute.check_global_batch(7, strategy)
    auto = distribute.make_strategy("auto")
    assert auto.num_replicas_in_sync == (gpus if gpus > 1 else 1)
    assert (type(auto) is type(strategy)) == (gpus <= 1)


@pytest.mark.parametrize(
    "env, args, message",
    [
        (None, ["--strategy", "multiworker"], "TF_CONFIG environment variable, which is not set"),
        ("[1, 2", ["--strategy", "multiworker"], "TF_CONFIG is not valid JSON"),
        ("{}", ["--strategy", "multiworker"], "TF_CONFIG has no 'cluster' object"),
        (None, ["--tpu", "local"], "--tpu local needs --strategy tpu"),
    ],
)
def test_train_cli_strategy_errors_are_one_line(tmp_path, monkeypatch, capsys, env, args, message):
    if env is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", env)
    out = tmp_path / "ckpt"
    assert train.main(["--output", str(out), *args]) == 1
    assert message in _one_line_error(capsys)
    assert not out.exists()


def test_train_cli_unreachable_tpu_fails_fast(tmp_path, capsys):
    port = _free_port()  # closed again: nothing listens there
    start = time.monotonic()
    code = train.main(
        [
            "--output",
            str(tmp_path / "ckpt"),
            "--strategy",
            "tpu",
            "--tpu",
            f"grpc://127.0.0.1:{port}",
        ]
    )
    assert code == 1 and time.monotonic() - start < 30
    assert f"No TPU reachable at grpc://127.0.0.1:{port}" in _one_line_error(capsys)


def test_unreachable_tpu_times_out(monkeypatch):
    """A TPU address that accepts connections but never answers: bounded by tpu_timeout."""
    import tensorflow as tf

    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(30)

    monkeypatch.setattr(tf.config, "experimental_connect_to_cluster", hang)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"grpc://127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(distribute.DistributeError, match=r"No TPU answered at .* within 2 s"):
            distribute.make_strategy("tpu", tpu=address, tpu_timeout=2)
        assert time.monotonic() - start < 10
    release.set()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mirrored_two_cpu_replicas_match_one_device(tmp_path):
    """Two logical CPU devices (a fresh process): MirroredStrategy gives the one-device
    loss trajectory for the same global batch and seed, mixed precision trains under it,
    and a global batch the replicas cannot split is a one-line error."""
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "mirrored_runs.py"), str(tmp_path)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULTS "))
    results = json.loads(line[len("RESULTS ") :])
    one, two = results["default"], results["mirrored"]
    assert (one["replicas"], two["replicas"]) == (1, 2)
    # Same examples, same seeds, same optimizer steps: only the order of float additions
    # differs (per-replica sums, then an all-reduce). Measured: 3.5e-6 relative on the
    # training loss, 1e-4 on the validation loss (its batches end in a 4 + 3 split).
    for key, rtol in (("loss", 1e-4), ("val_loss", 1e-3), ("accuracy", 1e-4)):
        np.testing.assert_allclose(
            [row[key] for row in two["history"]],
            [row[key] for row in one["history"]],
            rtol=rtol,
            err_msg=key,
        )
    assert one["history"][1]["loss"] < one["history"][0]["loss"]  # it does train

    mixed = results["mixed"]
    assert mixed["training"]["dtype_policy"] == "mixed_bfloat16"
    assert mixed["training"]["replicas"] == 2
    assert np.isfinite(mixed["history"][0]["loss"])
    float16 = results["float16"]
    assert float16["is_loss_scale"] and float16["block_policy"] == "mixed_float16"
    assert all(np.isfinite(float16["loss"])) and float16["loss"][1] < float16["loss"][0]

    assert results["odd_batch_exit"] == 1
    assert (
        "error: The global batch size 15 is not divisible by the 2 replicas of "
        "MirroredStrategy; use a multiple of 2 for --batch-size"
    ) in run.stderr
    assert not (tmp_path / "odd").exists()


class _Cluster:
    """Two `python -m keras_vit.train --strategy multiworker` processes on 127.0.0.1, each
    with its own TF_CONFIG and working folder; killed on exit."""

    def __init__(self, tmp_path: Path, args: list[str]):
        ports = [_free_port(), _free_port()]
        assert ports[0] != ports[1]
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        self.processes = []
        self.logs = []
        for index in range(2):
            cwd = tmp_path / f"cwd{index}"
            cwd.mkdir(exist_ok=True)
            env = _env()
            env["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            )
            log = (cwd / "stderr.txt").open("w")
            self.logs.append(log)
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "keras_vit.train", "--strategy", "multiworker", *args],
                    cwd=cwd,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            )

    def wait(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        return [p.wait(max(1.0, deadline - time.monotonic())) for p in self.processes]

    def kill(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(30)
        for log in self.logs:
            log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


def _stderr(tmp_path: Path, index: int) -> str:
    return (tmp_path / f"cwd{index}" / "stderr.txt").read_text()


CHECKPOINT_FILES = {
    "config.json",
    "labels.txt",
    "history.csv",
    "logs",
    "model.keras",
    "metrics.json",
    "training_curves.png",
    "confusion_matrix.png",
}


@pytest.mark.timeout(240)
def test_two_worker_multiworker_run_on_loopback(tmp_path):
    """A real 2-worker MultiWorkerMirroredStrategy run: one short epoch on digits; the
    chief writes a loadable checkpoint, the other worker leaves nothing behind."""
    out = tmp_path / "ckpt"
    args = ["--output", str(out), "--epochs", "1", "--batch-size", "16", "--quiet", *NANO_FLAGS]
    with _Cluster(tmp_path, args) as cluster:
        codes = cluster.wait(200)
    assert codes == [0, 0], _stderr(tmp_path, 0)[-2000:] + _stderr(tmp_path, 1)[-2000:]
    assert "Strategy CollectiveAllReduceStrategy: 2 replicas" in _stderr(tmp_path, 1)
    assert {p.name for p in out.iterdir()} == CHECKPOINT_FILES  # no worker scratch left
    assert [p.name for p in (tmp_path / "cwd1").iterdir()] == ["stderr.txt"]
    ckpt = run_dir.read_run_dir(out)
    model = ckpt.load_model()
    assert model.count_params() > 0 and ckpt.labels[:2] == ("0", "1")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["workers"] == 2 and metrics["training"]["replicas"] == 2
    assert [row["epoch"] for row in training.read_history(out / "history.csv")] == [1]


@pytest.mark.slow
@pytest.mark.timeout(500)
def test_killed_worker_then_both_resume_from_the_last_completed_epoch(tmp_path):
    out = tmp_path / "ckpt"
    # ~160 steps of 8 images per epoch: long enough to be killed inside epoch 2, the last.
    args = ["--output", str(out), "--epochs", "2", "--batch-size", "8", "--quiet", *NANO_FLAGS]
    with _Cluster(tmp_path, args) as cluster:
        deadline = time.monotonic() + 200
        while history_rows(out / "history.csv") < 1:
            assert all(p.poll() is None for p in cluster.processes), _stderr(tmp_path, 0)[-2000:]
            assert time.monotonic() < deadline, "the first epoch did not finish in time"
            time.sleep(0.05)
        time.sleep(0.3)  # into the second epoch
        cluster.processes[1].kill()  # the non-chief worker dies
        cluster.processes[1].wait(30)
        # Its peer cannot go on alone; the job is restarted, as a cluster manager would.
    done_before = history_rows(out / "history.csv")
    assert done_before < 2, "the run finished before a worker could be killed"
    assert (out / training.BACKUP_DIR).is_dir() and not (out / "model.keras").exists()

    restart = tmp_path / "restart"
    restart.mkdir()
    with _Cluster(restart, [*args, "--resume"]) as cluster:
        codes = cluster.wait(300)
    assert codes == [0, 0], _stderr(restart, 0)[-2000:] + _stderr(restart, 1)[-2000:]
    resumed = re.search(r"Resuming at epoch (\d+) of 2", _stderr(restart, 0))
    assert resumed, _stderr(restart, 0)[-2000:]
    # It continues after the last completed epoch: never from scratch, never skipping one.
    assert int(resumed.group(1)) - 1 >= max(done_before, 1)
    assert [row["epoch"] for row in training.read_history(out / "history.csv")] == [1, 2]
    assert {p.name for p in out.iterdir()} == CHECKPOINT_FILES  # backup and scratch gone
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["epochs_this_session"] == 2 - (int(resumed.group(1)) - 1)
    run_dir.read_run_dir(out).load_model()
