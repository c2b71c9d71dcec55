"""Windows of predictions and their evaluation against a model version's reference: pure, no I/O.

A prediction is kept as one compact row (float32 bytes) in Redis; a full window of rows is decoded here and
tested with the detectors. Every test compares the window with the sample the model build (or retraining)
wrote into ``reference.json`` of the same version, so a window is only ever compared with its own version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

from services.common.contract import PredictionData
from services.drift.detectors import WindowTest, class_chi_square, combined, embedding_mmd, softmax_ks

Array = npt.NDArray[np.float64]
# Predictions and references both carry probabilities rounded to this many decimals: compare like with like.
DECIMALS = 6
# Above this many classes the class counts of one window are too sparse for a chi-square test.
MAX_CHI_SQUARE_CLASSES = 32
CONFIDENCE_BINS = 20


def encode_row(data: PredictionData, label_index: int) -> bytes:
    """One prediction as a row: ``[class, confidence, n_probabilities, *probabilities, *embedding]``."""
    probabilities = data.probabilities or []
    values = [float(label_index), data.score, float(len(probabilities)), *probabilities, *data.embedding]
    return np.asarray(values, dtype=np.float32).tobytes()


@dataclass(frozen=True)
class WindowRows:
    """A window's rows as arrays (``probabilities`` is None when the predictions carried none)."""

    classes: npt.NDArray[np.int64]
    confidence: Array
    probabilities: Array | None
    embedding: Array

    def __len__(self) -> int:
        return len(self.classes)


def decode_rows(rows: list[bytes]) -> WindowRows:
    """The arrays of rows written by :func:`encode_row` (all of one model version, so of one width)."""
    if not rows:
        raise ValueError("an empty window")
    matrix = np.stack([np.frombuffer(r, dtype=np.float32) for r in rows]).astype(np.float64)
    n_probabilities = int(matrix[0, 2])
    probabilities = matrix[:, 3 : 3 + n_probabilities] if n_probabilities else None
    return WindowRows(
        classes=matrix[:, 0].astype(np.int64),
        confidence=matrix[:, 1],
        probabilities=probabilities,
        embedding=matrix[:, 3 + n_probabilities :],
    )


@dataclass(frozen=True)
class Reference:
    """What one model version's build measured on held-out data (``reference.json``)."""

    labels: list[str]
    class_counts: Array
    softmax: Array
    embedding: Array

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Reference:
        """Parse ``reference.json``."""
        return cls(
            labels=list(document["labels"]),
            class_counts=np.asarray(document["predicted_class_counts"], dtype=np.float64),
            softmax=np.asarray(document["softmax_sample"], dtype=np.float64).round(DECIMALS),
            embedding=np.asarray(document["embedding_sample"], dtype=np.float64),
        )

    @property
    def confidence(self) -> Array:
        """Top-1 scores of the reference sample."""
        confidence: Array = self.softmax.max(axis=1)
        return confidence


def confidence_ks(window: Array, reference: Array) -> WindowTest:
    """Two-sample KS test on the top-1 scores (for models whose predictions carry no full softmax)."""
    result = stats.ks_2samp(window, reference)
    return WindowTest("confidence_ks", float(result.statistic), float(result.pvalue), {"moved": []})


@dataclass(frozen=True)
class WindowResult:
    """The tests of one window and whether it is flagged (its combined p-value under the alarm rate)."""

    tests: list[WindowTest]
    p_value: float
    flagged: bool
    counts: list[int]
    expected_counts: list[float]
    confidence_histogram: list[int]
    moved: list[int] = field(default_factory=list)

    @property
    def strongest(self) -> WindowTest:
        """The test with the smallest p-value."""
        return min(self.tests, key=lambda t: t.p_value)


def evaluate_window(
    window: WindowRows, reference: Reference, *, false_alarm_rate: float, permutations: int, seed: int = 0
) -> WindowResult:
    """Run the label-free tests on one window; flag it when their combined p-value is below the rate.

    With full probabilities: per-class softmax KS and a chi-square on predicted classes; otherwise a KS test
    on the top-1 scores. MMD on the embedding projection when the model has one. Bonferroni over the tests
    keeps the window's false-alarm rate at most ``false_alarm_rate``.
    """
    classes = len(reference.labels)
    counts = np.bincount(window.classes, minlength=classes)[:classes]
    tests: list[WindowTest] = []
    if window.probabilities is not None and window.probabilities.shape[1] == reference.softmax.shape[1]:
        tests.append(softmax_ks(window.probabilities.round(DECIMALS), reference.softmax))
    else:
        tests.append(confidence_ks(window.confidence.round(DECIMALS), reference.confidence))
    if classes <= MAX_CHI_SQUARE_CLASSES:
        tests.append(class_chi_square(counts.astype(np.float64), reference.class_counts))
    if window.embedding.shape[1] and reference.embedding.size:
        # A model without an embedding output is judged on its softmax and class mix alone.
        mmd = embedding_mmd(window.embedding, reference.embedding, permutations=permutations, seed=seed)
        tests.append(mmd)
    p_value = combined(tests)
    expected = reference.class_counts / max(1.0, reference.class_counts.sum()) * len(window)
    moved: list[int] = next((t.details["moved"] for t in tests if t.details.get("moved")), [])
    return WindowResult(
        tests=tests,
        p_value=p_value,
        flagged=p_value < false_alarm_rate,
        counts=counts.tolist(),
        expected_counts=[round(float(e), 2) for e in expected],
        confidence_histogram=np.histogram(window.confidence, bins=CONFIDENCE_BINS, range=(0.0, 1.0))[
            0
        ].tolist(),
        moved=[int(k) for k in moved[:3]],
    )
