"""Argument checks and seed derivation shared by the layers and the model.

Each check raises one `ValueError` line in the Keras style: what was expected, then
`Received: name=value`.
"""

from __future__ import annotations

from collections.abc import Sequence


def check_positive_int(name: str, value) -> None:
    """Raises ValueError unless `value` is an int (not a bool) greater than 0."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive integer. Received: {name}={value!r}")


def check_positive_ints(**values) -> None:
    """`check_positive_int` for each keyword argument, in order."""
    for name, value in values.items():
        check_positive_int(name, value)


def check_rate(name: str, value) -> None:
    """Raises ValueError unless `value` is a number in [0, 1) (a dropout-style rate)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"Expected `{name}` to be a float in [0, 1). Received: {name}={value!r}")


def check_rates(**values) -> None:
    """`check_rate` for each keyword argument, in order."""
    for name, value in values.items():
        check_rate(name, value)


def check_bools(**values) -> None:
    """Raises ValueError unless each keyword argument is True or False (checked in order)."""
    for name, value in values.items():
        if not isinstance(value, bool):
            raise ValueError(f"Expected `{name}` to be True or False. Received: {name}={value!r}")


def check_seed(value) -> None:
    """Raises ValueError unless `value` is None or an int (not a bool)."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"Expected `seed` to be an int or None. Received: seed={value!r}")


def image_size_pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    """`(height, width)` of an image size given as a positive int or a pair of them.

    Raises:
        ValueError: anything else (one line naming `image_size`).
    """
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        check_positive_int("image_size", image_size)
        return image_size, image_size
    if (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_size)
    ):
        return int(image_size[0]), int(image_size[1])
    raise ValueError(
        "Expected `image_size` to be a positive int or a (height, width) pair of positive "
        f"ints. Received: image_size={image_size!r}"
    )


def sub_seed(seed: int | None, offset: int) -> int | None:
    """Derives a stable per-sublayer seed from a layer seed (None stays None)."""
    return None if seed is None else seed + offset


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type name when the message is empty).

    For one-line error messages built from a library's often multi-line exception.
    """
    text = str(error).strip()
    return text.splitlines()[0].strip() if text else type(error).__name__
