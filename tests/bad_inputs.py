"""The bad-input table: every case fed to the API and the CLIs, kept as data.

Each `Case` names what is fed, the command or call, and the outcome it must get:

- `error`: the call raises the named exception type (API) or the CLI exits non-zero with
  one `error:` line on stderr and no traceback; the message names the thing (file name,
  argument, key or shape) given in `Call.names`.
- `ok`: the call succeeds and `Call.check` verifies the result.
- `preserved`: a destructive command is refused (as `error`) and the files in
  `Call.preserved` still exist, byte for byte, afterwards.

A case's `build(env, tmp)` makes the bad input under `tmp` and returns the `Call`; `env`
holds the shared tiny artifacts (one trained run directory, one TFLite export, one
SavedModel), built once per test session. `fixed_on` names the branch whose fix the case
waits for; `tests/test_bad_inputs.py` marks those cases `xfail(strict=True)`.
`tests/render_reliability.py` renders this table as `docs/reliability.md`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "checkpoints"

# `python -m keras_vit.train` flags of a one-block ViT on 16x16 images.
NANO = [
    "--image-size=16",
    "--patch-size=8",
    "--hidden-size=16",
    "--num-layers=1",
    "--num-heads=2",
    "--mlp-dim=32",
]
TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64)
# A hybrid's stem on top of TINY: root block and two one-unit stages (stride 8, a 4x4
# feature map at 32x32), read with 1x1 patches.
HYBRID = dict(patch_size=1, resnet_layers=(1, 1), resnet_width=0.5)
OUTCOMES = ("error", "ok", "preserved")
AREAS = (
    "API",
    "checkpoints",
    "train",
    "data folders",
    "evaluate",
    "visualize",
    "export.tflite",
    "export.saved_model",
    "SavedModel signature",
    "TFLite files",
    "predict",
    "faults",
)


@dataclass(frozen=True)
class Call:
    """What a case runs, with the concrete names its message must contain.

    Attributes:
        main: a CLI's `main(argv)`; or None for an API call.
        argv: the CLI arguments.
        func: the API call (no arguments), when `main` is None.
        error: the exception type an `error` API case must raise.
        names: strings the error line must contain; a tuple inside means "one of these".
        check: for `ok`: called with the API result, or with `(stdout, stderr)` of a CLI.
        preserved: files or folders that must be unchanged afterwards.
        absent: strings the error line must not contain (a wrong diagnosis).
        one_line: the error message is one line (False where the message is TensorFlow's).
    """

    main: Callable[[list[str]], int] | None = None
    argv: Sequence[object] = ()
    func: Callable[[], object] | None = None
    error: type[BaseException] | tuple[type[BaseException], ...] = ValueError
    names: Sequence[str | tuple[str, ...]] = ()
    check: Callable[[object], None] | None = None
    preserved: Sequence[Path] = ()
    absent: Sequence[str] = ()
    one_line: bool = True


@dataclass(frozen=True)
class Case:
    """One row of the table (see the module docstring)."""

    id: str
    area: str
    feeds: str
    command: str
    expect: str
    expected: str
    build: Callable[[Env, Path], Call] = field(repr=False, compare=False)
    fixed_on: str | None = None
    integration: bool = False


# --- shared artifacts -------------------------------------------------------------------


class Env:
    """Tiny artifacts shared by all cases, each built on first use under `root`."""

    def __init__(self, root: Path):
        self.root = root

    @functools.cached_property
    def run_dir(self) -> Path:
        """A run directory of a one-block ViT trained one epoch on digits (16x16)."""
        from keras_vit import train

        out = self.root / "run"
        argv = ["--output", str(out), "--epochs", "1", "--batch-size", "64", "--quiet", *NANO]
        assert train.main(argv) == 0, "the shared tiny run failed"
        return out

    @functools.cached_property
    def labels(self) -> list[str]:
        return (self.run_dir / "labels.txt").read_text(encoding="utf-8").split()

    @functools.cached_property
    def tflite_dir(self) -> Path:
        from export import tflite

        out = self.root / "tflite"
        tflite.export_tflite(self.run_dir, out, quantize=["float32"], evaluate=False)
        return out

    @property
    def tflite(self) -> Path:
        return self.tflite_dir / "model_float32.tflite"

    @functools.cached_property
    def saved_model(self) -> Path:
        from export import saved_model

        return saved_model.export_saved_model(self.run_dir, self.root / "saved_model")

    @functools.cached_property
    def serving(self):
        import tensorflow as tf

        return tf.saved_model.load(str(self.saved_model)).signatures["serving_default"]

    def copy_run(self, tmp: Path, name: str = "run") -> Path:
        """A private copy of the run directory, for cases that change it."""
        return Path(shutil.copytree(self.run_dir, tmp / name))

    def copy_tflite(self, tmp: Path) -> Path:
        return Path(shutil.copytree(self.tflite_dir, tmp / "tflite"))


# --- input builders ---------------------------------------------------------------------


def digest(path: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `path` (or of `path` itself)."""
    path = Path(path)
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def grey_digit(size: int = 16) -> np.ndarray:
    """A uint8 grey image (H, W) with structure: a bright ring on a dark ground."""
    y, x = np.mgrid[:size, :size]
    radius = np.hypot(y - size / 2 + 0.5, x - size / 2 + 0.5)
    return np.where(np.abs(radius - size / 3) < size / 8, 230, 20).astype(np.uint8)


def write_png(path: Path, size: int = 16) -> Path:
    from PIL import Image

    Image.fromarray(np.repeat(grey_digit(size)[..., None], 3, axis=-1)).save(path)
    return path


def write_png16(path: Path, size: int = 16) -> Path:
    """The same picture as `write_png`, as a 16-bit grey PNG (pixel * 257)."""
    from PIL import Image

    Image.fromarray(grey_digit(size).astype(np.uint16) * 257).save(path)
    return path


def write_exif_rotated(path: Path) -> tuple[Path, np.ndarray]:
    """A JPEG stored sideways with EXIF orientation 8; returns it and the upright pixels."""
    from PIL import Image

    upright = np.zeros((16, 24, 3), np.uint8)
    upright[:, :12] = 240  # left half bright
    stored = np.rot90(upright, k=-1)  # what a phone writes before tagging "rotate 90 CW"
    exif = Image.Exif()
    exif[0x0112] = 8
    Image.fromarray(np.ascontiguousarray(stored)).save(path, quality=95, exif=exif)
    return path, upright


def write_text(path: Path, text: str = "not what it claims to be\n") -> Path:
    path.write_text(text)
    return path


def truncate(source: Path, path: Path, keep: float = 0.5) -> Path:
    content = Path(source).read_bytes()
    path.write_bytes(content[: int(len(content) * keep)])
    return path


def image_folder(root: Path, classes=("a", "b"), per_class: int = 4, bad: Sequence[str] = ()):
    """`root/<class>/<i>.png`; the classes in `bad` hold only unreadable `.png` files."""
    for k, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            if name in bad:
                (folder / f"{i}.png").write_bytes(b"\x89PNG broken")
            else:
                write_png(folder / f"{i}.png", 16 + k)
    return root


def tiny_npz(path: Path, **arrays) -> Path:
    """The committed `tiny_token.npz` with `arrays` replacing or adding keys (None drops)."""
    with np.load(FIXTURES / "tiny_token.npz") as npz:
        content = {k: npz[k] for k in npz.files}
    for key, value in arrays.items():
        if value is None:
            content.pop(key)
        else:
            content[key] = value
    np.savez(path, **content)
    return path


def tiny_token_model(**overrides):
    """A ViT of the committed `tiny_token.npz` architecture (4x4 patch grid)."""
    from fixtures.synthetic_checkpoints import TINY_TOKEN

    import keras_vit

    return keras_vit.ViT(**{**TINY_TOKEN, **overrides})


class _Touch:
    """A pickle payload: unpickling it creates `marker` (it must never run)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def pickled_npz(path: Path, marker: Path) -> Path:
    array = np.empty((), dtype=object)
    array[()] = _Touch(marker)
    np.savez(path, **{"embedding/kernel": array})
    return path


def corrupt_compressed_npz(path: Path) -> Path:
    """A `savez_compressed` file whose deflate stream is damaged (the zip stays valid)."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, w=np.linspace(0, 1, 4096, dtype=np.float32))
    raw = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as archive:
        info = archive.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 8, start + 40):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


def zip_without_npy(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "no arrays here")
    return path


