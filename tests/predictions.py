"""Prediction payloads for unit tests that need a well-formed one and care about few of its fields."""

from __future__ import annotations

from typing import Any

from dlstream.domain.contract import Modality, PredictionData, ScoredLabel, Timing


def prediction_data(label: str = "3", score: float = 0.9, **fields: Any) -> PredictionData:
    """A prediction of ``label`` at ``score`` by ``digits`` version 1; ``fields`` override any other field."""
    values: dict[str, Any] = {
        "request_id": "r",
        "modality": Modality.IMAGE,
        "model": "digits",
        "model_version": "1",
        "label": label,
        "score": score,
        "top_k": [ScoredLabel(label=label, score=score)],
        "timing": Timing(queued_ms=0, inference_ms=0, total_ms=0),
    }
    return PredictionData(**{**values, **fields})
