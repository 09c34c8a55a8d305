"""Which losses read a model's outputs as probabilities: the guard of `VisionTransformer.compile`.

A ViT head without an activation outputs logits. A crossentropy that expects probabilities
(`"sparse_categorical_crossentropy"`, or a loss built with `from_logits=False`) reads them
as probabilities; with the zero-initialised head the loss stays at log(classes) and the
model learns nothing, so `compile` refuses it.
"""

from __future__ import annotations

import keras

# Losses that expect probabilities unless built with from_logits=True.
_PROBABILITY_LOSSES = frozenset(
    {
        "sparse_categorical_crossentropy",
        "categorical_crossentropy",
        "binary_crossentropy",
        "categorical_focal_crossentropy",
        "binary_focal_crossentropy",
    }
)


def _loss_expects_probabilities(loss) -> bool:
    """Whether `loss` is a crossentropy that reads its predictions as probabilities."""
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)  # also resolves "SparseCategoricalCrossentropy"
        except ValueError:
            return False  # an unknown name: Keras' own compile says so
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        name = getattr(getattr(loss, "fn", None), "__name__", None)
        return name in _PROBABILITY_LOSSES and not config.get("from_logits", False)
    return getattr(loss, "__name__", None) in _PROBABILITY_LOSSES


def _loss_name(loss) -> str:
    if isinstance(loss, (str, dict, list, tuple)):
        return repr(loss)
    return getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__)


def check_logits_loss(loss, model_name: str) -> None:
    """Raises ValueError (one line) if `loss` would read logits as probabilities.

    Args:
        loss: what `compile` received: a name, a loss object or function, or a list or dict
            of them.
        model_name: the model's name, for the message.
    """
    losses = loss.values() if isinstance(loss, dict) else loss
    losses = losses if isinstance(losses, (list, tuple)) else [losses]
    if any(_loss_expects_probabilities(item) for item in losses):
        raise ValueError(
            f"Model '{model_name}' outputs logits (classifier_activation=None) but the loss "
            f"expects probabilities. Received: loss={_loss_name(loss)}; use "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True)"
        )