def lambda_model_keras(run: Path, marker: Path) -> Path:
    """Replaces `run/model.keras` with a model whose Lambda layer would create `marker`."""
    import keras

    inputs = keras.Input((16, 16, 3))
    command = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    x = keras.layers.Lambda(lambda t: t + 0 * len(str(eval(command))))(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(run / "model.keras")
    marker.unlink(missing_ok=True)  # building the model traced the Lambda once, here
    return run / "model.keras"


def plain_model_keras(run: Path) -> Path:
    import keras

    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(run / "model.keras")
    return run / "model.keras"


def unregistered_model_keras(run: Path) -> Path:
    """A `model.keras` naming a custom class no installed package registers."""
    content = (run / "model.keras").read_bytes()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["module"] = "my_project.models"
    config["class_name"] = "MyUnknownViT"
    config["registered_name"] = "my_project>MyUnknownViT"
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        for name, value in files.items():
            archive.writestr(name, value)
    return run / "model.keras"


def truncated_weights_model_keras(run: Path) -> Path:
    """A valid zip whose `model.weights.h5` inside is cut in half."""
    content = (run / "model.keras").read_bytes()
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    weights = files["model.weights.h5"]
    files["model.weights.h5"] = weights[: len(weights) // 2]
    with zipfile.ZipFile(run / "model.keras", "w") as archive:
        for name, value in files.items():
            archive.writestr(name, value)
    return run / "model.keras"


def edit_config(run: Path, change: Callable[[dict], None]) -> Path:
    path = run / "config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    return path


# --- checks for `ok` cases ----------------------------------------------------------------


def stdout_has(*needles: str) -> Callable[[object], None]:
    def check(result):
        out, _ = result
        for needle in needles:
            assert needle in out, (needle, out[-500:])

    return check


# --- subprocess helpers for the fault cases ---------------------------------------------


def _env(**extra) -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), **extra)


def _history_rows(path: Path) -> int:
    from keras_vit import training

    try:
        return len(training.read_history(path))
    except (OSError, ValueError, KeyError):
        return 0


def _kill_when(command, ready: Callable[[], bool], cwd: Path, env: dict, limit: float = 240):
    """Starts `command`, waits for `ready()`, then kills it with SIGKILL."""
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + limit
    try:
        while not ready():
            if process.poll() is not None:
                raise AssertionError(
                    "finished before it could be killed: "
                    + process.stderr.read().decode(errors="replace")[-1500:]
                )
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(30)
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def _train_command(out: Path, epochs: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "keras_vit.train",
        "--output",
        str(out),
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--quiet",
        *NANO,
    ]


