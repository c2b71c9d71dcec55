"""Triton's answer for one event turned into the prediction event of the wire contract, per task: pure
functions, used by workers and by ``models add`` (which builds a new model's drift reference from them).

A model output that does not fit its card (the wrong width, a class index out of range, text that is not
UTF-8) raises ContractError ``bad-model-output``: the event is dead-lettered, not predicted wrongly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from dlstream.adapters.triton.client import Inference, sigmoid, softmax
from dlstream.domain.card import ModelCard, MultilabelTask
from dlstream.domain.contract import (
    Box,
    DetectionPrediction,
    EmbeddingPrediction,
    MultilabelPrediction,
    PredictionData,
    PredictionEvent,
    RegressionPrediction,
    RequestEvent,
    ScoredLabel,
    SequencePrediction,
    Timing,
)
from dlstream.domain.errors import ContractError, DeadLetterReason

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


def _bad(card: ModelCard, version: str, problem: str) -> ContractError:
    return ContractError(DeadLetterReason.BAD_MODEL_OUTPUT, f"model {card.name} version {version} {problem}")


def _row(inference: Inference, name: str, card: ModelCard, width: int | None = None) -> npt.NDArray[Any]:
    array = np.asarray(inference.outputs[name])
    row = array.reshape(-1) if array.dtype != object else array
    if width is not None and len(row) != width:
        raise _bad(
            card, inference.model_version, f"returned {len(row)} values of {name} for {width} expected"
        )
    return row


def _finite(values: npt.NDArray[Any], card: ModelCard, version: str, name: str) -> npt.NDArray[np.float32]:
    floats = values.astype(np.float32)
    if not np.isfinite(floats).all():
        raise _bad(card, version, f"returned a value of {name} that is not finite")
    return floats


def task_prediction(
    event: RequestEvent,
    card: ModelCard,
    inference: Inference,
    *,
    timing: Timing,
    k: int,
    full_probabilities_max_classes: int,
) -> PredictionEvent:
    """The prediction of ``card``'s task for ``event`` from the outputs Triton answered.

    Raises:
        ContractError: ``bad-model-output`` when an output does not fit the card.
    """
    names, task, version = card.outputs, card.task, inference.model_version
    embedding = np.zeros(0, np.float32)
    if names.embedding:
        embedding = _finite(_row(inference, names.embedding, card), card, version, names.embedding)
    common: dict[str, Any] = {
        "request_id": event.id,
        "modality": event.modality,
        "model": inference.model,
        "model_version": version,
        "embedding": [round(float(v), 5) for v in embedding],
        "timing": timing,
    }
    data: Any
    if task.kind == "classification":
        scores = _finite(_row(inference, names.scores, card, len(card.labels)), card, version, names.scores)
        probabilities = softmax(scores) if names.scores_are == "logits" else scores
        return build_prediction(
            event,
            model=inference.model,
            model_version=version,
            labels=card.labels,
            probabilities=probabilities,
            embedding=embedding,
            timing=timing,
            k=k,
            full_probabilities_max_classes=full_probabilities_max_classes,
        )
    if isinstance(task, MultilabelTask):
        scores = _finite(_row(inference, names.scores, card, len(card.labels)), card, version, names.scores)
        if names.scores_are == "logits":
            scores = sigmoid(scores)
        scores = np.clip(scores, 0.0, 1.0)
        present = [
            ScoredLabel(label=label, score=float(scores[i]))
            for i, label in enumerate(card.labels)
            if scores[i] >= task.threshold_of(label)
        ]
        data = MultilabelPrediction(
            **common,
            labels=sorted(present, key=lambda s: -s.score),
            scores={label: round(float(scores[i]), 6) for i, label in enumerate(card.labels)},
        )
    elif task.kind == "regression":
        values = _finite(_row(inference, names.values, card, len(card.labels)), card, version, names.values)
        data = RegressionPrediction(**common, values={n: float(values[i]) for i, n in enumerate(card.labels)})
    elif task.kind == "embedding":
        vector = _finite(_row(inference, names.vector, card, task.dims), card, version, names.vector)
        data = EmbeddingPrediction(**common, vector=[float(v) for v in vector])
    elif task.kind == "sequence":
        raw = np.asarray(inference.outputs[names.text]).reshape(-1)
        confidence = _finite(_row(inference, names.confidence, card, 1), card, version, names.confidence)
        if len(raw) != 1 or not isinstance(raw[0], bytes | str):
            raise _bad(card, version, f"returned {names.text} that is not one string")
        try:
            text = raw[0].decode("utf-8") if isinstance(raw[0], bytes) else raw[0]
        except UnicodeDecodeError:
            raise _bad(card, version, f"returned {names.text} that is not UTF-8") from None
        data = SequencePrediction(**common, text=text, confidence=float(np.clip(confidence[0], 0.0, 1.0)))
    else:
        data = DetectionPrediction(**common, detections=_detections(card, inference))
    return PredictionEvent(source=SOURCE, subject=event.id, data=data)


def _detections(card: ModelCard, inference: Inference) -> list[Box]:
    names, version = card.outputs, inference.model_version
    count = _row(inference, names.box_count, card, 1)
    boxes = _finite(np.asarray(inference.outputs[names.boxes]), card, version, names.boxes).reshape(-1, 4)
    scores = _finite(_row(inference, names.box_scores, card), card, version, names.box_scores)
    classes = _row(inference, names.box_classes, card)
    found = int(count[0])
    if not 0 <= found <= min(len(boxes), len(scores), len(classes)):
        raise _bad(card, version, f"counted {found} detections in outputs of {len(boxes)} rows")
    detections = []
    for i in range(found):
        index = int(classes[i])
        if not 0 <= index < len(card.labels):
            raise _bad(card, version, f"returned class {index} for {len(card.labels)} labels")
        box = [round(float(v), 2) for v in boxes[i]]
        score = float(np.clip(scores[i], 0.0, 1.0))
        detections.append(Box(label=card.labels[index], score=score, box=box))
    return sorted(detections, key=lambda d: -d.score)
