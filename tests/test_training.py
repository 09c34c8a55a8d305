import json
import shutil

import keras
import numpy as np
import pytest
from helpers import write_image_folder

import keras_vit
from keras_vit import checkpoints, data, run_dir, training
from keras_vit import train as train_cli
from keras_vit.atomic import default_file_mode
from keras_vit.evaluate import evaluate_checkpoint
from keras_vit.run_dir import CONFIG_FILE

# A model small enough that a two-epoch run is mostly graph tracing.
NANO = dict(image_size=16, patch_size=8, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=32)


def nano_config(dataset, **kwargs):
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("batch_size", 8)
    return training.make_config(dataset, architecture=dict(NANO), **kwargs)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    write_image_folder(root, classes=("dark", "mid", "bright"), per_class=10)
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, image_folder):
    out = tmp_path_factory.mktemp("runs") / "ckpt"
    config = nano_config(str(image_folder), epochs=3)
    return config, training.train(config, out, verbose=0)


def test_train_writes_a_complete_run_directory(trained, image_folder):
    config, result = trained
    path = result.path
    assert (path / "model.keras").stat().st_mode & 0o777 == default_file_mode()
    for name in (
        "model.keras",
        "config.json",
        "labels.txt",
        "history.csv",
        "metrics.json",
        "training_curves.png",
        "confusion_matrix.png",
    ):
        assert (path / name).is_file(), name
    assert not (path / training.BACKUP_DIR).exists()  # removed on success
    assert list((path / training.LOGS_DIR).rglob("events.out.tfevents.*"))
    for png in ("training_curves.png", "confusion_matrix.png"):
        assert (path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    ckpt = run_dir.read_run_dir(path)
    assert ckpt.labels == ("bright", "dark", "mid")  # sorted folder names
    assert ckpt.image_size == (16, 16)
    assert ckpt.config["dataset"]["source"] == str(image_folder.resolve())
    assert ckpt.config["dataset"]["data_dir"] is None
    assert ckpt.config["preprocessing"]["range"] == [-1.0, 1.0]
    assert ckpt.config["training"] == config.to_json()
    assert ckpt.config["model"]["dtype"] is None
    model = ckpt.load_model()
    assert isinstance(model, keras_vit.VisionTransformer)
    assert getattr(model, "optimizer", None) is None  # saved without optimizer state

    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(
        result.history[0]
    )
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["num_examples"] == 6 and metrics["split"] == "test"
    assert metrics["top5"] == 1.0  # three classes
    assert metrics["training"]["train_images_per_second"] > 0


def test_evaluate_checkpoint_reproduces_training_metrics(trained, tmp_path):
    _, result = trained
    copy = tmp_path / "ckpt"
    shutil.copytree(result.path, copy)
    metrics = evaluate_checkpoint(copy)
    for key in ("top1", "top5", "num_examples", "split"):
        assert metrics[key] == result.metrics[key]
    assert metrics["loss"] == pytest.approx(result.metrics["loss"], rel=1e-6)
    # Independent check of top-1: Keras' own metric on the loaded model.
    model = run_dir.read_run_dir(copy).load_model()
    ckpt = run_dir.read_run_dir(copy)
    test = data.load_examples(ckpt.config["dataset"]["source"], "test", 16)
    accuracy = keras.metrics.SparseCategoricalAccuracy()
    for images, labels in data.eval_batches(test, 4):
        accuracy.update_state(labels, model(images))
    assert float(accuracy.result()) == pytest.approx(metrics["top1"])
    assert (
        json.loads((copy / "metrics.json").read_text())["training"] == (result.metrics["training"])
    )
    validation = evaluate_checkpoint(copy, "validation")
    assert (copy / "metrics_validation.json").is_file()
    assert validation["num_examples"] == 3


def test_same_seed_same_result(tmp_path):
    runs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        config = nano_config("digits", epochs=1, batch_size=64, seed=seed)
        result = training.train(config, tmp_path / name, verbose=0)
        weights = run_dir.read_run_dir(result.path).load_model().get_weights()
        runs.append((weights, (result.path / "history.csv").read_text(), result.metrics))
    (w_a, h_a, m_a), (w_b, h_b, m_b), (w_c, h_c, _) = runs
    assert h_a == h_b
    for x, y in zip(w_a, w_b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert m_a["top1"] == m_b["top1"] and m_a["loss"] == m_b["loss"]
    assert h_a != h_c
    assert any(not np.array_equal(x, y) for x, y in zip(w_a, w_c, strict=True))


def test_output_folder_rules(trained, tmp_path, image_folder):
    config, result = trained
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(training.TrainingError, match="is not empty; pass --resume"):
        training.train(config, busy, verbose=0)
    with pytest.raises(training.TrainingError, match="not a keras-vit run directory"):
        training.train(config, busy, overwrite=True, verbose=0)
    assert (busy / "notes.txt").read_text() == "mine"

    copy = tmp_path / "ckpt"
    shutil.copytree(result.path, copy)
    other = nano_config(str(image_folder), epochs=4, learning_rate=0.5)
    with pytest.raises(training.TrainingError) as info:
        training.train(other, copy, resume=True, verbose=0)
    message = str(info.value)
    assert "\n" not in message
    assert "epochs (3 in run directory, 4 now)" in message
    assert "learning_rate (0.001 in run directory, 0.5 now)" in message
    # A run directory written before a setting existed resumes under that setting's default.
    stored = json.loads((copy / CONFIG_FILE).read_text())
    del stored["training"]["train_class_token_only"]
    (copy / CONFIG_FILE).write_text(json.dumps(stored))
    assert training.config_differences(stored["training"], config.to_json()) == []
    with pytest.raises(training.TrainingError, match=r"train_class_token_only \(False in"):
        training.train(
            nano_config(str(image_folder), epochs=3, train_class_token_only=True),
            copy,
            resume=True,
            verbose=0,
        )
    with pytest.raises(training.TrainingError, match="either --resume or --overwrite"):
        training.train(config, copy, resume=True, overwrite=True, verbose=0)
    # Resuming a finished run does nothing and returns its metrics.
    again = training.train(config, copy, resume=True, verbose=0)
    assert again.metrics == result.metrics


def test_non_finite_loss_stops_with_epoch_and_batch(tmp_path, image_folder):
    config = nano_config(str(image_folder), learning_rate=1e30)
    with pytest.raises(training.NonFiniteLossError, match=r"at epoch 1, batch \d+") as info:
        training.train(config, tmp_path / "ckpt", verbose=0)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "ckpt" / "model.keras").exists()


def test_weights_start_from_an_npz_checkpoint(tmp_path, image_folder):
    source = keras_vit.ViT(**NANO, num_classes=3, seed=7)
    npz = checkpoints.save_npz(source, tmp_path / "pretrained.npz")
    model = training.build_model(nano_config(str(image_folder), weights=str(npz)), 3)
    for ours, theirs in zip(model.weights, source.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)
    missing = nano_config(str(image_folder), weights=str(tmp_path / "missing.npz"))
    with pytest.raises(FileNotFoundError, match=r"missing\.npz does not exist") as info:
        training.build_model(missing, 3)
    assert "\n" not in str(info.value)


def test_make_config_fills_recipes():
    digits = training.make_config("digits")
    assert digits.architecture == training.SMALL_MODEL
    assert digits.augmentation["flip"] is False  # digits are not mirror-symmetric
    assert digits.augmentation["randaugment_ops"] == 0
    scratch = training.make_config("cifar10")
    assert scratch.augmentation["flip"] and scratch.weight_decay == 0.05
    assert scratch.label_smoothing == 0.1 and scratch.drop_path_rate == 0.1
    finetune = training.make_config(
        "cifar10", model="ViT_B16", recipe="finetune", architecture={"image_size": 384}
    )
    assert finetune.architecture == {
        "image_size": 384,
        "patch_size": 16,
        "hidden_size": 768,
        "num_layers": 12,
        "num_heads": 12,
        "mlp_dim": 3072,
    }
    assert (finetune.momentum, finetune.global_clipnorm, finetune.weight_decay) == (0.9, 1.0, 0)
    json.dumps(finetune.to_json())
    with pytest.raises(ValueError, match="Unknown recipe 'adam'"):
        training.make_config("digits", recipe="adam")
    with pytest.raises(ValueError, match="Unknown ViT variant"):
        training.make_config("digits", model="ViT_Z9")
    with pytest.raises(ValueError, match="positive integer"):
        training.make_config("digits", epochs=0)


def test_make_config_overrides_the_recipes_regularisation():
    chosen = training.make_config(
        "digits", weight_decay=0.1, label_smoothing=0, drop_path_rate=0.25
    )
    assert (chosen.weight_decay, chosen.label_smoothing, chosen.drop_path_rate) == (0.1, 0, 0.25)
    assert isinstance(chosen.label_smoothing, float)
    assert training.make_config("digits", weight_decay=np.float32(0.5)).weight_decay == 0.5
    finetune = training.make_config("digits", recipe="finetune", weight_decay=1e-4)
    assert finetune.weight_decay == 1e-4 and finetune.drop_path_rate == 0.0
    assert training.build_optimizer(finetune, steps_per_epoch=4).weight_decay == 1e-4
    model = training.build_model(
        training.make_config("digits", architecture=dict(NANO), drop_path_rate=0.3), 3
    )
    assert model.drop_path_rate == 0.3
    for name, value in (
        ("drop_path_rate", 1.0),
        ("label_smoothing", 1.5),
        ("weight_decay", -1e-4),
        ("weight_decay", float("inf")),
        ("drop_path_rate", "0.1"),
        ("weight_decay", True),
    ):
        with pytest.raises(ValueError, match=f"Expected `{name}` to be a number >= 0"):
            training.make_config("digits", **{name: value})


def test_regularisation_flags_reach_the_config(tmp_path, monkeypatch):
    configs = []

    def stand_in(config, output, **kwargs):  # records the config instead of training
        configs.append(config)
        return training.TrainResult(path=output, metrics={}, history=[])

    monkeypatch.setattr(training, "train", stand_in)
    flags = ["--weight-decay", "0.01", "--label-smoothing", "0.2", "--drop-path", "0"]
    assert train_cli.main(["--output", str(tmp_path / "a"), *flags]) == 0
    assert train_cli.main(["--output", str(tmp_path / "b")]) == 0
    chosen, default = configs
    assert (chosen.weight_decay, chosen.label_smoothing, chosen.drop_path_rate) == (0.01, 0.2, 0)
    assert default == training.make_config("digits")


def test_schedule_warms_up_linearly_then_decays_to_zero():
    config = training.make_config("digits", epochs=10, learning_rate=0.01)
    schedule = training.learning_rate_schedule(config, steps_per_epoch=10)
    warmup = round(config.warmup_fraction * 100)
    values = [float(schedule(step)) for step in range(101)]
    assert values[0] == 0.0
    assert values[warmup // 2] == pytest.approx(0.01 * (warmup // 2) / warmup)
    assert values[warmup] == pytest.approx(0.01)
    assert values[100] == pytest.approx(0.0, abs=1e-9)
    assert all(a >= b for a, b in zip(values[warmup:], values[warmup + 1 :], strict=False))


def test_build_training_model_options():
    config = nano_config("digits", recipe="finetune", mixed_precision=True, jit_compile=True)
    model = training.build_training_model(config, num_classes=10, steps_per_epoch=5)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.momentum == 0.9 and model.optimizer.global_clipnorm == 1.0
    assert model.jit_compile is True
    assert model.get_layer("encoderblock_0").compute_dtype == "bfloat16"
    assert model.output.dtype == "float32"
    assert model.train_class_token_only is False
    fast = nano_config("digits", train_class_token_only=True)
    assert training.build_model(fast, num_classes=10).train_class_token_only is True
    scratch = training.build_training_model(nano_config("digits"), 10, 5)
    assert isinstance(scratch.optimizer, keras.optimizers.AdamW)
    assert scratch.optimizer.weight_decay == 0.05
    assert scratch.loss.label_smoothing == 0.1


def _tree(path):
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): p.read_bytes() for p in files}


