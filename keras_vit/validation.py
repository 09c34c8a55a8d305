"""Argument checks and seed derivation shared by the layers and the model.

Each check raises one `ValueError` line in the Keras style: what was expected, then
`Received: name=value`.
"""

from __future__ import annotations


def check_positive_int(name: str, value) -> None:
    """Raises ValueError unless `value` is an int (not a bool) greater than 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")


def check_rate(name: str, value) -> None:
    """Raises ValueError unless `value` is a number in [0, 1) (a dropout-style rate)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"Expected `{name}` to be a float in [0, 1). Received: {name}={value!r}")


def check_seed(value) -> None:
    """Raises ValueError unless `value` is None or an int (not a bool)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"Expected `seed` to be an int or None. Received: seed={value!r}")


def sub_seed(seed: int | None, offset: int) -> int | None:
    """Derives a stable per-sublayer seed from a layer seed (None stays None)."""
    return None if seed is None else seed + offset


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when the message is empty).

    For one-line error messages built from a library's often multi-line exception.
    """
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__
