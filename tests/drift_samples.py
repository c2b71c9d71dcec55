"""Predictions of a small synthetic model ``m`` (four classes) and its reference statistics, for tests of the
drift monitor with and without Redis."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from dlstream.domain.contract import (
    DriftAlert,
    KafkaRecord,
    Modality,
    PredictionData,
    PredictionEvent,
    ScoredLabel,
    Timing,
)

LABELS = ["a", "b", "c", "d"]


def softmax_rows(rng: np.random.Generator, n: int, shift: float = 0.0) -> np.ndarray[Any, Any]:
    """Class scores like the reference's; ``shift`` moves mass to the last class (drift)."""
    logits = rng.normal(size=(n, 4)) + np.array([2.0, 1.0, 0.0, shift])
    scores: np.ndarray[Any, Any] = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return scores


def reference_document(rng: np.random.Generator) -> str:
    """A reference sample of 300 predictions and a calibration sample of 300 more."""
    softmax, calibration = softmax_rows(rng, 300), softmax_rows(rng, 300)
    return json.dumps(
        {
            "labels": LABELS,
            "predicted_class_counts": np.bincount(softmax.argmax(1), minlength=4).tolist(),
            "confidence_histogram": {
                "counts": np.histogram(softmax.max(1), bins=20, range=(0, 1))[0].tolist()
            },
            "softmax_sample": softmax.round(6).tolist(),
            "embedding_sample": softmax[:, :2].round(6).tolist(),
            "calibration_softmax_sample": calibration.round(6).tolist(),
            "calibration_embedding_sample": calibration[:, :2].round(6).tolist(),
        }
    )


def predictions(
    rng: np.random.Generator, n: int, *, version: str = "1", shift: float = 0.0
) -> list[PredictionData]:
    out = []
    for i, row in enumerate(softmax_rows(rng, n, shift)):
        best = int(row.argmax())
        out.append(
            PredictionData(
                request_id=f"{version}-{shift}-{rng.integers(1 << 62)}-{i}",
                modality=Modality.IMAGE,
                model="m",
                model_version=version,
                label=LABELS[best],
                score=float(row[best]),
                top_k=[ScoredLabel(label=LABELS[best], score=float(row[best]))],
                probabilities=[round(float(v), 6) for v in row],
                embedding=[round(float(v), 6) for v in row[:2]],
                timing=Timing(queued_ms=0, inference_ms=0, total_ms=0),
            )
        )
    return out


def event_value(data: PredictionData) -> bytes:
    """A prediction as the workers put it on Kafka."""
    return PredictionEvent(source="tests", subject=data.request_id, data=data).to_kafka().value


class Published:
    """The alerts the monitor published to Kafka."""

    def __init__(self) -> None:
        self.alerts: list[DriftAlert] = []

    async def __call__(self, records: Sequence[tuple[str, KafkaRecord]]) -> None:
        self.alerts += [DriftAlert.model_validate_json(record.value) for _, record in records]
