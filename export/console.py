"""What the export command lines print: this project's progress, not TensorFlow's chatter.

`configure_logging` (called by each CLI's `main`) sends the `export` and `keras_vit`
loggers to stderr as plain lines and, unless `--verbose` or the user set
`TF_CPP_MIN_LOG_LEVEL` themselves, hides TensorFlow's, absl's and the converter's log
lines. TensorFlow reads its level when it is first imported, which is why the CLIs import
it late. The converter's C++ code writes to file descriptor 2 directly, past any Python
setting: `native_stderr_captured` redirects it to an anonymous temporary file around a
step and replays what it caught only if the step fails.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator

from export import ENVIRONMENT_LOG_LEVEL

PACKAGE_LOGGERS = ("export", "keras_vit")

# Loggers of the libraries whose INFO / WARNING lines are hidden by default.
LIBRARY_LOGGERS = ("tensorflow", "absl", "h5py", "jax")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a record is emitted."""

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
    return not verbose and ENVIRONMENT_LOG_LEVEL is None


def configure_logging(verbose: bool = False) -> bool:
    """Sets up a CLI's logging; call it before TensorFlow is imported.

    Args:
        verbose: show TensorFlow's, absl's and the converter's log lines too.

    Returns:
        Whether library chatter is hidden (pass it on as `capture_native_logs`).
    """
    quiet = quiet_requested(verbose)
    if quiet:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # read when TensorFlow's C++ starts
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    for name in PACKAGE_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if not isinstance(h, _StderrHandler)]
        handler = _StderrHandler()
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
