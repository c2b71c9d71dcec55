"""Windows of predictions and their evaluation against a model version's reference: pure, no I/O.

A prediction is kept as one compact row (float32 bytes) in Redis; a full window of rows is decoded here and
tested with the detectors. Every test compares the window with the sample the model build (or retraining)
wrote into ``reference.json`` of the same version, so a window is only ever compared with its own version.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from dlstream.domain.contract import PredictionData
from dlstream.domain.drift_signals import Signals
from dlstream.drift.calibration import Calibration, HeldOut
from dlstream.drift.statistical_tests import OUTLIER_QUANTILE, FeatureMap, WindowTest

Array = npt.NDArray[np.float64]
# Predictions and references both carry probabilities rounded to this many decimals: compare like with like.
DECIMALS = 6
CONFIDENCE_BINS = 20


@lru_cache(maxsize=64)
def _row_format(width: int) -> struct.Struct:
    # Native float32, as decode_rows reads it; struct packs a row several times faster than numpy.
    return struct.Struct(f"={width}f")


def encode_row(data: PredictionData, label_index: int) -> bytes:
    """One prediction as a row: ``[class, confidence, n_probabilities, *probabilities, *embedding]``."""
    probabilities = data.probabilities or []
    width = 3 + len(probabilities) + len(data.embedding)
    return _row_format(width).pack(
        label_index, data.score, len(probabilities), *probabilities, *data.embedding
    )


def encode_signals(found: Signals) -> bytes:
    """One prediction of a task other than classification as a row: ``[category, scalar, 0, *vector]``
    (:mod:`dlstream.domain.drift_signals`)."""
    vector = found.vector
    return _row_format(3 + len(vector)).pack(found.category or 0, found.scalar, 0, *vector)


@dataclass(frozen=True)
class WindowRows:
    """A window's rows as arrays (``probabilities`` is None when the predictions carried none)."""

    classes: npt.NDArray[np.int64]
    confidence: Array
    probabilities: Array | None
    embedding: Array

    def __len__(self) -> int:
        return len(self.classes)


