import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import NANO_FLAGS, history_rows, write_image_folder

from keras_vit import console, distribute, evaluate, train, training

REPO = Path(__file__).resolve().parents[1]


def _one_line_error(capsys) -> str:
    """The error line, the last on stderr; earlier lines may only be progress lines."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    assert not [line for line in err[:-1] if line.startswith(("error", "Traceback", "  "))], err
    return err[-1]


@pytest.mark.parametrize(
    "layout, args, message",
    [
        (None, ["--dataset", "cifar11"], "Unknown dataset 'cifar11'"),
        ("empty", [], "has no class sub-folders"),
        ("single", [], "has a single class ('only')"),
        (None, ["--image-size=30", "--patch-size=8"], "Expected image size divisible by"),
        (None, ["--model", "ViT_Q99"], "Unknown ViT variant 'ViT_Q99'"),
        (None, ["--epochs", "0"], "Expected `epochs` to be a positive integer"),
        (None, ["--resume", "--overwrite"], "either --resume or --overwrite"),
        (None, ["--mixup", "nan"], "Expected `mixup_alpha` to be a finite number"),
        (None, ["--cutmix", "nan"], "Expected `cutmix_alpha` to be a finite number"),
        (None, ["--rotation", "inf"], "Expected `rotation_degrees` to be a finite number"),
        (None, ["--learning-rate", "inf"], "Expected `learning_rate` to be a positive finite"),
        (None, ["--learning-rate", "nan"], "Expected `learning_rate` to be a positive finite"),
        (None, ["--dataset", "mnist:9.9.9"], "tensorflow-datasets 'mnist:9.9.9'"),
        (None, ["--drop-path", "1"], "Expected `drop_path_rate` to be a number >= 0 and below 1"),
        (None, ["--label-smoothing", "-0.1"], "Expected `label_smoothing` to be a number >= 0"),
        (None, ["--weight-decay", "nan"], "Expected `weight_decay` to be a number >= 0."),
    ],
)
def test_train_bad_input_is_one_line(tmp_path, capsys, layout, args, message):
    folder = tmp_path / "images"
    folder.mkdir()
    if layout == "single":
        write_image_folder(folder, classes=("only",), per_class=3)
    if layout is not None:
        args = ["--dataset", str(folder), *args]
    out = tmp_path / "ckpt"
    if "--resume" in args:
        out.mkdir()
        (out / "x").write_text("x")
    assert train.main(["--output", str(out), *args]) == 1
    assert message in _one_line_error(capsys)


@pytest.mark.parametrize("flag", ["--recipe", "--strategy"])
def test_train_refuses_an_unknown_choice_before_importing_tensorflow(tmp_path, capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--output", str(tmp_path / "out"), flag, "bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {flag}: invalid choice: 'bogus'" in err


def test_train_and_evaluate_cli(tmp_path, capsys):
    folder = tmp_path / "images"
    write_image_folder(folder, classes=("a", "b"), per_class=10)
    out = tmp_path / "ckpt"
    args = ["--dataset", str(folder), "--output", str(out), "--epochs", "1", "--quiet"]
    assert train.main([*args, "--batch-size", "4", *NANO_FLAGS]) == 0
    assert "test top-1" in capsys.readouterr().out
    # The same command again is refused: the folder holds a run.
    assert train.main([*args, "--batch-size", "4", *NANO_FLAGS]) == 1
    assert "--resume" in _one_line_error(capsys)
    # --overwrite with a run that fails in its first epoch: the old run is back, whole.
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    failing = [*args, "--batch-size", "4", *NANO_FLAGS, "--overwrite", "--learning-rate", "1e30"]
    assert train.main(failing) == 1
    assert "Training stopped: the loss became" in _one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not training.previous_path(out).exists()
    # Resuming with another batch size names the key that differs.
    assert train.main([*args, "--batch-size", "2", *NANO_FLAGS, "--resume"]) == 1
    assert "batch_size (4 in run directory, 2 now)" in _one_line_error(capsys)
    flags = [*args, "--batch-size", "4", *NANO_FLAGS, "--train-class-token-only", "--resume"]
    assert train.main(flags) == 1
    assert "train_class_token_only (False in run directory, True now)" in _one_line_error(capsys)

    (out / "metrics.json").unlink()
    assert evaluate.main([str(out)]) == 0
    table = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"{100 * metrics['top1']:.2f} %" in table and "top-5" in table
    assert evaluate.main([str(tmp_path / "nope")]) == 1
    assert "does not exist" in _one_line_error(capsys)
    assert evaluate.main([str(folder)]) == 1
    assert "not a keras-vit run directory" in _one_line_error(capsys)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_sigkill_mid_epoch_then_resume_continues(tmp_path):
    out = tmp_path / "ckpt"
    # Digits at 16x16 with a one-block ViT: ~160 small steps per epoch.
    command = [
        sys.executable,
        "-m",
        "keras_vit.train",
        "--output",
        str(out),
        "--epochs",
        "4",
        "--batch-size",
        "8",
        "--quiet",
        *NANO_FLAGS,
    ]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 200
    try:
        while history_rows(out / "history.csv") < 1:
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the first epoch did not finish in time"
            time.sleep(0.05)
        time.sleep(0.3)  # into the second epoch
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(30)
        first.stderr.close()
    done_before = history_rows(out / "history.csv")
    assert first.returncode == -signal.SIGKILL
    assert done_before < 4, "the run finished before it could be killed"
    assert (out / training.BACKUP_DIR).is_dir() and not (out / "model.keras").exists()

    second = subprocess.run(
        [*command, "--resume"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stderr[-2000:]
    resumed = re.search(r"Resuming at epoch (\d+) of 4", second.stderr)
    assert resumed, second.stderr[-2000:]
    # It continues after the last completed epoch: never from scratch, never skipping one.
    assert int(resumed.group(1)) - 1 >= max(done_before, 1)
    assert [row["epoch"] for row in training.read_history(out / "history.csv")] == [1, 2, 3, 4]
    assert (out / "model.keras").is_file() and not (out / training.BACKUP_DIR).exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["epochs_this_session"] == 4 - (int(resumed.group(1)) - 1)


def test_parser_names_match_the_library():
    assert train.RECIPE_NAMES == tuple(sorted(training.RECIPES))
    assert train.STRATEGY_NAMES == distribute.STRATEGIES


def test_help_states_the_overwrite_and_weights_rules():
    text = " ".join(train.build_parser().format_help().split())
    assert "kept as <output>.previous until the new run completes its first epoch" in text
    assert "run directory of an earlier training run" in text
    assert "checkpoint folder" not in text


def _package_imports_tensorflow() -> bool:
    code = "import sys, keras_vit; print('tensorflow' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return out.stdout.strip() == "True"


def test_help_imports_no_tensorflow():
    if _package_imports_tensorflow():
        pytest.skip("keras_vit/__init__.py imports TensorFlow (before the lazy package init)")
    code = (
        "import sys\n"
        "from keras_vit.train import main\n"
        "for argv in (['--help'], []):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("required: --output")


@pytest.mark.slow
def test_quiet_run_prints_no_tensorflow_lines(tmp_path):
    if _package_imports_tensorflow():
        pytest.skip("keras_vit/__init__.py imports TensorFlow (before the lazy package init)")
    command = [sys.executable, "-m", "keras_vit.train", "--output", str(tmp_path / "run")]
    command += ["--epochs", "1", "--batch-size", "64", "--quiet", *NANO_FLAGS]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    foreign = [
        line
        for line in result.stderr.splitlines()
        if re.match(r"^([IWEF]\d{4} |WARNING: All log|To enable the following)", line)
    ]
    assert not foreign, foreign


def test_log_level_and_progress_lines(monkeypatch):
    monkeypatch.setattr(console, "USER_LOG_LEVEL", "0")
    assert not console.quiet_requested(verbose=False)  # the user's choice is kept
    monkeypatch.setattr(console, "USER_LOG_LEVEL", None)
    assert console.quiet_requested(verbose=False) and not console.quiet_requested(True)

    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(sys, "stdout", Stream(False))
    assert console.fit_verbosity(quiet=False) == 2  # one plain line per epoch in a log file
    assert console.fit_verbosity(quiet=True) == 0
    monkeypatch.setattr(sys, "stdout", Stream(True))
    assert console.fit_verbosity(quiet=False) == 1


def test_evaluate_split_names_are_the_data_sets():
    from keras_vit import data

    assert evaluate.SPLIT_NAMES == tuple(data.SPLITS)
