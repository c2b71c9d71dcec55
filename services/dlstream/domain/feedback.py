"""A label on ``feedback.labels`` scored against the prediction it names, for every task: the counters it adds
to its model version's totals, and the metric the totals give. Pure Python.

A label is text in its task's form: a class (classification); the labels present, comma-separated
(multilabel); the objects' classes, comma-separated (detection: the monitor sees the classes a prediction
found, not its boxes); the values, comma-separated in label order (regression); the text (sequence).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

# The metric each task's totals give, and whether a larger value is better.
METRICS: dict[str, tuple[str, bool]] = {
    "classification": ("accuracy", True),
    "multilabel": ("micro_f1", True),
    "detection": ("class_f1", True),
    "regression": ("mae", False),
    "sequence": ("cer", False),
    "embedding": ("labelled", True),
}


def _items(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the fewest insertions, deletions and substitutions that turn ``a`` into ``b``."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other)))
        previous = current
    return previous[-1]


def _numbers(text: str) -> list[float]:
    values = []
    for item in _items(text):
        try:
            values.append(float(item.partition("=")[2] if "=" in item else item))
        except ValueError:
            values.append(math.nan)
    return values


def score(task: str, truth: str, predicted: str) -> dict[str, float]:
    """The counters one labelled prediction adds: ``labelled`` and ``correct`` always, and its task's own
    (true/false positives and false negatives; character errors and characters; absolute error)."""
    counts: dict[str, float] = {"labelled": 1.0, "correct": float(truth == predicted)}
    if task in ("multilabel", "detection"):
        true, found = Counter(_items(truth)), Counter(_items(predicted))
        hits = sum((true & found).values())
        counts |= {"tp": hits, "fp": sum(found.values()) - hits, "fn": sum(true.values()) - hits}
        counts["correct"] = float(true == found)
    elif task == "sequence":
        counts |= {"char_errors": float(edit_distance(truth, predicted)), "chars": float(len(truth))}
    elif task == "regression":
        true_values, found_values = _numbers(truth), _numbers(predicted)
        errors = [abs(t - f) for t, f in zip(true_values, found_values, strict=False)]
        finite = [e for e in errors if math.isfinite(e)]
        counts |= {"abs_error": sum(finite) / len(finite) if finite else 0.0, "scored": float(bool(finite))}
        counts["correct"] = float(bool(finite) and max(finite) == 0.0)
    return counts


def metric(task: str, totals: Mapping[str, float]) -> tuple[str, float | None]:
    """``(name, value)`` of the task's metric over a version's totals (None before any label)."""
    name, _ = METRICS.get(task, ("accuracy", True))
    labelled = totals.get("labelled", 0.0)
    if not labelled:
        return name, None
    if name in ("micro_f1", "class_f1"):
        tp, fp, fn = (totals.get(k, 0.0) for k in ("tp", "fp", "fn"))
        return name, (2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
    if name == "cer":
        chars = totals.get("chars", 0.0)
        return name, (totals.get("char_errors", 0.0) / chars if chars else None)
    if name == "mae":
        scored = totals.get("scored", 0.0)
        return name, (totals.get("abs_error", 0.0) / scored if scored else None)
    if name == "labelled":
        return name, labelled
    return name, totals.get("correct", 0.0) / labelled