def decode_rows(rows: bytes, width: int) -> WindowRows:
    """The arrays of rows written by :func:`encode_row` (all of one model version, so of one ``width`` in
    bytes), given as one string."""
    if not rows or not width:
        raise ValueError("an empty window")
    matrix = np.frombuffer(rows, dtype=np.float32).reshape(len(rows) // width, -1).astype(np.float64)
    n_probabilities = int(matrix[0, 2])
    probabilities = matrix[:, 3 : 3 + n_probabilities] if n_probabilities else None
    return WindowRows(
        classes=matrix[:, 0].astype(np.int64),
        confidence=matrix[:, 1],
        probabilities=probabilities,
        embedding=matrix[:, 3 + n_probabilities :],
    )


def _embeddings(values: list[list[float]], rows: int) -> Array:
    """A sample's embeddings as a matrix (``rows`` x 0 for a model without an embedding output)."""
    matrix = np.asarray(values, dtype=np.float64)
    return matrix if matrix.ndim == 2 else np.zeros((rows, 0))


@dataclass(frozen=True)
class Reference:
    """What one model version's build measured on held-out data (``reference.json``): the reference sample
    windows are compared with, and a disjoint calibration sample that sets the tests' thresholds."""

    labels: list[str]
    softmax: Array
    embedding: Array
    calibration_softmax: Array
    calibration_embedding: Array
    components: npt.NDArray[np.int64] | None = None  # component of each reference prediction
    calibration_components: npt.NDArray[np.int64] | None = None
    # A task other than classification: its card's labels (its predictions' categories are ``labels``).
    card_labels: list[str] | None = None

    @property
    def task_labels(self) -> list[str]:
        """The card's labels, which the drift signals of a prediction read (:func:`signals`)."""
        return self.labels if self.card_labels is None else self.card_labels

    @cached_property
    def task_label_index(self) -> dict[str, int]:
        """Each card label's position."""
        return {label: i for i, label in enumerate(self.task_labels)}

    @cached_property
    def class_index(self) -> dict[str, int]:
        """Each label's class index (its position in ``labels``)."""
        return {label: i for i, label in enumerate(self.labels)}

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Reference:
        """Parse ``reference.json``. A file written before calibration samples existed is split in two:
        every other row of its reference sample calibrates the rest."""
        softmax = np.asarray(document["softmax_sample"], dtype=np.float64).round(DECIMALS)
        embedding = _embeddings(document["embedding_sample"], len(softmax))
        components = calibration_components = None
        if "reference_components" in document:
            components = np.asarray(document["reference_components"], dtype=np.int64)
            calibration_components = np.asarray(document["calibration_components"], dtype=np.int64)
        if "calibration_softmax_sample" in document:
            calibration_softmax = np.asarray(document["calibration_softmax_sample"], dtype=np.float64)
            calibration_embedding = _embeddings(
                document["calibration_embedding_sample"], len(calibration_softmax)
            )
        else:
            softmax, calibration_softmax = softmax[::2], softmax[1::2]
            embedding, calibration_embedding = embedding[::2], embedding[1::2]
        if not len(softmax) or not len(calibration_softmax):
            raise ValueError("reference.json needs a reference and a calibration sample (2+ predictions)")
        return cls(
            labels=list(document["labels"]),
            softmax=softmax,
            embedding=embedding,
            calibration_softmax=calibration_softmax.round(DECIMALS),
            calibration_embedding=calibration_embedding,
            components=components,
            calibration_components=calibration_components,
            card_labels=document.get("card_labels"),
        )

    @property
    def confidence(self) -> Array:
        """Top-1 scores of the reference sample."""
        confidence: Array = self.softmax.max(axis=1)
        return confidence

    @cached_property
    def seed(self) -> int:
        """A seed of this reference's own (a digest of its samples): the random draws of its calibration and
        the tie-breaks of its windows differ from one version to the next, so that across versions (or the
        bench's splits) their chance errors average out rather than repeat."""
        digest = hashlib.blake2b(digest_size=8)
        for array in (self.softmax, self.calibration_softmax, self.embedding, self.calibration_embedding):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
        return int.from_bytes(digest.digest(), "little") >> 1

    def feature_map(self) -> FeatureMap:
        """The tests' features, fitted on this reference (the outlier radius on the calibration sample)."""
        return FeatureMap.fit(
            len(self.labels),
            self.confidence,
            self.softmax.argmax(axis=1),
            self.embedding,
            self.calibration_embedding,
            self.components,
        )

    def calibrate(self, window_size: int, windows: int) -> Calibration:
        """The null distribution of the tests at ``window_size``: windows of undrifted traffic are drawn from
        the reference and calibration samples together (the best estimate of that traffic; each reference
        prediction measured against the rest of the reference), and from each component alone when the
        reference has several; each against a reference drawn from them as the build drew this one."""
        features = self.feature_map()
        rows = np.vstack(
            [
                features.features(
                    softmax.argmax(axis=1), softmax.max(axis=1), embedding, own=own, scores=True
                )
                for softmax, embedding, own in (
                    (self.softmax, self.embedding, True),
                    (self.calibration_softmax, self.calibration_embedding, False),
                )
            ]
        )
        reference = np.zeros(len(self.softmax), dtype=np.int64)
        calibration = np.zeros(len(self.calibration_softmax), dtype=np.int64)
        if self.components is not None and self.calibration_components is not None:
            reference, calibration = self.components, self.calibration_components
        components = np.concatenate([reference, calibration])
        count = int(components.max()) + 1
        # The radius is the held-out scores' quantile at position h (of 0..n-1, interpolated): the traffic's
        # share above it is distributed as the mass above the (h+1)-th of n order statistics.
        n = len(self.calibration_softmax)
        h = OUTLIER_QUANTILE * (n - 1)
        held_out = HeldOut.of(
            features,
            rows,
            components,
            tuple(int(np.count_nonzero(reference == c)) for c in range(count)),
            (n - h, h + 1.0),
        )
        return Calibration.measure(
            features, held_out, window_size=window_size, windows=windows, seed=self.seed
        )


@dataclass(frozen=True)
class WindowResult:
    """The tests of one window and whether it is flagged (its calibrated p-value at or under the rate)."""

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


def confidence_histogram(confidence: Array) -> npt.NDArray[np.int64]:
    """The counts of ``np.histogram(confidence, bins=CONFIDENCE_BINS, range=(0, 1))``, at an eighth of its
    cost (which was 0.5 ms per window in the monitor's loop)."""
    edges = np.linspace(0.0, 1.0, CONFIDENCE_BINS + 1)
    inside = confidence[(confidence >= 0.0) & (confidence <= 1.0)]
    bins = np.minimum(np.searchsorted(edges, inside, side="right") - 1, CONFIDENCE_BINS - 1)
    return np.bincount(bins, minlength=CONFIDENCE_BINS)


def evaluate_window(
    window: WindowRows, calibration: Calibration, *, false_alarm_rate: float, seed: int = 0
) -> WindowResult:
    """Run the label-free tests on one window; flag it when its calibrated p-value is at or below the rate
    (which then is the share of undrifted windows flagged). ``seed`` breaks ties at random, reproducibly."""
    features = calibration.features
    means = features.means(window.classes, window.confidence.round(DECIMALS), window.embedding)
    statistics = features.statistics(means[None, :], len(window))[0]
    per_test, p_value = calibration.p_values(statistics, seed)
    moved = features.moved_classes(means)
    tests = [
        WindowTest(name, float(statistic), float(p), {"moved": moved} if name == "class_chi_square" else {})
        for name, statistic, p in zip(features.tests, statistics, per_test, strict=True)
    ]
    classes = features.class_share
    expected = classes * len(window) if classes is not None else np.zeros(0)
    return WindowResult(
        tests=tests,
        p_value=p_value,
        flagged=p_value <= false_alarm_rate,
        counts=np.bincount(window.classes, minlength=features.classes)[: features.classes].tolist(),
        expected_counts=[round(float(e), 2) for e in expected],
        confidence_histogram=confidence_histogram(window.confidence).tolist(),
        moved=moved[:3],
    )
