"""Temporary wrappers around Keras layers' `call`: record or change what a layer computes."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def wrapped_calls(layers, wrap):
    """Within the block, each of `layers` runs `wrap(layer, call)` in place of its `call`.

    `call` is the layer's own bound method, for the wrapper to call. The wrappers are
    instance attributes, removed on leaving the block (also after an error), so the class's
    method is back afterwards. The model must run eagerly for them to be called.
    """
    try:
        for layer in layers:
            layer.call = wrap(layer, layer.call)
        yield
    finally:
        for layer in layers:
            if "call" in vars(layer):
                del layer.call
