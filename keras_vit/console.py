"""What the command lines print: this project's progress, not TensorFlow's chatter.

TensorFlow, absl, JAX and the TFLite converter print their own lines (oneDNN, CUDA, CPU
features, MLIR passes), partly from C++ straight to file descriptor 2, past any Python
setting; no environment variable silences all of them. Every CLI calls `configure_logging`
first: it sends the `keras_vit` and `export` loggers to stderr as plain lines and, unless
`--verbose` or the user set `TF_CPP_MIN_LOG_LEVEL` themselves, hides the libraries' lines.
`native_stderr_captured` sends file descriptor 2 to an anonymous temporary file around a
step (importing TensorFlow, a conversion) and replays what it caught only if the step
fails. Needs only the standard library.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"

# The level as the user's environment set it, read when this module is first imported:
# before TensorFlow or JAX (whose `__init__` sets a default) in every CLI, since
# `keras_vit.train` and the `export` package import this module first.
USER_LOG_LEVEL = os.environ.get(LOG_LEVEL_VARIABLE)

PACKAGE_LOGGERS = ("keras_vit", "export")

# Loggers of the libraries whose INFO / WARNING lines are hidden by default.
LIBRARY_LOGGERS = ("tensorflow", "absl", "h5py", "jax")


class StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted (not when created)."""

    def __init__(self):
        super().__init__()

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def quiet_requested(verbose: bool) -> bool:
    """Whether library chatter is hidden: not `--verbose`, and the user set no log level."""
    return not verbose and USER_LOG_LEVEL is None


def configure_logging(verbose: bool = False) -> bool:
    """Sets up a CLI's logging; call it before TensorFlow is imported.

    Args:
        verbose: show TensorFlow's, absl's and the converter's log lines too, and this
            project's debug lines.

    Returns:
        Whether library chatter is hidden (pass it on to `native_stderr_captured`).
    """
    quiet = quiet_requested(verbose)
    if quiet:
        os.environ[LOG_LEVEL_VARIABLE] = "3"  # read when TensorFlow's C++ starts
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    for name in PACKAGE_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, StderrHandler)]
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if verbose else logging.INFO)
        logger.propagate = False
    return quiet


def _writes_to_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def native_stderr_captured(
    enabled: bool = True, expected_errors: tuple[type[BaseException], ...] = ()
) -> Iterator[None]:
    """Catches what native code writes to file descriptor 2; replays it if the step fails.

    Python's own `sys.stderr` (log records, warnings, error lines) keeps going where it
    went. The capture is an anonymous temporary file: nothing is left behind.

    Args:
        enabled: capture at all (False: a no-op, for `--verbose`).
        expected_errors: exceptions that are a user's mistake with their own one-line
            message: the capture is discarded for them instead of replayed.
    """
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    python_stderr = sys.stderr
    swap = _writes_to_fd2(python_stderr)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        if swap:
            sys.stderr = os.fdopen(os.dup(saved_fd), "w", buffering=1, closefd=True)
        failed = False
        try:
            yield
        except expected_errors:
            raise
        except BaseException:
            failed = True
            raise
        finally:
            if swap:
                sys.stderr.flush()
                sys.stderr.close()
                sys.stderr = python_stderr
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            if failed:
                capture.seek(0)
                text = capture.read().decode("utf-8", "replace").rstrip()
                if text:
                    print(text, file=sys.stderr)


def import_tensorflow_quietly(verbose: bool) -> None:
    """Imports TensorFlow and lets it find its devices, its C++ lines hidden (see above)."""
    if "tensorflow" in sys.modules:
        return
    quiet = quiet_requested(verbose)
    if quiet:
        os.environ[LOG_LEVEL_VARIABLE] = "3"  # and the C++ lines printed later
    with native_stderr_captured(quiet):
        import tensorflow as tf

        tf.config.list_physical_devices()


def fit_verbosity(quiet: bool) -> int:
    """`model.fit` verbosity: none, a progress bar on a terminal, else one line per epoch."""
    if quiet:
        return 0
    return 1 if sys.stdout.isatty() else 2
