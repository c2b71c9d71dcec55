"""Routing events to models and shaping predictions: pure logic of the inference service."""

from __future__ import annotations

import numpy as np
import pytest

from dlstream.adapters.triton.answers import build_prediction, top_k
from dlstream.adapters.triton.client import near_equal_parts
from dlstream.domain.contract import Modality, PredictionEvent, Timing, new_request
from dlstream.domain.errors import ContractError, DeadLetterReason
from dlstream.inference.routing import modality_of_topic

pytestmark = pytest.mark.unit

TIMING = Timing(queued_ms=1.0, inference_ms=2.0, total_ms=3.5)


def test_topics_map_to_modalities() -> None:
    topics = {"image": "events.image", "text": "events.text"}
    assert modality_of_topic("events.text", topics) is Modality.TEXT
    with pytest.raises(ContractError) as caught:
        modality_of_topic("events.video", topics)
    assert caught.value.reason is DeadLetterReason.UNKNOWN_TOPIC


def test_top_k_is_best_first() -> None:
    ranked = top_k(np.array([0.1, 0.6, 0.3], dtype=np.float32), ["a", "b", "c"], 2)
    assert [(r.label, round(r.score, 2)) for r in ranked] == [("b", 0.6), ("c", 0.3)]
    with pytest.raises(ValueError, match="2 labels"):
        top_k(np.ones(3, dtype=np.float32), ["a", "b"], 1)


def test_prediction_names_request_model_version_and_carries_small_label_sets_whole() -> None:
    event = new_request(Modality.IMAGE, b"png", content_type="image/png", source="t")
    probs = np.array([0.05, 0.9, 0.05], dtype=np.float32)
    prediction = build_prediction(
        event,
        model="digits",
        model_version="2",
        labels=["0", "1", "2"],
        probabilities=probs,
        embedding=np.arange(8, dtype=np.float32),
        timing=TIMING,
        k=2,
        full_probabilities_max_classes=32,
    )
    data = prediction.classification
    assert (data.request_id, data.model, data.model_version, data.label) == (event.id, "digits", "2", "1")
    assert data.probabilities == pytest.approx([0.05, 0.9, 0.05])
    assert len(data.top_k) == 2
    assert prediction.to_kafka().key == event.id.encode()
    assert PredictionEvent.from_kafka(prediction.to_kafka().value) == prediction


def test_large_label_sets_carry_only_the_top_k() -> None:
    event = new_request(Modality.IMAGE, b"png", content_type="image/png", source="t")
    probs = np.full(1000, 1 / 1000, dtype=np.float32)
    prediction = build_prediction(
        event,
        model="imagenet",
        model_version="1",
        labels=[str(i) for i in range(1000)],
        probabilities=probs,
        embedding=np.zeros(8, dtype=np.float32),
        timing=TIMING,
        k=5,
        full_probabilities_max_classes=32,
    )
    assert prediction.classification.probabilities is None
    assert len(prediction.classification.top_k) == 5


@pytest.mark.parametrize(
    ("count", "size", "lengths"), [(64, 16, [16] * 4), (20, 16, [10, 10]), (5, 2, [2, 2, 1])]
)
def test_a_batch_is_spread_over_the_fewest_near_equal_requests(
    count: int, size: int, lengths: list[int]
) -> None:
    parts = near_equal_parts(list(range(count)), size)
    assert [len(p) for p in parts] == lengths
    assert sorted(i for p in parts for i in p) == list(range(count))
