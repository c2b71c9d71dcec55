"""Turning a model's outputs into the prediction event of the wire contract. Pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from dlstream.domain.contract import PredictionData, PredictionEvent, RequestEvent, ScoredLabel, Timing

SOURCE = "dlstream/inference"


def top_k(probabilities: npt.NDArray[np.float32], labels: Sequence[str], k: int) -> list[ScoredLabel]:
    """The ``k`` most probable labels, best first (ties keep label order)."""
    if len(probabilities) != len(labels):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [ScoredLabel(label=labels[i], score=float(np.clip(probabilities[i], 0.0, 1.0))) for i in order]


def build_prediction(
    event: RequestEvent,
    *,
    model: str,
    model_version: str,
    labels: Sequence[str],
    probabilities: npt.NDArray[np.float32],
    embedding: npt.NDArray[np.float32],
    timing: Timing,
    k: int,
    full_probabilities_max_classes: int,
) -> PredictionEvent:
    """The prediction for ``event``, keyed (by ``to_kafka``) with the request id."""
    best = top_k(probabilities, labels, k)
    full = len(labels) <= full_probabilities_max_classes
    return PredictionEvent(
        source=SOURCE,
        subject=event.id,
        data=PredictionData(
            request_id=event.id,
            modality=event.modality,
            model=model,
            model_version=model_version,
            label=best[0].label,
            score=best[0].score,
            top_k=best,
            probabilities=[round(float(p), 6) for p in probabilities] if full else None,
            embedding=[round(float(v), 5) for v in embedding],
            timing=timing,
        ),
    )
