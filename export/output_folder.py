"""The folders an export writes: which ones `--force` may replace, and how they are written.

An export folder is built in a hidden temporary sibling (`keras_vit.atomic_directory`)
and moved into place when complete. It carries a small marker file, `MARKER_FILE`, so that a
later `--force` can tell a folder this project wrote from anything else: `--force` replaces
only such a folder, never the run directory being exported (nor a folder that contains it),
never a file and never a foreign folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from keras_vit.atomic import atomic_directory

MARKER_FILE = ".keras_vit_export"
MARKER_FORMAT = "keras-vit-export"
# What a SavedModel folder written before the marker existed holds, and nothing else.
_SAVED_MODEL_ENTRIES = frozenset({"saved_model.pb", "variables", "assets", "fingerprint.pb"})


class OutputFolderError(ValueError):
    """An output folder the export must not write into or replace."""


def is_export_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder an export of this project wrote.

    True for a folder with the marker file; also for the folders older exports wrote
    without it: a TFLite export (its `report.json` names the run directory and the files)
    and a SavedModel export (only SavedModel entries, with `assets/labels.txt`).
    """
    path = Path(path)
    if not path.is_dir() or path.is_symlink():
        return False
    marker = path / MARKER_FILE
    if marker.is_file():
        try:
            return json.loads(marker.read_text(encoding="utf-8")).get("format") == MARKER_FORMAT
        except (OSError, ValueError, AttributeError):
            return False
    report = path / "report.json"
    if report.is_file():
        try:
            content = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(content, dict) and {"checkpoint", "files"} <= content.keys()
    names = {entry.name for entry in path.iterdir()}
    return (
        "saved_model.pb" in names
        and names <= _SAVED_MODEL_ENTRIES
        and (path / "assets" / "labels.txt").is_file()
    )


def check_output(output: str | os.PathLike, run_dir: str | os.PathLike, overwrite: bool) -> None:
    """Raises unless an export of `run_dir` may write `output`.

    Raises:
        OutputFolderError: `output` is the run directory or a folder containing it, a
            file, or (with `overwrite`) a non-empty folder this project did not write.
        FileExistsError: `output` is a non-empty folder and `overwrite` is False.
    """
    output, run = Path(output), Path(run_dir).resolve()
    resolved = output.resolve()
    if resolved == run or resolved in run.parents:
        raise OutputFolderError(
            f"Output {output} is the run directory being exported or a folder containing it; "
            "choose another --output"
        )
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise OutputFolderError(f"Output {output} exists and is not a folder; nothing was changed")
    if not output.exists() or not any(output.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(f"Output {output} already exists; pass --force to overwrite it")
    if not is_export_folder(output):
        raise OutputFolderError(
            f"--force replaces only a folder written by a keras-vit export, and {output} is not "
            f"one (no {MARKER_FILE}); remove it yourself or choose another --output"
        )


def remove_stale_temporaries(output: str | os.PathLike) -> list[Path]:
    """Removes the hidden build folders an interrupted export of `output` left beside it.

    Only `.<name>.XXXXXXXX.tmp` siblings that are empty or carry the marker file are
    removed: the folders `atomic_directory` creates for an export.

    Returns:
        The removed folders.
    """
    output = Path(output)
    parent = output.parent
    if not parent.is_dir():
        return []
    pattern = re.compile(rf"^\.{re.escape(output.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed = []
    for entry in parent.iterdir():
        if not pattern.match(entry.name) or entry.is_symlink() or not entry.is_dir():
            continue
        if (entry / MARKER_FILE).is_file() or not any(entry.iterdir()):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


def _default_folder_mode() -> int:
    """The mode `mkdir` gives a new folder under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


@contextlib.contextmanager
def export_folder(
    output: str | os.PathLike, run_dir: str | os.PathLike, overwrite: bool, kind: str
) -> Iterator[Path]:
    """Builds an export folder: checked, written in a hidden sibling, moved into place.

    Args:
        output: the folder to write.
        run_dir: the run directory being exported (never replaced).
        overwrite: replace an existing export folder (`--force`).
        kind: what the folder holds (`"tflite"`, `"saved_model"`), recorded in the marker.

    Yields:
        The temporary folder to write into; on an exception it is removed and `output` is
        left as it was.

    Raises:
        OutputFolderError, FileExistsError: see `check_output`; nothing is written.
    """
    check_output(output, run_dir, overwrite)
    remove_stale_temporaries(output)
    with atomic_directory(output, overwrite=True) as tmp:
        marker = {"format": MARKER_FORMAT, "kind": kind}
        (tmp / MARKER_FILE).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        yield tmp
        os.chmod(tmp, _default_folder_mode())