class _FailAtFirstBatch(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        raise RuntimeError("simulated failure")


def test_overwrite_keeps_the_previous_run_until_an_epoch_completes(trained, tmp_path):
    config, result = trained
    out = tmp_path / "run"
    shutil.copytree(result.path, out)
    before = _tree(out)
    previous = training.previous_path(out)
    nan = nano_config(config.dataset, learning_rate=1e30)
    with pytest.raises(training.NonFiniteLossError):
        training.train(nan, out, overwrite=True, verbose=0)
    assert _tree(out) == before and not previous.exists()
    with pytest.raises(RuntimeError, match="simulated failure"):
        training.train(config, out, overwrite=True, verbose=0, callbacks=[_FailAtFirstBatch()])
    assert _tree(out) == before and not previous.exists()

    # A kill between the two leaves the old run aside; --overwrite then refuses to run.
    previous.mkdir()
    with pytest.raises(training.TrainingError, match="interrupted --overwrite") as info:
        training.train(config, out, overwrite=True, verbose=0)
    assert "\n" not in str(info.value) and _tree(out) == before
    previous.rmdir()

    one_epoch = nano_config(config.dataset, epochs=1)
    training.train(one_epoch, out, overwrite=True, verbose=0)
    assert not previous.exists()
    stored = json.loads((out / CONFIG_FILE).read_text())
    assert stored["training"]["epochs"] == 1
    assert len(training.read_history(out / "history.csv")) == 1


def test_digits_default_config_is_unchanged():
    """The default run (and so its seeded result) must not move with the adaptive rules."""
    assert training.make_config().to_json() == {
        "architecture": training.SMALL_MODEL,
        "augmentation": {
            "crop_area": [0.7, 1.0],
            "crop_aspect": [0.8, 1.25],
            "cutmix_alpha": 0.0,
            "flip": False,
            "mixup_alpha": 0.0,
            "randaugment_magnitude": 0.5,
            "randaugment_ops": 0,
            "rotation_degrees": 0.0,
        },
        "batch_size": 64,
        "data_dir": None,
        "dataset": "digits",
        "drop_path_rate": 0.1,
        "epochs": 100,
        "global_clipnorm": None,
        "jit_compile": False,
        "label_smoothing": 0.1,
        "learning_rate": 0.001,
        "mixed_precision": False,
        "model": None,
        "momentum": 0.0,
        "recipe": "scratch",
        "seed": 0,
        "train_class_token_only": False,
        "warmup_fraction": 0.1,
        "weight_decay": 0.05,
        "weights": None,
    }


def test_defaults_adapt_to_a_small_folder(image_folder, caplog):
    scratch = training.RECIPES["scratch"]
    adapted, messages = training.adapt_to_size(scratch, 300)
    assert adapted.batch_size == 300 // training.MIN_STEPS_PER_EPOCH and len(messages) == 2
    aug = adapted.augmentation
    assert (aug.mixup_alpha, aug.cutmix_alpha, aug.randaugment_ops) == (0, 0, 0)
    big, messages = training.adapt_to_size(scratch, 100 * scratch.batch_size)
    assert big == scratch and messages == []
    kept, _ = training.adapt_to_size(scratch, 300, keep=frozenset({"batch_size", "mixup_alpha"}))
    assert kept.batch_size == scratch.batch_size and kept.augmentation.mixup_alpha == 0.8
    assert kept.augmentation.cutmix_alpha == 0

    with caplog.at_level("INFO", logger="keras_vit.training"):
        config = training.make_config(str(image_folder), architecture=dict(NANO))
    _, files = data.folder_files(image_folder)
    assert config.batch_size == max(1, len(files["train"]) // training.MIN_STEPS_PER_EPOCH)
    assert config.augmentation["mixup_alpha"] == 0 and config.augmentation["randaugment_ops"] == 0
    assert sum("Small data set" in r.getMessage() for r in caplog.records) == 2
    chosen = training.make_config(
        str(image_folder), batch_size=32, augmentation={"mixup_alpha": 0.2}
    )
    assert chosen.batch_size == 32 and chosen.augmentation["mixup_alpha"] == 0.2


def test_weights_from_a_run_directory(trained, tmp_path):
    config, result = trained
    source = run_dir.read_run_dir(result.path).load_model()
    same = training.make_config(config.dataset, weights=result.path)
    assert same.architecture == {k: source.get_config()[k] for k in training.ARCHITECTURE_KEYS}
    for num_classes in (3, 5):
        model = training.build_model(same, num_classes)
        for ours in model.weights:
            theirs = source.get_layer(ours.path.split("/")[0])
            if ours.path.startswith("head/") and num_classes != 3:
                assert not np.any(ours.numpy())  # a new, zero-initialised head
                continue
            match = [w for w in theirs.weights if w.path == ours.path]
            np.testing.assert_array_equal(ours.numpy(), match[0].numpy(), err_msg=ours.path)
    wider = training.make_config(
        config.dataset, weights=result.path, architecture={"hidden_size": 32, "mlp_dim": 64}
    )
    with pytest.raises(ValueError, match="does not fit the model") as info:
        training.build_model(wider, 3)
    assert "\n" not in str(info.value)
