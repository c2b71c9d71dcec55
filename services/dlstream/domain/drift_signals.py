"""What the drift monitor tests of a prediction, for every task: a category (its share is chi-square tested
against the reference's), a scalar (its distribution is compared on a grid of the reference's quantiles) and
a vector (windows are tested for points far from the reference's). Pure Python: the monitor computes them
from predictions, ``models add`` from the predictions of the reference samples, so both see the same.

| task | category | scalar | vector |
|---|---|---|---|
| classification | the predicted class | its probability | the model's projected embedding |
| multilabel | the best label present, or none | the best score | every label's score (+ embedding) |
| detection | objects found: 0..4, 5+ | their mean score (0: none) | their class mix, mean log box area |
| embedding | one | the norm of the projected vector | the projected vector |
| regression | one | the first value | every value |
| sequence | text length: 0, 1-3, 4-7, 8-15, 16-31, 32+ | mean step confidence | character mix and length |
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from dlstream.domain.contract import (
    AnyPredictionData,
    DetectionPrediction,
    EmbeddingPrediction,
    MultilabelPrediction,
    PredictionData,
    RegressionPrediction,
    SequencePrediction,
)

OBJECT_COUNTS = ("0 objects", "1 object", "2 objects", "3 objects", "4 objects", "5+ objects")
TEXT_LENGTHS = ("empty", "1-3 chars", "4-7 chars", "8-15 chars", "16-31 chars", "32+ chars")
NO_LABEL = "(none present)"
ONE = ("all",)
# Past this many labels the per-label scores (multilabel) or class mix (detection) stay out of the vector.
MAX_LABELS_IN_VECTOR = 32


@dataclass(frozen=True)
class Signals:
    """One prediction as the drift tests see it; ``category`` is None when it names no known category."""

    category: int | None
    scalar: float
    vector: list[float]


def categories(task: str, labels: Sequence[str]) -> list[str]:
    """The categories a task's predictions fall in (the reference's ``labels``)."""
    if task == "classification":
        return list(labels)
    if task == "multilabel":
        return [*labels, NO_LABEL]
    if task == "detection":
        return list(OBJECT_COUNTS)
    if task == "sequence":
        return list(TEXT_LENGTHS)
    return list(ONE)


def _length_bucket(length: int) -> int:
    return 0 if length == 0 else min(len(TEXT_LENGTHS) - 1, int(math.log2(length + 1)))


def character_mix(text: str) -> list[float]:
    """Shares of letters, digits, spaces, punctuation and other characters, then the length (/ 64, at most
    1)."""
    counts = [0, 0, 0, 0, 0]
    for char in text:
        kind = unicodedata.category(char)[0]
        slot = {"L": 0, "N": 1, "Z": 2, "P": 3}.get(kind, 2 if char.isspace() else 4)
        counts[slot] += 1
    total = max(1, len(text))
    return [c / total for c in counts] + [min(len(text), 64) / 64]


def signals(data: AnyPredictionData, labels: Sequence[str], index: dict[str, int] | None = None) -> Signals:
    """The drift signals of one prediction of a model whose card has ``labels`` (``index``: label -> its
    position, when the caller keeps one)."""
    index = index if index is not None else {label: i for i, label in enumerate(labels)}
    if isinstance(data, PredictionData):
        return Signals(index.get(data.label), data.score, list(data.embedding))
    if isinstance(data, MultilabelPrediction):
        best = data.labels[0] if data.labels else None
        category = index.get(best.label) if best is not None else len(labels)
        scores = (
            [data.scores.get(label, 0.0) for label in labels] if len(labels) <= MAX_LABELS_IN_VECTOR else []
        )
        return Signals(category, max(data.scores.values(), default=0.0), scores + list(data.embedding))
    if isinstance(data, DetectionPrediction):
        found = data.detections
        mean_score = sum(d.score for d in found) / len(found) if found else 0.0
        mix = [0.0] * len(labels) if len(labels) <= MAX_LABELS_IN_VECTOR else []
        areas = []
        for detection in found:
            if mix and detection.label in index:
                mix[index[detection.label]] += 1 / len(found)
            x0, y0, x1, y1 = detection.box
            areas.append(math.log10(1.0 + max(0.0, x1 - x0) * max(0.0, y1 - y0)) / 6)
        area = sum(areas) / len(areas) if areas else 0.0
        return Signals(min(len(found), len(OBJECT_COUNTS) - 1), mean_score, [*mix, area, *data.embedding])
    if isinstance(data, EmbeddingPrediction):
        return Signals(0, math.sqrt(sum(v * v for v in data.embedding)), list(data.embedding))
    if isinstance(data, RegressionPrediction):
        values = [data.values.get(name, 0.0) for name in labels]
        return Signals(0, values[0] if values else 0.0, values + list(data.embedding))
    return Signals(
        _length_bucket(len(data.text)), data.confidence, character_mix(data.text) + list(data.embedding)
    )


def summary(data: AnyPredictionData) -> str:
    """What a prediction said, in one line (kept beside it for its feedback label): the class, the labels
    present, the objects' classes, the first value or the text."""
    if isinstance(data, PredictionData):
        said = data.label
    elif isinstance(data, MultilabelPrediction):
        said = ",".join(s.label for s in data.labels)
    elif isinstance(data, DetectionPrediction):
        said = ",".join(d.label for d in data.detections)
    elif isinstance(data, RegressionPrediction):
        said = ",".join(f"{v:.6g}" for v in data.values.values())
    elif isinstance(data, SequencePrediction):
        said = data.text
    else:
        said = ""
    return " ".join(said.split())[:256]