def _finish_and_check(out: Path, epochs: int, tmp: Path) -> None:
    import keras

    import keras_vit  # noqa: F401  (registers the layers)
    from keras_vit import training

    second = subprocess.run(
        [*_train_command(out, epochs), "--resume"],
        cwd=tmp,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    rows = training.read_history(out / "history.csv")
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
    assert all(np.isfinite(row["learning_rate"]) for row in rows)
    assert not (out / training.BACKUP_DIR).exists()
    model = keras.saving.load_model(out / "model.keras", safe_mode=True)
    assert model(np.zeros((1, 16, 16, 3), "float32")).shape == (1, 10)


def kill_mid_epoch_then_resume(tmp: Path) -> None:
    out = tmp / "run"
    _kill_when(
        _train_command(out, 4),
        lambda: _history_rows(out / "history.csv") >= 1 and not time.sleep(0.3),
        tmp,
        _env(),
    )
    assert not (out / "model.keras").exists()
    _finish_and_check(out, 4, tmp)


def corrupt_latest_backup_then_resume(tmp: Path) -> None:
    from keras_vit import training

    out = tmp / "run"
    backup = out / training.BACKUP_DIR
    _kill_when(
        _train_command(out, 4),
        lambda: (
            _history_rows(out / "history.csv") >= 2 and (backup / "latest.weights.h5.bkp").is_file()
        ),
        tmp,
        _env(),
    )
    latest = backup / "latest.weights.h5"
    latest.write_bytes(latest.read_bytes()[:100])
    _finish_and_check(out, 4, tmp)


def kill_mid_export_then_rerun(env: Env, tmp: Path) -> None:
    from export import runtime

    run = env.copy_run(tmp)
    out = tmp / "exported"
    scratch = tmp / "scratch"
    scratch.mkdir()
    command = [
        sys.executable,
        "-m",
        "export.tflite",
        str(run),
        "--output",
        str(out),
        "--quantize",
        "float32",
        "dynamic",
        "--no-eval",
    ]
    child_env = _env(TMPDIR=str(scratch))
    _kill_when(command, lambda: any(tmp.glob(".exported.*.tmp")), tmp, child_env)
    second = subprocess.run(
        command, cwd=tmp, env=child_env, capture_output=True, text=True, timeout=400
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert sorted(p.name for p in tmp.iterdir() if p.name.startswith(".")) == []
    assert sorted(p.name for p in scratch.iterdir()) == []
    assert {"model_float32.tflite", "model_dynamic.tflite", "report.json"} <= {
        p.name for p in out.iterdir()
    }
    classifier = runtime.Classifier(out / "model_float32.tflite")
    assert classifier.predict(np.zeros((16, 16, 3), np.uint8)).shape == (1, 10)


# --- the table ----------------------------------------------------------------------------


def _train():
    from keras_vit import train

    return train.main


def _evaluate():
    from keras_vit import evaluate

    return evaluate.main


def _visualize():
    from keras_vit import visualize

    return visualize.main


def _tflite():
    from export import tflite

    return tflite.main


def _saved_model():
    from export import saved_model

    return saved_model.main


def _predict():
    from export import predict

    return predict.main


def _checkpoint_error():
    from keras_vit.checkpoints import CheckpointError

    return CheckpointError


def _model_file_error():
    from export.runtime import ModelFileError

    return ModelFileError


def _image_file_error():
    from export.runtime import ImageFileError

    return ImageFileError


def _data_error():
    from keras_vit.data import DataError

    return DataError


def _api(func, error=ValueError, names=(), check=None, preserved=(), **kwargs):
    return Call(func=func, error=error, names=names, check=check, preserved=preserved, **kwargs)


def _cli(main, argv, names=(), check=None, preserved=(), **kwargs):
    return Call(main=main, argv=argv, names=names, check=check, preserved=preserved, **kwargs)


def _load_npz(model, path, **kwargs):
    from keras_vit.checkpoints import load_npz

    return lambda: load_npz(model, path, **kwargs)


def _vit(**kwargs):
    import keras_vit

    return lambda: keras_vit.ViT(**{**TINY, "num_classes": 3, **kwargs})


def _hybrid(**kwargs):
    """A tiny hybrid (root + two one-unit stages, stride 8) with `kwargs` changed."""
    import keras_vit

    return lambda: keras_vit.ViT(**{**TINY, **HYBRID, "num_classes": 3, **kwargs})


def hybrid_npz(path: Path, **arrays) -> Path:
    """The synthetic `tiny_r2` hybrid file in the released layout, `arrays` replacing keys
    (None drops); its model is `tiny_hybrid_model()`."""
    from fixtures import synthetic_hybrid

    config = synthetic_hybrid.CONFIGS["tiny_r2"]
    content = synthetic_hybrid.original_layout_weights(config, synthetic_hybrid.SEEDS["tiny_r2"])
    for key, value in arrays.items():
        if value is None:
            content.pop(key)
        else:
            content[key] = value
    np.savez(path, **content)
    return path


def tiny_hybrid_model():
    """A hybrid of the synthetic `tiny_r2` file's architecture."""
    from fixtures import synthetic_hybrid

    import keras_vit

    return keras_vit.ViT(**synthetic_hybrid.CONFIGS["tiny_r2"])


def _same_as_array(tmp):
    import keras_vit

    model = keras_vit.ViT(**TINY, num_classes=3, seed=0)
    images = np.random.default_rng(0).uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
    expected = np.asarray(model(images))

    def check(result):
        np.testing.assert_allclose(np.asarray(result), expected, atol=1e-6)

    return _api(lambda: model(images.tolist()), check=check)


def _uint8_into_float_model(tmp):
    import keras_vit

    model = keras_vit.ViT(**TINY, num_classes=3, seed=0)
    images = np.full((1, 32, 32, 3), 200, np.uint8)
    return _api(lambda: model(images), names=["uint8"])


def _posemb_2x8(tmp):
    path = tmp / "grid2x8.npz"
    with np.load(FIXTURES / "tiny_token.npz") as npz:
        posemb = npz["Transformer/posembed_input/pos_embedding"]
    tiny_npz(path)  # same 16 + 1 positions: read as a 2x8 grid through source_grid
    model = tiny_token_model()

    def check(summary):
        assert summary.posemb_resized == ((2, 8), (4, 4)), summary.posemb_resized
        (loaded,) = [w for w in model.weights if w.path.endswith("position_embedding")]
        assert not np.allclose(np.asarray(loaded), posemb), "2x8 copied without resampling"

    return _api(_load_npz(model, path, source_grid=(2, 8)), check=check)


CASES: list[Case] = []


def case(id, area, feeds, command, expect, expected, fixed_on=None, integration=False):
    """Registers the decorated builder as a table row."""
    assert expect in OUTCOMES and area in AREAS, (id, expect, area)

    def register(build):
        CASES.append(Case(id, area, feeds, command, expect, expected, build, fixed_on, integration))
        return build

    return register


# API ------------------------------------------------------------------------------------


@case(
    "api-size-not-divisible",
    "API",
    "image_size=30 with patch_size=8",
    "keras_vit.ViT(image_size=30, patch_size=8)",
    "error",
    "ValueError naming image_size and patch_size",
)
def _(env, tmp):
    return _api(_vit(image_size=30), names=["image_size", "patch_size"])


@case(
    "api-heads-not-dividing",
    "API",
    "hidden_size=32 with num_heads=3",
    "keras_vit.ViT(hidden_size=32, num_heads=3)",
    "error",
    "ValueError naming num_heads",
)
def _(env, tmp):
    return _api(_vit(num_heads=3), names=["num_heads"])


@case(
    "api-negative-classes",
    "API",
    "num_classes=-1",
    "keras_vit.ViT(num_classes=-1)",
    "error",
    "ValueError naming num_classes",
)
def _(env, tmp):
    return _api(_vit(num_classes=-1), names=["num_classes"])


@case(
    "api-dropout-range",
    "API",
    "dropout=1.5",
    "keras_vit.ViT(dropout=1.5)",
    "error",
    "ValueError naming dropout",
)
def _(env, tmp):
    return _api(_vit(dropout=1.5), names=["dropout"])


@case(
    "api-unknown-pooling",
    "API",
    "pooling='max'",
    "keras_vit.ViT(pooling='max')",
    "error",
    "ValueError naming pooling",
)
def _(env, tmp):
    return _api(_vit(pooling="max"), names=["pooling"])


@case(
    "api-unknown-variant",
    "API",
    "variant name 'ViT_Q99'",
    "keras_vit.variants.variant_config('ViT_Q99')",
    "error",
    "ValueError naming ViT_Q99 and listing the variants",
)
def _(env, tmp):
    from keras_vit import variants

    return _api(lambda: variants.variant_config("ViT_Q99"), names=["ViT_Q99", "ViT_B16"])


@case(
    "api-weights-type",
    "API",
    "weights=3",
    "keras_vit.ViT(weights=3)",
    "error",
    "ValueError naming weights",
)
def _(env, tmp):
    return _api(_vit(weights=3), names=["weights"])


@case(
    "api-dtype-int32",
    "API",
    "dtype='int32'",
    "keras_vit.ViT(dtype='int32')",
    "error",
    "ValueError naming dtype",
)
def _(env, tmp):
    return _api(_vit(dtype="int32"), names=["dtype", "int32"])


@case(
    "api-seed-string",
    "API",
    "seed='abc'",
    "keras_vit.ViT(seed='abc')",
    "error",
    "ValueError naming seed",
)
def _(env, tmp):
    return _api(_vit(seed="abc"), names=["seed"])


@case(
    "api-wrong-image-size",
    "API",
    "64x64 images into a 32x32 model",
    "model(images)",
    "error",
    "ValueError naming the expected and received shapes",
)
def _(env, tmp):
    import keras_vit

    model = keras_vit.ViT(**TINY, num_classes=3)
    return _api(lambda: model(np.zeros((1, 64, 64, 3), "float32")), names=["(1, 64, 64, 3)"])


@case(
    "api-wrong-channels",
    "API",
    "1-channel images into an RGB model",
    "model.predict(images)",
    "error",
    "ValueError naming the received shape",
)
def _(env, tmp):
    import keras_vit

    model = keras_vit.ViT(**TINY, num_classes=3)
    images = np.zeros((2, 32, 32, 1), "float32")
    return _api(lambda: model.predict(images, verbose=0), names=["(2, 32, 32, 1)"])


@case(
    "api-nested-list",
    "API",
    "a nested Python list of pixels",
    "model(list_of_lists)",
    "ok",
    "the same logits as the NumPy array",
)
def _(env, tmp):
    return _same_as_array(tmp)


@case(
    "api-uint8-into-float-model",
    "API",
    "raw uint8 pixels 0..255 into a float model",
    "model(uint8_images)",
    "error",
    "ValueError naming uint8 (not a silent 24 % model)",
)
def _(env, tmp):
    return _uint8_into_float_model(tmp)


@case(
    "api-run-dir-load",
    "API",
    "the shared tiny run directory",
    "read_run_dir(run).load_model()",
    "ok",
    "a VisionTransformer with the run's labels and image size",
)
def _(env, tmp):
    from keras_vit.run_dir import read_run_dir

    def check(model):
        assert type(model).__name__ == "VisionTransformer" and model.image_size == (16, 16)

    return _api(lambda: read_run_dir(env.run_dir).load_model(), check=check)


# checkpoints (.npz) ---------------------------------------------------------------------


@case(
    "api-hybrid-zero-units",
    "API",
    "resnet_layers=(1, 0): a stage without units",
    "keras_vit.ViT(resnet_layers=(1, 0))",
    "error",
    "ValueError naming resnet_layers and the 0",
)
def _(env, tmp):
    return _api(_hybrid(resnet_layers=(1, 0)), names=["resnet_layers", "=0"])


@case(
    "api-hybrid-negative-units",
    "API",
    "resnet_layers=(3, -1)",
    "keras_vit.ViT(resnet_layers=(3, -1))",
    "error",
    "ValueError naming resnet_layers and the -1",
)
def _(env, tmp):
    return _api(_hybrid(resnet_layers=(3, -1)), names=["resnet_layers", "-1"])


@case(
    "api-hybrid-fractional-units",
    "API",
    "resnet_layers=(1.5,)",
    "keras_vit.ViT(resnet_layers=(1.5,))",
    "error",
    "ValueError naming resnet_layers and the 1.5",
)
def _(env, tmp):
    return _api(_hybrid(resnet_layers=(1.5,)), names=["resnet_layers", "1.5"])


@case(
    "api-hybrid-layers-not-tuple",
    "API",
    "resnet_layers=3 (an int, not units per stage)",
    "keras_vit.ViT(resnet_layers=3)",
    "error",
    "ValueError naming resnet_layers, asking for a tuple",
)
def _(env, tmp):
    return _api(_hybrid(resnet_layers=3), names=["resnet_layers", "tuple"])


@case(
    "api-hybrid-zero-width",
    "API",
    "resnet_width=0",
    "keras_vit.ViT(resnet_layers=(1, 1), resnet_width=0)",
    "error",
    "ValueError naming resnet_width",
)
def _(env, tmp):
    return _api(_hybrid(resnet_width=0), names=["resnet_width=0"])


@case(
    "api-width-without-stem",
    "API",
    "resnet_width=2 without resnet_layers (a plain ViT has no stem to widen)",
    "keras_vit.ViT(resnet_width=2)",
    "error",
    "ValueError naming resnet_width and resnet_layers",
)
def _(env, tmp):
    return _api(_vit(resnet_width=2), names=["resnet_width=2", "resnet_layers"])


@case(
    "api-hybrid-width-groups",
    "API",
    "resnet_width=0.25: 16 root channels, not a multiple of GroupNorm's 32 groups",
    "keras_vit.ViT(resnet_layers=(1, 1), resnet_width=0.25)",
    "error",
    "ValueError naming resnet_width",
)
def _(env, tmp):
    return _api(_hybrid(resnet_width=0.25), names=["resnet_width=0.25"])


@case(
    "api-hybrid-patch-vs-feature-map",
    "API",
    "a hybrid whose 4x4 feature map (32x32 image, stride 8) does not divide into patch_size=3",
    "keras_vit.ViT(image_size=32, patch_size=3, resnet_layers=(1, 1))",
    "error",
    "ValueError naming the feature map and patch_size",
)
def _(env, tmp):
    return _api(_hybrid(patch_size=3), names=["feature map is 4x4", "patch_size=3"])


@case(
    "npz-missing",
    "checkpoints",
    "a path that does not exist",
    "load_npz(model, path)",
    "error",
    "FileNotFoundError naming the file",
)
def _(env, tmp):
    return _api(_load_npz(tiny_token_model(), tmp / "nope.npz"), FileNotFoundError, ["nope.npz"])


@case(
    "npz-text",
    "checkpoints",
    "a text file named .npz",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming the file",
)
def _(env, tmp):
    path = write_text(tmp / "text.npz")
    return _api(_load_npz(tiny_token_model(), path), _checkpoint_error(), ["text.npz"])


@case(
    "npz-directory",
    "checkpoints",
    "a folder instead of a file",
    "load_npz(model, folder)",
    "error",
    "CheckpointError naming the folder",
)
def _(env, tmp):
    (tmp / "folder.npz").mkdir()
    return _api(
        _load_npz(tiny_token_model(), tmp / "folder.npz"), _checkpoint_error(), ["folder.npz"]
    )


@case(
    "npz-truncated",
    "checkpoints",
    "the first half of a valid .npz",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming the file",
)
def _(env, tmp):
    path = truncate(FIXTURES / "tiny_token.npz", tmp / "half.npz")
    return _api(_load_npz(tiny_token_model(), path), _checkpoint_error(), ["half.npz"])


@case(
    "npz-pickle",
    "checkpoints",
    "an object array whose unpickling would create a file",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming the key; the payload never runs (safe load)",
)
def _(env, tmp):
    marker = tmp / "payload_ran"
    path = pickled_npz(tmp / "pickled.npz", marker)
    load = _load_npz(tiny_token_model(), path)

    def call():
        try:
            return load()
        finally:
            assert not marker.exists(), "the pickle payload ran"

    return _api(call, _checkpoint_error(), ["pickled.npz", "embedding/kernel"])


@case(
    "npz-int-dtype",
    "checkpoints",
    "a key holding int32 weights",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming the key and dtype",
)
def _(env, tmp):
    path = tiny_npz(tmp / "ints.npz", cls=np.zeros((1, 1, 32), np.int32))
    return _api(_load_npz(tiny_token_model(), path), _checkpoint_error(), ["'cls'", "int32"])


@case(
    "npz-compressed-corrupt",
    "checkpoints",
    "a compressed .npz with a damaged stream",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming the file (no zlib.error)",
)
def _(env, tmp):
    path = corrupt_compressed_npz(tmp / "damaged.npz")
    return _api(_load_npz(tiny_token_model(), path), _checkpoint_error(), ["damaged.npz"])


@case(
    "npz-zip-without-arrays",
    "checkpoints",
    "a zip holding a .txt and no .npy",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming the file",
)
def _(env, tmp):
    path = zip_without_npy(tmp / "plain.npz")
    return _api(_load_npz(tiny_token_model(), path), _checkpoint_error(), ["plain.npz"])


@case(
    "npz-wrong-patch",
    "checkpoints",
    "tiny_token.npz (patch 8) into a patch-4 model",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming patch_size",
)
def _(env, tmp):
    model = tiny_token_model(patch_size=4)
    return _api(
        _load_npz(model, FIXTURES / "tiny_token.npz"), _checkpoint_error(), ["patch_size=4"]
    )


@case(
    "npz-wrong-depth",
    "checkpoints",
    "a 2-block file into a 3-block model",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming num_layers",
)
def _(env, tmp):
    model = tiny_token_model(num_layers=3)
    return _api(
        _load_npz(model, FIXTURES / "tiny_token.npz"), _checkpoint_error(), ["num_layers=3"]
    )


@case(
    "npz-missing-key",
    "checkpoints",
    "a file without the class token",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming the pooling mismatch",
)
def _(env, tmp):
    path = tiny_npz(tmp / "nocls.npz", cls=None)
    return _api(_load_npz(tiny_token_model(), path), _checkpoint_error(), ["pooling"])


@case(
    "npz-unexpected-key",
    "checkpoints",
    "an extra key 'extra/kernel'",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming the key",
)
def _(env, tmp):
    path = tiny_npz(tmp / "extra.npz", **{"extra/kernel": np.zeros(3, np.float32)})
    return _api(_load_npz(tiny_token_model(), path), _checkpoint_error(), ["extra/kernel"])


@case(
    "npz-wrong-shape",
    "checkpoints",
    "a layer-norm scale of the wrong length",
    "load_npz(model, path)",
    "error",
    "CheckpointError naming the key and shapes",
)
def _(env, tmp):
    key = "Transformer/encoder_norm/scale"
    path = tiny_npz(tmp / "shape.npz", **{key: np.ones(5, np.float32)})
    return _api(_load_npz(tiny_token_model(), path), _checkpoint_error(), ["encoder_norm", "(5)"])


@case(
    "npz-posemb-method",
    "checkpoints",
    "posemb_method='nearest'",
    "load_npz(model, path, posemb_method='nearest')",
    "error",
    "ValueError naming posemb_method",
)
def _(env, tmp):
    load = _load_npz(tiny_token_model(), FIXTURES / "tiny_token.npz", posemb_method="nearest")
    return _api(load, names=["posemb_method"])


@case(
    "npz-into-plain-keras",
    "checkpoints",
    "a plain keras.Sequential as the model",
    "load_npz(keras.Sequential(), path)",
    "error",
    "TypeError naming the model type",
)
def _(env, tmp):
    import keras

    return _api(
        _load_npz(keras.Sequential(), FIXTURES / "tiny_token.npz"), TypeError, ["Sequential"]
    )


@case(
    "npz-posemb-source-grid",
    "checkpoints",
    "16 positions declared a 2x8 grid, into a 4x4 model",
    "load_npz(model, path, source_grid=(2, 8))",
    "ok",
    "resampled from 2x8 to 4x4 and reported in LoadSummary.posemb_resized",
)
def _(env, tmp):
    return _posemb_2x8(tmp)


@case(
    "npz-posemb-grid-2x8",
    "checkpoints",
    "save_npz of a model on a 2x8 patch grid, loaded into a 4x4 model (same 16 positions)",
    "load_npz(model, path)",
    "ok",
    "resampled from 2x8 to 4x4, not copied position for position",
)
def _(env, tmp):
    from keras_vit.checkpoints import save_npz

    path = save_npz(tiny_token_model(image_size=(16, 64), seed=1), tmp / "wide.npz")

    def check(summary):
        assert summary.posemb_resized == ((2, 8), (4, 4)), summary.posemb_resized

    return _api(_load_npz(tiny_token_model(), path), check=check)


@case(
    "npz-hybrid-missing-key",
    "checkpoints",
    "a hybrid file without block1/unit1/conv2/kernel",
    "load_npz(hybrid, path)",
    "error",
    "CheckpointError naming the missing stem key and the file; nothing loaded",
)
def _(env, tmp):
    path = hybrid_npz(tmp / "no_conv2.npz", **{"block1/unit1/conv2/kernel": None})
    model = tiny_hybrid_model()
    names = ["block1/unit1/conv2/kernel", "no_conv2.npz"]
    return _api(_load_npz(model, path), _checkpoint_error(), names)


@case(
    "npz-hybrid-groupnorm-shape",
    "checkpoints",
    "a hybrid file whose gn_root/scale has 16 values for 32 channels",
    "load_npz(hybrid, path)",
    "error",
    "CheckpointError naming the key and both shapes",
)
def _(env, tmp):
    path = hybrid_npz(tmp / "gn.npz", **{"gn_root/scale": np.ones((1, 1, 1, 16), np.float32)})
    names = ["gn_root/scale", "(1, 1, 1, 16)", "gn.npz"]
    return _api(_load_npz(tiny_hybrid_model(), path), _checkpoint_error(), names)


@case(
    "npz-hybrid-into-plain",
    "checkpoints",
    "a hybrid file into a plain ViT",
    "load_npz(plain_vit, hybrid.npz)",
    "error",
    "CheckpointError saying the file is a hybrid and naming resnet_layers",
)
def _(env, tmp):
    import keras_vit

    path = hybrid_npz(tmp / "hybrid.npz")
    plain = keras_vit.ViT(**TINY, num_classes=10)
    return _api(_load_npz(plain, path), _checkpoint_error(), ["hybrid", "resnet_layers"])


@case(
    "npz-hybrid-other-stages",
    "checkpoints",
    "a hybrid file with stages (1, 1) into a hybrid with resnet_layers=(1,)",
    "load_npz(hybrid, path)",
    "error",
    "CheckpointError naming both stage layouts",
)
def _(env, tmp):
    from fixtures import synthetic_hybrid

    import keras_vit

    path = hybrid_npz(tmp / "stages.npz")
    model = keras_vit.ViT(**{**synthetic_hybrid.CONFIGS["tiny_r2"], "resnet_layers": (1,)})
    names = ["resnet_layers=(1, 1)", "resnet_layers=(1,)"]
    return _api(_load_npz(model, path), _checkpoint_error(), names)


@case(
    "npz-hybrid-valid",
    "checkpoints",
    "the synthetic tiny hybrid file in the released layout",
    "load_npz(hybrid, path)",
    "ok",
    "every stem weight loaded, head included",
)
def _(env, tmp):
    def check(summary):
        assert summary.head_loaded
        assert {"conv_root/kernel", "gn_root/scale", "block2/unit1/conv_proj/kernel"} <= set(
            summary.loaded
        )

    path = hybrid_npz(tmp / "hybrid.npz")
    return _api(_load_npz(tiny_hybrid_model(), path), check=check)


@case(
    "npz-valid",
    "checkpoints",
    "the committed tiny_token.npz",
    "load_npz(model, path)",
    "ok",
    "every weight loaded, head included",
)
def _(env, tmp):
    def check(summary):
        assert summary.head_loaded and summary.posemb_resized is None
        assert "Transformer/encoder_norm/scale" in summary.loaded

    return _api(_load_npz(tiny_token_model(), FIXTURES / "tiny_token.npz"), check=check)


@case(
    "npz-save-no-overwrite",
    "checkpoints",
    "save_npz onto an existing file",
    "save_npz(model, existing)",
    "preserved",
    "FileExistsError naming the file; the old file unchanged",
)
def _(env, tmp):
    from keras_vit.checkpoints import save_npz

    existing = tmp / "weights.npz"
    shutil.copy(FIXTURES / "tiny_token.npz", existing)
    model = tiny_token_model(seed=3)
    return _api(
        lambda: save_npz(model, existing), FileExistsError, ["weights.npz"], preserved=[existing]
    )


# train ----------------------------------------------------------------------------------


def _train_cli(env, tmp, *args, names=(), preserved=(), output=None, absent=()):
    out = output or tmp / "out"
    argv = ["--output", out, "--quiet", *NANO, *args]
    return _cli(_train(), argv, names, None, preserved, absent=absent)


@case(
    "train-unknown-dataset",
    "train",
    "--dataset cifar11",
    "python -m keras_vit.train --dataset cifar11",
    "error",
    "names 'cifar11'",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--dataset", "cifar11", names=["cifar11"])


@case(
    "train-unknown-model",
    "train",
    "--model ViT_Q99",
    "python -m keras_vit.train --model ViT_Q99",
    "error",
    "names 'ViT_Q99'",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--model", "ViT_Q99", names=["ViT_Q99"])


@case(
    "train-size-not-divisible",
    "train",
    "--image-size 30 --patch-size 8",
    "python -m keras_vit.train --image-size 30",
    "error",
    "names image size and patch_size",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--image-size=30", names=["patch_size"])


@case(
    "train-epochs-zero",
    "train",
    "--epochs 0",
    "python -m keras_vit.train --epochs 0",
    "error",
    "names epochs",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--epochs", "0", names=["epochs"])


@case(
    "train-epochs-text",
    "train",
    "--epochs abc",
    "python -m keras_vit.train --epochs abc",
    "error",
    "argparse: names --epochs",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--epochs", "abc", names=["--epochs"])


@case(
    "train-batch-negative",
    "train",
    "--batch-size -4",
    "python -m keras_vit.train --batch-size -4",
    "error",
    "names batch_size",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--batch-size", "-4", names=["batch_size"])


@case(
    "train-lr-negative",
    "train",
    "--learning-rate -1",
    "python -m keras_vit.train --learning-rate -1",
    "error",
    "names learning_rate",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--learning-rate", "-1", names=[("learning_rate", "learning rate")])


@case(
    "train-hybrid-zero-units",
    "train",
    "--resnet-layers 3,0",
    "python -m keras_vit.train --resnet-layers 3,0",
    "error",
    "argparse: names --resnet-layers and the value",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--resnet-layers=3,0", names=["--resnet-layers", "3,0"])


@case(
    "train-hybrid-patch-too-big",
    "train",
    "--resnet-layers () on 16x16 images with patch 8: the stem leaves a 4x4 map",
    "python -m keras_vit.train --image-size 16 --patch-size 8 --resnet-layers ()",
    "error",
    "names the feature map and patch_size",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--resnet-layers=()", names=["feature map is 4x4", "patch_size"])


@case(
    "train-hybrid-width-without-layers",
    "train",
    "--resnet-width 1 without --resnet-layers",
    "python -m keras_vit.train --resnet-width 1",
    "error",
    "names resnet_width and resnet_layers",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--resnet-width=1", names=["resnet_width", "resnet_layers"])


@case(
    "train-lr-inf",
    "train",
    "--learning-rate inf",
    "python -m keras_vit.train --learning-rate inf",
    "error",
    "refused before training, naming the learning rate",
)
def _(env, tmp):
    return _train_cli(
        env,
        tmp,
        "--learning-rate",
        "inf",
        names=[("learning_rate", "--learning-rate", "learning rate")],
        absent=["loss became"],
    )


@case(
    "train-mixup-nan",
    "train",
    "--mixup nan",
    "python -m keras_vit.train --mixup nan",
    "error",
    "refused before training, naming mixup",
)
def _(env, tmp):
    return _train_cli(
        env, tmp, "--mixup", "nan", names=[("mixup", "--mixup")], absent=["loss became"]
    )


@case(
    "train-mixup-negative",
    "train",
    "--mixup -1",
    "python -m keras_vit.train --mixup -1",
    "error",
    "names mixup_alpha",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--mixup", "-1", names=["mixup"])


@case(
    "train-unknown-recipe",
    "train",
    "--recipe bogus",
    "python -m keras_vit.train --recipe bogus",
    "error",
    "argparse: names --recipe",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--recipe", "bogus", names=["--recipe"])


@case(
    "train-tfds-bad-version",
    "train",
    "--dataset mnist:9.9.9",
    "python -m keras_vit.train --dataset mnist:9.9.9",
    "error",
    "names the version (no AssertionError)",
)
def _(env, tmp):
    return _train_cli(
        env, tmp, "--dataset", "mnist:9.9.9", "--data-dir", tmp / "tfds", names=["9.9.9"]
    )


@case(
    "train-weights-missing",
    "train",
    "--weights of a file that does not exist",
    "python -m keras_vit.train --weights nope.npz",
    "error",
    "names the file",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--weights", tmp / "nope.npz", names=["nope.npz"])


@case(
    "train-weights-wrong-arch",
    "train",
    "--weights of a patch-8 width-32 file for a width-16 model",
    "python -m keras_vit.train --weights tiny_token.npz",
    "error",
    "names the file and hidden_size",
)
def _(env, tmp):
    return _train_cli(
        env, tmp, "--weights", FIXTURES / "tiny_token.npz", names=["tiny_token.npz", "hidden_size"]
    )


@case(
    "train-weights-corrupt",
    "train",
    "--weights of a damaged compressed .npz",
    "python -m keras_vit.train --weights damaged.npz",
    "error",
    "names the file (no zlib.error traceback)",
)
def _(env, tmp):
    path = corrupt_compressed_npz(tmp / "damaged.npz")
    return _train_cli(env, tmp, "--weights", path, names=["damaged.npz"])


@case(
    "train-output-is-file",
    "train",
    "--output pointing at a file",
    "python -m keras_vit.train --output notes.txt",
    "preserved",
    "refused naming the file; the file unchanged",
)
def _(env, tmp):
    path = write_text(tmp / "notes.txt")
    return _train_cli(env, tmp, names=["notes.txt"], preserved=[path], output=path)


@case(
    "train-existing-run",
    "train",
    "the output of a finished run, no flag",
    "python -m keras_vit.train --output RUN",
    "preserved",
    "refused naming --resume; the run unchanged",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    return _train_cli(
        env,
        tmp,
        "--epochs",
        "1",
        "--batch-size",
        "64",
        names=["--resume"],
        preserved=[run],
        output=run,
    )


@case(
    "train-overwrite-foreign",
    "train",
    "--overwrite onto a folder holding thesis.txt",
    "python -m keras_vit.train --output FOLDER --overwrite",
    "preserved",
    "refused: not a keras-vit run directory; thesis.txt unchanged",
)
def _(env, tmp):
    folder = tmp / "mine"
    folder.mkdir()
    write_text(folder / "thesis.txt", "four years of work\n")
    return _train_cli(env, tmp, "--overwrite", names=["mine"], preserved=[folder], output=folder)


@case(
    "train-resume-and-overwrite",
    "train",
    "--resume --overwrite",
    "python -m keras_vit.train --resume --overwrite",
    "error",
    "names both flags",
)
def _(env, tmp):
    return _train_cli(env, tmp, "--resume", "--overwrite", names=["--resume", "--overwrite"])


@case(
    "train-resume-other-config",
    "train",
    "--resume with another --batch-size",
    "python -m keras_vit.train --output RUN --batch-size 2 --resume",
    "preserved",
    "refused naming batch_size with both values; the run unchanged",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    return _train_cli(
        env,
        tmp,
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--resume",
        names=["batch_size (64 in run directory, 2 now)"],
        preserved=[run],
        output=run,
    )


@case(
    "train-overwrite-then-nan",
    "train",
    "--overwrite of a finished run with a new run whose loss becomes NaN",
    "python -m keras_vit.train --output RUN --overwrite --learning-rate 1e30",
    "preserved",
    "the new run fails naming the NaN loss; the old run is still there unchanged",
    integration=True,
)
def _(env, tmp):
    run = env.copy_run(tmp)
    return _train_cli(
        env,
        tmp,
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--overwrite",
        "--learning-rate",
        "1e30",
        names=[("nan", "NaN", "non-finite")],
        preserved=[
            run / "model.keras",
            run / "config.json",
            run / "labels.txt",
            run / "history.csv",
        ],
        output=run,
    )


# data folders ---------------------------------------------------------------------------


@case(
    "data-empty-folder",
    "data folders",
    "an empty folder as --dataset",
    "python -m keras_vit.train --dataset EMPTY",
    "error",
    "names 'no class sub-folders'",
)
def _(env, tmp):
    (tmp / "empty").mkdir()
    return _train_cli(env, tmp, "--dataset", tmp / "empty", names=["no class sub-folders"])


@case(
    "data-single-class",
    "data folders",
    "a folder with one class",
    "python -m keras_vit.train --dataset ONE",
    "error",
    "names the class and 'at least two'",
)
def _(env, tmp):
    root = image_folder(tmp / "one", classes=("only",))
    return _train_cli(env, tmp, "--dataset", root, names=["'only'", "at least two"])


@case(
    "data-class-without-images",
    "data folders",
    "a class folder holding only a .txt",
    "data.folder_files(root)",
    "error",
    "DataError naming the class folder",
)
def _(env, tmp):
    from keras_vit import data

    root = image_folder(tmp / "imgs")
    (root / "empty_class").mkdir()
    write_text(root / "empty_class" / "readme.txt")
    return _api(lambda: data.folder_files(root), _data_error(), ["empty_class"])


@case(
    "data-val-without-train",
    "data folders",
    "val/ and test/ sub-folders but no train/",
    "data.folder_files(root)",
    "error",
    "DataError naming train/",
)
def _(env, tmp):
    from keras_vit import data

    root = tmp / "split"
    image_folder(root / "val")
    image_folder(root / "test")
    return _api(lambda: data.folder_files(root), _data_error(), ["train/"])


@case(
    "data-some-unreadable",
    "data folders",
    "one corrupt .png among good images",
    "data.load_examples(root, 'train', (16, 16))",
    "ok",
    "the corrupt file is skipped, the others load",
)
def _(env, tmp):
    from keras_vit import data

    root = image_folder(tmp / "imgs", per_class=6)
    (root / "a" / "0.png").write_bytes(b"\x89PNG broken")

    def check(examples):
        assert examples.class_names == ("a", "b")

    return _api(lambda: data.load_examples(str(root), "train", (16, 16)), check=check)


@case(
    "data-class-all-unreadable",
    "data folders",
    "a class folder whose every image is corrupt",
    "data.load_examples(root, 'train', (16, 16))",
    "error",
    "DataError naming the class folder (no class without training data)",
)
def _(env, tmp):
    from keras_vit import data

    root = image_folder(tmp / "imgs", classes=("a", "b", "broken"), per_class=6, bad=["broken"])
    return _api(lambda: data.load_examples(str(root), "train", (16, 16)), _data_error(), ["broken"])


@case(
    "data-class-name-newline",
    "data folders",
    "a class folder named 'b\\nc'",
    "data.folder_files(root)",
    "error",
    "DataError naming the folder (labels.txt would no longer match)",
)
def _(env, tmp):
    from keras_vit import data

    root = image_folder(tmp / "imgs", classes=("a", "b\nc"))
    return _api(lambda: data.folder_files(root), _data_error(), [("newline", "line break", "\\n")])


@case(
    "data-png16-training-reader",
    "data folders",
    "a 16-bit grey PNG",
    "data.read_rgb(path)",
    "ok",
    "the same pixels as the 8-bit PNG",
)
def _(env, tmp):
    from keras_vit import data

    path = write_png16(tmp / "deep.png")
    expected = np.asarray(data.read_rgb(write_png(tmp / "flat.png")))

    def check(pixels):
        np.testing.assert_array_equal(np.asarray(pixels), expected)

    return _api(lambda: data.read_rgb(path), check=check)


# evaluate -------------------------------------------------------------------------------


def _evaluate_cli(run, *args, names=(), check=None, preserved=(), absent=()):
    return _cli(_evaluate(), [run, *args], names, check, preserved, absent=absent)


@case(
    "evaluate-missing",
    "evaluate",
    "a folder that does not exist",
    "python -m keras_vit.evaluate nope/",
    "error",
    "names the folder and 'does not exist'",
)
def _(env, tmp):
    return _evaluate_cli(tmp / "nope", names=["nope", "does not exist"])


@case(
    "evaluate-foreign-folder",
    "evaluate",
    "a folder of images",
    "python -m keras_vit.evaluate images/",
    "error",
    "names the missing files",
)
def _(env, tmp):
    root = image_folder(tmp / "images")
    return _evaluate_cli(root, names=["model.keras", "config.json"])


@case(
    "evaluate-batch-zero",
    "evaluate",
    "--batch-size 0",
    "python -m keras_vit.evaluate RUN --batch-size 0",
    "error",
    "names --batch-size",
)
def _(env, tmp):
    return _evaluate_cli(env.run_dir, "--batch-size", "0", names=["--batch-size"])


@case(
    "evaluate-unknown-split",
    "evaluate",
    "--split dev",
    "python -m keras_vit.evaluate RUN --split dev",
    "error",
    "argparse: names --split",
)
def _(env, tmp):
    return _evaluate_cli(env.run_dir, "--split", "dev", names=["--split"])


@case(
    "evaluate-config-not-json",
    "evaluate",
    "config.json holding text",
    "python -m keras_vit.evaluate RUN",
    "error",
    "names config.json",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    write_text(run / "config.json")
    return _evaluate_cli(run, names=["config.json", "not valid JSON"])


@case(
    "evaluate-config-format",
    "evaluate",
    "config.json of another format",
    "python -m keras_vit.evaluate RUN",
    "error",
    "names config.json and the format",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    edit_config(run, lambda c: c.update(format="something-else"))
    return _evaluate_cli(run, names=["config.json", "format"])


@case(
    "evaluate-config-version",
    "evaluate",
    "config.json with format_version 99",
    "python -m keras_vit.evaluate RUN",
    "error",
    "names format_version 99",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    edit_config(run, lambda c: c.update(format_version=99))
    return _evaluate_cli(run, names=["format_version 99"])


@case(
    "evaluate-labels-count",
    "evaluate",
    "labels.txt with 3 lines for a 10-class model",
    "python -m keras_vit.evaluate RUN",
    "error",
    "names labels.txt and both counts",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    write_text(run / "labels.txt", "a\nb\nc\n")
    return _evaluate_cli(run, names=["labels.txt", "3 labels", "10 classes"])


@case(
    "evaluate-model-truncated",
    "evaluate",
    "model.keras cut in half",
    "python -m keras_vit.evaluate RUN",
    "error",
    "names model.keras (not 'File not found': the file exists)",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    truncate(env.run_dir / "model.keras", run / "model.keras")
    return _evaluate_cli(run, "--no-write", names=["model.keras"], absent=["File not found"])


@case(
    "evaluate-model-text",
    "evaluate",
    "model.keras holding text",
    "python -m keras_vit.evaluate RUN",
    "error",
    "names model.keras",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    write_text(run / "model.keras")
    return _evaluate_cli(run, "--no-write", names=["model.keras"], absent=["File not found"])


@case(
    "evaluate-model-weights-truncated",
    "evaluate",
    "model.keras: a valid zip whose weights file is cut in half",
    "python -m keras_vit.evaluate RUN",
    "error",
    "names model.keras (no OSError traceback)",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    truncated_weights_model_keras(run)
    return _evaluate_cli(run, "--no-write", names=["model.keras"])


@case(
    "evaluate-model-plain-keras",
    "evaluate",
    "model.keras of a plain Keras model",
    "python -m keras_vit.evaluate RUN",
    "error",
    "names model.keras and VisionTransformer (no AttributeError)",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    plain_model_keras(run)
    return _evaluate_cli(run, "--no-write", names=["model.keras", "VisionTransformer"])


@case(
    "evaluate-model-unregistered",
    "evaluate",
    "model.keras naming an unregistered class",
    "python -m keras_vit.evaluate RUN",
    "error",
    "names model.keras and the class",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    unregistered_model_keras(run)
    return _evaluate_cli(run, "--no-write", names=["model.keras", "MyUnknownViT"])


@case(
    "evaluate-model-lambda",
    "evaluate",
    "model.keras with a Lambda layer whose code would create a file",
    "python -m keras_vit.evaluate RUN",
    "error",
    "refused naming model.keras; the Lambda never runs (safe mode)",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    marker = tmp / "lambda_ran"
    lambda_model_keras(run, marker)
    main = _evaluate()

    def guarded(argv):
        try:
            return main(argv)
        finally:
            assert not marker.exists(), "the Lambda layer ran"

    return _cli(guarded, [run, "--no-write"], ["model.keras"])


@case(
    "evaluate-ok",
    "evaluate",
    "the shared tiny run directory",
    "python -m keras_vit.evaluate RUN --no-write",
    "ok",
    "prints the top-1 and top-5 table",
)
def _(env, tmp):
    return _evaluate_cli(env.run_dir, "--no-write", check=stdout_has("top-1", "top-5"))


# visualize ------------------------------------------------------------------------------


@case(
    "visualize-missing-image",
    "visualize",
    "an image path that does not exist",
    "python -m keras_vit.visualize RUN nope.png --output OUT",
    "error",
    "names the image",
)
def _(env, tmp):
    return _cli(
        _visualize(), [env.run_dir, tmp / "nope.png", "--output", tmp / "out"], ["nope.png"]
    )


@case(
    "visualize-model-truncated",
    "visualize",
    "model.keras cut in half",
    "python -m keras_vit.visualize RUN img.png --output OUT",
    "error",
    "names model.keras (not 'File not found': the file exists)",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    truncate(env.run_dir / "model.keras", run / "model.keras")
    image = write_png(tmp / "img.png")
    argv = [run, image, "--output", tmp / "out"]
    return _cli(_visualize(), argv, ["model.keras"], absent=["File not found"])


# export.tflite --------------------------------------------------------------------------


def _tflite_cli(run, *args, names=(), check=None, preserved=(), absent=()):
    argv = [run, "--quantize", "float32", "--no-eval", *args]
    return _cli(_tflite(), argv, names, check, preserved, absent=absent)


@case(
    "tflite-missing-run",
    "export.tflite",
    "a folder that does not exist",
    "python -m export.tflite nope/",
    "error",
    "names the folder",
)
def _(env, tmp):
    return _tflite_cli(tmp / "nope", names=["nope"])


@case(
    "tflite-unknown-quantization",
    "export.tflite",
    "--quantize int4",
    "python -m export.tflite RUN --quantize int4",
    "error",
    "argparse: names --quantize",
)
def _(env, tmp):
    return _cli(_tflite(), [env.run_dir, "--quantize", "int4"], ["--quantize"])


@case(
    "tflite-calibration-zero",
    "export.tflite",
    "--calibration-samples 0",
    "python -m export.tflite RUN --quantize int8 --calibration-samples 0",
    "error",
    "names --calibration-samples",
)
def _(env, tmp):
    argv = [
        env.run_dir,
        "--quantize",
        "int8",
        "--calibration-samples",
        "0",
        "--no-eval",
        "--output",
        tmp / "out",
    ]
    return _cli(_tflite(), argv, ["--calibration-samples"])


@case(
    "tflite-mlp-spans-zero",
    "export.tflite",
    "--mlp-spans 0",
    "python -m export.tflite RUN --quantize int8 --mlp-spans 0",
    "error",
    "names --mlp-spans",
)
def _(env, tmp):
    argv = [env.run_dir, "--quantize", "int8", "--mlp-spans", "0", "--no-eval"]
    return _cli(_tflite(), [*argv, "--output", tmp / "out"], ["--mlp-spans"])


@case(
    "tflite-weight-rounding-unknown",
    "export.tflite",
    "--weight-rounding gptq4",
    "python -m export.tflite RUN --quantize int8 --weight-rounding gptq4",
    "error",
    "names --weight-rounding",
)
def _(env, tmp):
    argv = [env.run_dir, "--quantize", "int8", "--weight-rounding", "gptq4", "--no-eval"]
    return _cli(_tflite(), [*argv, "--output", tmp / "out"], ["--weight-rounding"])


@case(
    "tflite-output-exists",
    "export.tflite",
    "--output of an existing export, no --force",
    "python -m export.tflite RUN --output OLD",
    "preserved",
    "refused naming --force; the old export unchanged",
)
def _(env, tmp):
    old = env.copy_tflite(tmp)
    return _tflite_cli(env.run_dir, "--output", old, names=["--force"], preserved=[old])


@case(
    "tflite-force-onto-run",
    "export.tflite",
    "--output RUN --force (the run being exported)",
    "python -m export.tflite RUN --output RUN --force",
    "preserved",
    "refused naming the run directory; model.keras, config.json, history.csv unchanged",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    return _tflite_cli(run, "--output", run, "--force", names=["run"], preserved=[run])


@case(
    "tflite-force-onto-foreign",
    "export.tflite",
    "--force onto a folder holding thesis.txt",
    "python -m export.tflite RUN --output FOLDER --force",
    "preserved",
    "refused: not an export folder; thesis.txt unchanged",
)
def _(env, tmp):
    folder = tmp / "mine"
    folder.mkdir()
    write_text(folder / "thesis.txt", "four years of work\n")
    return _tflite_cli(
        env.run_dir, "--output", folder, "--force", names=["mine"], preserved=[folder]
    )


@case(
    "tflite-force-onto-export",
    "export.tflite",
    "--force onto an earlier export",
    "python -m export.tflite RUN --output OLD --force",
    "ok",
    "replaced: a fresh report.json and model_float32.tflite",
)
def _(env, tmp):
    old = env.copy_tflite(tmp)
    (old / "stale.txt").write_text("from the old export")

    def check(result):
        assert (old / "report.json").is_file() and (old / "model_float32.tflite").is_file()
        assert not (old / "stale.txt").exists()

    return _tflite_cli(env.run_dir, "--output", old, "--force", check=check)


@case(
    "tflite-model-truncated",
    "export.tflite",
    "model.keras cut in half",
    "python -m export.tflite RUN",
    "error",
    "names model.keras (not 'File not found': the file exists)",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    truncate(env.run_dir / "model.keras", run / "model.keras")
    return _tflite_cli(
        run, "--output", tmp / "out", names=["model.keras"], absent=["File not found"]
    )


@case(
    "tflite-model-plain-keras",
    "export.tflite",
    "model.keras of a plain Keras model",
    "python -m export.tflite RUN",
    "error",
    "names model.keras (no AttributeError)",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    plain_model_keras(run)
    return _tflite_cli(
        run, "--output", tmp / "out", names=["model.keras"], absent=["File not found"]
    )


@case(
    "tflite-folder-mode",
    "export.tflite",
    "a fresh export under the default umask",
    "python -m export.tflite RUN --output OUT",
    "ok",
    "the folder gets the mode mkdir gives (not 0700)",
)
def _(env, tmp):
    out = tmp / "out"
    probe = tmp / "probe"
    probe.mkdir()
    expected = probe.stat().st_mode & 0o777

    def check(result):
        assert out.stat().st_mode & 0o777 == expected, oct(out.stat().st_mode)

    return _tflite_cli(env.run_dir, "--output", out, check=check)


# export.saved_model ---------------------------------------------------------------------


def _saved_cli(run, *args, names=(), check=None, preserved=(), absent=()):
    return _cli(_saved_model(), [run, *args], names, check, preserved, absent=absent)


@case(
    "saved-missing-run",
    "export.saved_model",
    "a folder that does not exist",
    "python -m export.saved_model nope/",
    "error",
    "names the folder",
)
def _(env, tmp):
    return _saved_cli(tmp / "nope", names=["nope"])


@case(
    "saved-output-exists",
    "export.saved_model",
    "--output of an existing SavedModel, no --force",
    "python -m export.saved_model RUN --output OLD",
    "preserved",
    "refused naming --force; the old SavedModel unchanged",
)
def _(env, tmp):
    old = Path(shutil.copytree(env.saved_model, tmp / "old"))
    return _saved_cli(env.run_dir, "--output", old, names=["--force"], preserved=[old])


@case(
    "saved-force-onto-run",
    "export.saved_model",
    "--output RUN --force",
    "python -m export.saved_model RUN --output RUN --force",
    "preserved",
    "refused; the run directory unchanged",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    return _saved_cli(run, "--output", run, "--force", names=["run"], preserved=[run])


@case(
    "saved-force-onto-foreign",
    "export.saved_model",
    "--force onto a folder holding thesis.txt",
    "python -m export.saved_model RUN --output FOLDER --force",
    "preserved",
    "refused: not an export folder; thesis.txt unchanged",
)
def _(env, tmp):
    folder = tmp / "mine"
    folder.mkdir()
    write_text(folder / "thesis.txt", "four years of work\n")
    return _saved_cli(
        env.run_dir, "--output", folder, "--force", names=["mine"], preserved=[folder]
    )


@case(
    "saved-model-text",
    "export.saved_model",
    "model.keras holding text",
    "python -m export.saved_model RUN",
    "error",
    "names model.keras (not 'File not found': the file exists)",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    write_text(run / "model.keras")
    return _saved_cli(
        run, "--output", tmp / "out", names=["model.keras"], absent=["File not found"]
    )


@case(
    "saved-model-unregistered",
    "export.saved_model",
    "model.keras naming an unregistered class",
    "python -m export.saved_model RUN",
    "error",
    "names model.keras and the class",
)
def _(env, tmp):
    run = env.copy_run(tmp)
    unregistered_model_keras(run)
    return _saved_cli(run, "--output", tmp / "out", names=["model.keras", "MyUnknownViT"])


# SavedModel signature -------------------------------------------------------------------


def _serve(env, images):
    import tensorflow as tf

    serving = env.serving
    return lambda: serving(images=tf.constant(images))


def _serving_errors():
    """What a TensorFlow signature raises for a wrong input (its message spans lines)."""
    import tensorflow as tf

    return (TypeError, ValueError, tf.errors.InvalidArgumentError)


@case(
    "signature-ok",
    "SavedModel signature",
    "a batch of two 16x16 uint8 images",
    "serving_default(images=...)",
    "ok",
    "2 rows of probabilities summing to 1, class names from labels.txt",
)
def _(env, tmp):
    images = np.stack([np.repeat(grey_digit()[..., None], 3, -1)] * 2)

    def check(outputs):
        probabilities = outputs["probabilities"].numpy()
        assert probabilities.shape == (2, 10)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
        assert {n.decode() for n in outputs["class_names"].numpy()} <= set(env.labels)

    return _api(_serve(env, images), check=check)


@case(
    "signature-wrong-dtype",
    "SavedModel signature",
    "float32 images into the uint8 signature",
    "serving_default(images=float32)",
    "error",
    "TensorFlow's error naming the expected uint8",
)
def _(env, tmp):
    images = np.zeros((1, 16, 16, 3), np.float32)
    return _api(_serve(env, images), _serving_errors(), ["uint8"], one_line=False)


@case(
    "signature-double-size",
    "SavedModel signature",
    "a 32x32 image into the 16x16 signature",
    "serving_default(images=(1, 32, 32, 3))",
    "error",
    "an error naming the shape [1,32,32,3] and the expected [?,16,16,3], not 4 rows folded "
    "from one image",
)
def _(env, tmp):
    images = np.zeros((1, 32, 32, 3), np.uint8)
    return _api(
        _serve(env, images), _serving_errors(), ["[1,32,32,3]", "[?,16,16,3]"], one_line=False
    )


@case(
    "signature-odd-size",
    "SavedModel signature",
    "a 20x20 image into the 16x16 signature",
    "serving_default(images=(1, 20, 20, 3))",
    "error",
    "an error naming the shape [1,20,20,3] and the expected [?,16,16,3], not a reshape "
    "failure deep inside",
)
def _(env, tmp):
    images = np.zeros((1, 20, 20, 3), np.uint8)
    return _api(
        _serve(env, images), _serving_errors(), ["[1,20,20,3]", "[?,16,16,3]"], one_line=False
    )


# TFLite files ---------------------------------------------------------------------------


def _classifier(path, **kwargs):
    from export.runtime import Classifier

    return lambda: Classifier(path, **kwargs)


@case(
    "tflite-file-missing",
    "TFLite files",
    "a .tflite path that does not exist",
    "Classifier(path)",
    "error",
    "ModelFileError naming the file",
)
def _(env, tmp):
    return _api(_classifier(tmp / "nope.tflite"), _model_file_error(), ["nope.tflite"])


@case(
    "tflite-file-text",
    "TFLite files",
    "a text file named .tflite",
    "Classifier(path)",
    "error",
    "ModelFileError naming the file",
)
def _(env, tmp):
    path = write_text(tmp / "text.tflite")
    return _api(_classifier(path), _model_file_error(), ["text.tflite"])


@case(
    "tflite-file-truncated",
    "TFLite files",
    "the first 2000 bytes of a valid model",
    "Classifier(path)",
    "error",
    "ModelFileError naming the file",
)
def _(env, tmp):
    path = tmp / "cut.tflite"
    path.write_bytes(env.tflite.read_bytes()[:2000])
    return _api(_classifier(path), _model_file_error(), ["cut.tflite"])


@case(
    "tflite-file-labels-count",
    "TFLite files",
    "labels=['a', 'b'] for a 10-class model",
    "Classifier(path, labels=['a', 'b'])",
    "error",
    "ModelFileError naming both counts",
)
def _(env, tmp):
    return _api(
        _classifier(env.tflite, labels=["a", "b"]), _model_file_error(), ["10 outputs", "2 labels"]
    )


@case(
    "tflite-file-wrong-shape",
    "TFLite files",
    "a 32x32 image into a 16x16 model",
    "classifier.predict(image)",
    "error",
    "ValueError naming the received shape",
)
def _(env, tmp):
    from export.runtime import Classifier

    classifier = Classifier(env.tflite)
    image = np.zeros((32, 32, 3), np.uint8)
    return _api(lambda: classifier.predict(image), names=["(1, 32, 32, 3)"])


@case(
    "tflite-file-summary-garbage",
    "TFLite files",
    "random bytes",
    "tflite_reader.read_summary(bytes)",
    "error",
    "TFLiteFormatError",
)
def _(env, tmp):
    from export import tflite_reader

    content = np.random.default_rng(0).bytes(512)
    return _api(
        lambda: tflite_reader.read_summary(content),
        tflite_reader.TFLiteFormatError,
        [("FlatBuffer", "identifier", "TFLite")],
    )


@case(
    "tflite-file-ok",
    "TFLite files",
    "the shared float32 export and a PNG",
    "Classifier(path).classify_files([png])",
    "ok",
    "one top-3 answer whose labels are the run's labels",
)
def _(env, tmp):
    image = write_png(tmp / "img.png")

    def check(result):
        (top,) = result
        assert len(top) == 3 and {p.label for p in top} <= set(env.labels)

    from export.runtime import Classifier

    return _api(lambda: Classifier(env.tflite).classify_files([image], top_k=3), check=check)


# predict --------------------------------------------------------------------------------


def _predict_cli(env, *args, names=(), check=None):
    return _cli(_predict(), [env.tflite, *args], names, check)


@case(
    "predict-top-k-zero",
    "predict",
    "--top-k 0",
    "python -m export.predict MODEL img.png --top-k 0",
    "error",
    "names --top-k",
)
def _(env, tmp):
    return _predict_cli(env, write_png(tmp / "img.png"), "--top-k", "0", names=["--top-k"])


@case(
    "predict-threads-zero",
    "predict",
    "--threads 0",
    "python -m export.predict MODEL img.png --threads 0",
    "error",
    "names --threads (not 'install ai-edge-litert')",
)
def _(env, tmp):
    return _predict_cli(env, write_png(tmp / "img.png"), "--threads", "0", names=["--threads"])


@case(
    "predict-missing-image",
    "predict",
    "an image path that does not exist",
    "python -m export.predict MODEL nope.png",
    "error",
    "names the image",
)
def _(env, tmp):
    return _predict_cli(env, tmp / "nope.png", names=["nope.png"])


@case(
    "predict-text-image",
    "predict",
    "a text file named .jpg",
    "python -m export.predict MODEL notes.jpg",
    "error",
    "names the file",
)
def _(env, tmp):
    return _predict_cli(env, write_text(tmp / "notes.jpg"), names=["notes.jpg"])


@case(
    "predict-truncated-model",
    "predict",
    "a .tflite cut at 2000 bytes",
    "python -m export.predict cut.tflite img.png",
    "error",
    "names the model file",
)
def _(env, tmp):
    path = tmp / "cut.tflite"
    path.write_bytes(env.tflite.read_bytes()[:2000])
    return _cli(_predict(), [path, write_png(tmp / "img.png")], ["cut.tflite"])


@case(
    "predict-ok",
    "predict",
    "the shared float32 export and a PNG",
    "python -m export.predict MODEL img.png --top-k 2",
    "ok",
    "prints the file and two ranked labels",
)
def _(env, tmp):
    image = write_png(tmp / "img.png")
    return _predict_cli(env, image, "--top-k", "2", check=stdout_has("img.png", "1. ", "2. "))


@case(
    "predict-png16",
    "predict",
    "a 16-bit grey PNG",
    "export.runtime.load_image(path, size)",
    "ok",
    "the same pixels as the 8-bit PNG (not clipped to white)",
)
def _(env, tmp):
    from export.runtime import load_image

    expected = load_image(write_png(tmp / "flat.png"), (16, 16))
    path = write_png16(tmp / "deep.png")

    def check(pixels):
        np.testing.assert_array_equal(pixels, expected)

    return _api(lambda: load_image(path, (16, 16)), check=check)


def _same_answers(result) -> None:
    """The predict CLI printed the same ranked labels and scores for each of its images."""
    out, _ = result
    blocks = [block.splitlines()[1:] for block in out.strip().split("\n/") if block]
    assert len(blocks) == 2 and blocks[0] and blocks[0] == blocks[1], out


@case(
    "predict-png16-cli",
    "predict",
    "an 8-bit PNG and the same picture as a 16-bit grey PNG",
    "python -m export.predict MODEL flat.png deep.png --top-k 3",
    "ok",
    "the same top-3 labels and scores for both files",
)
def _(env, tmp):
    flat, deep = write_png(tmp / "flat.png"), write_png16(tmp / "deep.png")
    return _predict_cli(env, flat, deep, "--top-k", "3", check=_same_answers)


@case(
    "predict-exif-rotation",
    "predict",
    "a JPEG stored sideways with EXIF orientation",
    "export.runtime.load_image(path, size)",
    "ok",
    "the upright picture",
)
def _(env, tmp):
    from export.runtime import load_image

    path, upright = write_exif_rotated(tmp / "phone.jpg")

    def check(pixels):
        assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 8

    return _api(lambda: load_image(path, upright.shape[:2]), check=check)


@case(
    "predict-webp-tiff",
    "predict",
    "the same picture as .webp (lossless) and .tiff",
    "export.runtime.load_image(path, size)",
    "ok",
    "both read as the PNG's pixels",
)
def _(env, tmp):
    from PIL import Image

    from export.runtime import load_image

    png = write_png(tmp / "img.png")
    expected = load_image(png, (16, 16))
    with Image.open(png) as image:
        image.save(tmp / "img.webp", lossless=True)
        image.save(tmp / "img.tiff")

    def check(pixels):
        for array in pixels:
            np.testing.assert_array_equal(array, expected)

    return _api(
        lambda: [load_image(tmp / f"img.{e}", (16, 16)) for e in ("webp", "tiff")], check=check
    )


@case(
    "predict-image-api-missing",
    "predict",
    "load_image of a missing file",
    "export.runtime.load_image(path, size)",
    "error",
    "ImageFileError naming the file",
)
def _(env, tmp):
    from export.runtime import load_image

    return _api(lambda: load_image(tmp / "gone.png", (16, 16)), _image_file_error(), ["gone.png"])


# faults ---------------------------------------------------------------------------------


@case(
    "fault-kill-mid-epoch",
    "faults",
    "kill -9 during epoch 2 of 4, then --resume",
    "python -m keras_vit.train ... ; kill -9 ; ... --resume",
    "ok",
    "history.csv has epochs 1-4 with no gap, finite learning rates, model.keras loads",
    integration=True,
)
def _(env, tmp):
    return _api(lambda: kill_mid_epoch_then_resume(tmp), check=lambda _: None)


@case(
    "fault-corrupt-latest-backup",
    "faults",
    "kill -9 after epoch 2, then backup/latest.weights.h5 cut to 100 bytes, then --resume",
    "python -m keras_vit.train ... --resume",
    "ok",
    "falls back to the previous backup; epochs 1-4 in history.csv; model.keras loads",
    integration=True,
)
def _(env, tmp):
    return _api(lambda: corrupt_latest_backup_then_resume(tmp), check=lambda _: None)


@case(
    "fault-kill-mid-export",
    "faults",
    "kill -9 while export.tflite writes, then the same command",
    "python -m export.tflite RUN --output OUT ; kill -9 ; again",
    "ok",
    "the rerun completes; no .OUT.*.tmp beside it and no keras_vit_export_* in TMPDIR",
    integration=True,
)
def _(env, tmp):
    return _api(lambda: kill_mid_export_then_rerun(env, tmp), check=lambda _: None)
