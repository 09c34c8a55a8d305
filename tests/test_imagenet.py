"""ImageNet-1k class names and decode_predictions."""

import numpy as np
import pytest

import keras_vit
from keras_vit.imagenet import CLASS_NAMES, decode_predictions


def test_class_names_are_the_standard_thousand_in_order():
    assert len(CLASS_NAMES) == 1000
    # Spot checks of the ILSVRC-2012 class-index order.
    assert CLASS_NAMES[0] == "tench"
    assert CLASS_NAMES[1] == "goldfish"
    assert CLASS_NAMES[207] == "Golden Retriever"
    assert CLASS_NAMES[281] == "tabby cat"
    assert CLASS_NAMES[999] == "toilet paper"
    assert all(isinstance(n, str) and n and "\n" not in n for n in CLASS_NAMES)


def test_decode_logits_and_probabilities_alike():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 1000)).astype("float32")
    logits[0, 207], logits[1, 3] = 20.0, 15.0
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    from_logits = decode_predictions(logits, top=3)
    from_probs = decode_predictions(probabilities, top=3)
    assert [row[0][:2] for row in from_logits] == [(207, "Golden Retriever"), (3, "tiger shark")]
    for a, b in zip(from_logits, from_probs, strict=True):
        assert [x[:2] for x in a] == [x[:2] for x in b]
        np.testing.assert_allclose([x[2] for x in a], [x[2] for x in b], rtol=1e-5)
    scores = [x[2] for x in from_probs[0]]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    assert decode_predictions(logits[0], top=1) == [from_logits[0][:1]]


@pytest.mark.parametrize(
    "scores,top,match",
    [
        (np.zeros((1, 10)), 5, r"shape \(batch, 1000\).*shape=\(1, 10\)"),
        (np.zeros((2, 3, 1000)), 5, r"shape=\(2, 3, 1000\)"),
        (np.zeros((1, 1000)), 0, "top=0"),
        (np.zeros((1, 1000)), 1001, "top=1001"),
    ],
)
def test_decode_bad_input_one_line(scores, top, match):
    with pytest.raises(ValueError, match=match) as info:
        decode_predictions(scores, top=top)
    assert "\n" not in str(info.value)


def test_decode_predictions_is_exported():
    assert keras_vit.decode_predictions is decode_predictions
