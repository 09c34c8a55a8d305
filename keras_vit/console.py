"""How the command-line tools talk to a terminal: log setup, TensorFlow's chatter, progress.

TensorFlow prints its own lines (absl, oneDNN, CUDA, CPU features) from C++ while it is
imported and while it finds its devices; no environment variable silences all of them.
`native_logs_hidden` sends the process's stderr to a temporary file during those steps
and replays it only if they fail. It does nothing when the user asked for the lines
(`--verbose`) or set `TF_CPP_MIN_LOG_LEVEL` themselves. Needs only the standard library.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

USER_LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"


def hide_native_logs(verbose: bool) -> bool:
    """Whether TensorFlow's own log lines should be hidden: not `verbose`, not user-set."""
    return not verbose and USER_LOG_LEVEL_VARIABLE not in os.environ


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (not when created)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(verbose: bool, package: str = "keras_vit") -> None:
    """Shows `package`'s INFO lines on stderr (the message alone); the root logger is left
    alone. Without `verbose`, TensorFlow's and absl's Python loggers show errors only."""
    if hide_native_logs(verbose):
        for name in ("tensorflow", "absl"):
            logging.getLogger(name).setLevel(logging.ERROR)
    logger = logging.getLogger(package)
    if not any(isinstance(handler, StderrHandler) for handler in logger.handlers):
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@contextmanager
def native_logs_hidden(enabled: bool) -> Iterator[None]:
    """Sends file descriptor 2 to a temporary file inside the block when `enabled`.

    On an exception the captured text is written to stderr before the exception goes on,
    so a failure is never hidden.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode("utf-8", errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow_quietly(verbose: bool) -> None:
    """Imports TensorFlow and lets it find its devices, its C++ lines hidden (see above)."""
    if "tensorflow" in sys.modules:
        return
    hide = hide_native_logs(verbose)
    if hide:
        os.environ[USER_LOG_LEVEL_VARIABLE] = "3"  # and the C++ lines printed later
    with native_logs_hidden(hide):
        import tensorflow as tf

        tf.config.list_physical_devices()


def fit_verbosity(quiet: bool) -> int:
    """`model.fit` verbosity: none, a progress bar on a terminal, else one line per epoch."""
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2
