"""Label-free drift tests on a window of predictions (Rabanser et al. 2019, "Failing Loudly"): pure, no I/O.

Every test is a statistic of the window's *mean* of per-prediction features, compared with a model version's
reference sample:

- ``class_chi_square``: the mix of predicted classes (one-hot features) against the reference's mix;
- ``confidence_ks``: the top-1 confidence's distribution (indicators below the reference's quantiles), as the
  largest gap between the two cumulative distributions on that grid;
- ``embedding_outliers``: the share of predictions whose embedding lies farther from the reference sample,
  relative to how densely the reference covers that region, than nearly all held-out predictions' do (a test
  of the reference's *support*: traffic of a kind the version was built for, in any mix, is not an outlier).

Because each statistic depends on the window only through a mean of features, thousands of null windows for
the calibration cost one gather and one mean (:mod:`dlstream.drift.calibration`), and a live window costs
one pass over its rows.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]
# Above this many classes the class counts of one window are too sparse for a chi-square test.
MAX_CHI_SQUARE_CLASSES = 32
CONFIDENCE_GRID = 15
# An embedding is an outlier when its distance to the reference exceeds this quantile of held-out ones'.
OUTLIER_QUANTILE = 0.95
NEIGHBOURS = 3
# Rows per distance matrix: bounds the kept scratch buffer to CHUNK_ROWS x reference rows.
CHUNK_ROWS = 256
_SCRATCH = threading.local()
# Mixes of a two-component reference tried (weights 0, 0.1, ..., 1).
MIX_STEPS = 11
# Added to every reference class count, so that a class the reference sample never predicted has a finite
# expected share.
PSEUDO_COUNT = 0.5


def _class_shares(counts: npt.NDArray[np.float64] | npt.NDArray[np.int64]) -> Array:
    """A reference's expected class shares from its class counts (last axis), each with the pseudo-count."""
    padded = counts + PSEUDO_COUNT
    shares: Array = padded / padded.sum(axis=-1, keepdims=True)
    return shares


@dataclass(frozen=True, slots=True)
class WindowTest:
    """One test on one window: its statistic, its calibrated p-value, and test-specific details."""

    test: str
    statistic: float
    p_value: float
    details: dict[str, list[int]]


@dataclass(frozen=True)
class ReferenceIndex:
    """Exact nearest-neighbour search in a reference sample of embeddings, with the part of the squared
    distances that depends only on the reference computed once: ``|r|^2 - 2 x.r`` ranks the reference rows
    ``r`` for a row ``x`` as the squared distance does, so ``|x|^2`` is added to the chosen ones only."""

    reference: Array
    minus_twice_transposed: Array  # -2 r^T, contiguous for the product
    norms: Array  # |r|^2 per reference row

    @classmethod
    def build(cls, reference: Array) -> ReferenceIndex:
        """The index of ``reference`` (one row per embedding)."""
        return cls(reference, np.ascontiguousarray(-2.0 * reference.T), (reference * reference).sum(1))

    def nearest(self, rows: Array, k: int, *, own: bool = False) -> tuple[Array, npt.NDArray[np.int64]]:
        """Each row's distance to its ``k``-th nearest reference row and the indices of its ``k`` nearest,
        nearest first (``own``: the rows are the reference itself, each leaving itself out)."""
        k = min(k, len(self.reference) - int(own))
        if k < 1:
            raise ValueError("the reference has no row to be a neighbour")
        distances = np.empty(len(rows))
        nearest = np.empty((len(rows), k), dtype=np.int64)
        for start in range(0, len(rows), CHUNK_ROWS):
            chunk = rows[start : start + CHUNK_ROWS]
            ranking = _scratch(len(chunk), len(self.reference))
            np.matmul(chunk, self.minus_twice_transposed, out=ranking)
            ranking += self.norms
            at = np.arange(len(chunk))
            if own:
                ranking[at, at + start] = np.inf
            # k passes of argmin on a kept buffer: a fifth of argpartition's time on a fresh 200 x 500 matrix.
            for j in range(k):
                index = ranking.argmin(axis=1)
                nearest[start : start + len(chunk), j] = index
                if j < k - 1:
                    ranking[at, index] = np.inf
            distances[start : start + len(chunk)] = ranking[at, index] + (chunk * chunk).sum(1)
        return np.sqrt(np.maximum(distances, 0.0)), nearest


def _scratch(rows: int, columns: int) -> Array:
    """This thread's buffer for a distance matrix, kept between calls: fresh 800 kB arrays each window cost
    more than the arithmetic into them (3.6 against 2.1 ms per window of 200 here)."""
    buffer: Array | None = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.size < rows * columns:
        buffer = _SCRATCH.buffer = np.empty(rows * columns)
    return buffer[: rows * columns].reshape(rows, columns)


def neighbour_scores(rows: Array, index: ReferenceIndex, spacing: Array, *, own: bool = False) -> Array:
    """How far each row lies from the reference, relative to how densely the reference covers that region:
    its distance to the ``NEIGHBOURS``-th nearest reference row over the mean such distance of those
    neighbours among themselves (``spacing``). About 1 inside the reference's support however sparse, large
    outside it."""
    distance, nearest = index.nearest(rows, NEIGHBOURS, own=own)
    scores: Array = distance / np.maximum(spacing[nearest].mean(axis=1), 1e-12)
    return scores


def reference_spacing(index: ReferenceIndex) -> Array:
    """Each reference row's distance to its ``NEIGHBOURS``-th nearest other reference row."""
    return index.nearest(index.reference, NEIGHBOURS, own=True)[0]


@dataclass(frozen=True)
class FeatureMap:
    """The per-prediction features of a version's tests, fitted on its reference sample (and its outlier
    radius on held-out predictions the reference never saw).

    A reference may consist of several *components* (a retrained version's: the base held-out data and
    recent live traffic). Traffic is then expected to be any mix of them, so the class-mix and confidence
    statistics measure the distance to the closest mix (weights on a grid of ``MIX_STEPS``).
    """

    classes: int
    class_shares: Array | None  # [components, classes] expected shares; None when there are too many classes
    grid: Array  # confidence quantiles of the reference
    grid_shares: Array  # [components, grid] each component's share at or below each grid point
    weights: Array  # [mixes, components] the mixes tried
    embedding: ReferenceIndex | None  # the reference sample's embeddings, None for a model without one
    spacing: Array  # each reference embedding's distance to its neighbours (see neighbour_scores)
    radius: float

    @classmethod
    def fit(
        cls,
        classes: int,
        confidence: Array,
        predicted: npt.NDArray[np.int64],
        embedding: Array,
        held_out: Array,
        components: npt.NDArray[np.int64] | None = None,
    ) -> FeatureMap:
        """Fit on the reference's top-1 confidence, predicted classes and embeddings (``components``: which
        component each reference prediction belongs to, all one when None); ``held_out`` are the embeddings
        of held-out predictions (the calibration split) that set the outlier radius."""
        parts = np.zeros(len(confidence), dtype=np.int64) if components is None else components
        count = int(parts.max()) + 1 if len(parts) else 1
        members = [parts == c for c in range(count)]
        shares = None
        if classes <= MAX_CHI_SQUARE_CLASSES:
            counts = np.stack([np.bincount(predicted[m], minlength=classes)[:classes] for m in members])
            shares = _class_shares(counts)
        levels = np.arange(1, CONFIDENCE_GRID + 1) / (CONFIDENCE_GRID + 1)
        grid = np.unique(np.quantile(confidence, levels))
        grid_shares = np.stack([(confidence[m][:, None] <= grid[None, :]).mean(0) for m in members])
        if count == 1:
            weights = np.ones((1, 1))
        else:
            steps = np.linspace(0.0, 1.0, MIX_STEPS)
            weights = np.stack([steps, 1.0 - steps], axis=1) if count == 2 else np.eye(count)
        has_embedding = embedding.size and embedding.shape[1] and len(embedding) > 1
        reference = ReferenceIndex.build(embedding) if has_embedding else None
        radius, spacing = 0.0, np.zeros(0)
        if reference is not None:
            spacing = reference_spacing(reference)
            radius = float(np.quantile(neighbour_scores(held_out, reference, spacing), OUTLIER_QUANTILE))
        return cls(classes, shares, grid, grid_shares, weights, reference, spacing, radius)

    @property
    def class_share(self) -> Array | None:
        """The reference's expected class shares, its components weighted equally."""
        return None if self.class_shares is None else self.class_shares.mean(axis=0)

    @property
    def tests(self) -> tuple[str, ...]:
        """The names of the tests, in the order of :meth:`statistics`' columns."""
        names = ["class_chi_square"] if self.class_shares is not None else []
        names.append("confidence_ks")
        if self.embedding is not None:
            names.append("embedding_outliers")
        return tuple(names)

    def features(
        self,
        classes: npt.NDArray[np.int64],
        confidence: Array,
        embedding: Array,
        *,
        own: bool = False,
        scores: bool = False,
    ) -> Array:
        """One row of features per prediction: ``[one-hot class, confidence <= grid, outlier]``. ``own``:
        the predictions are the reference sample's, each measured against the others. ``scores``: the last
        column holds the outlier score itself rather than whether it exceeds the radius."""
        parts = []
        if self.class_shares is not None:
            parts.append(np.eye(self.classes)[np.clip(classes, 0, self.classes - 1)])
        parts.append((confidence[:, None] <= self.grid[None, :]).astype(np.float64))
        if self.embedding is not None:
            score = neighbour_scores(embedding, self.embedding, self.spacing, own=own)
            parts.append((score if scores else (score > self.radius).astype(np.float64))[:, None])
        return np.hstack(parts)

    @property
    def reference_columns(self) -> int:
        """How many leading feature columns the reference's own statistics are means of (the class and
        confidence columns; the outlier column is measured against the reference, not compared with it)."""
        return (self.classes if self.class_shares is not None else 0) + len(self.grid)

    def reference_shares(self, means: Array, sizes: Sequence[int]) -> tuple[Array | None, Array]:
        """The class and confidence shares that :meth:`fit` would give a reference whose components'
        feature means are ``means`` (``[..., components, reference_columns]``) from ``sizes`` predictions
        each: ``(class_shares, grid_shares)``, the first None without a class test."""
        at = self.classes if self.class_shares is not None else 0
        shares = None
        if at:
            shares = _class_shares(means[..., :at] * np.asarray(sizes, dtype=np.float64)[:, None])
        return shares, means[..., at : at + len(self.grid)]

    def means(self, classes: npt.NDArray[np.int64], confidence: Array, embedding: Array) -> Array:
        """The mean of :meth:`features` over one window's predictions, counted without building them (the
        features of a window of 200 and their mean took twice as long)."""
        n = len(classes)
        parts = []
        if self.class_shares is not None:
            parts.append(np.bincount(np.clip(classes, 0, self.classes - 1), minlength=self.classes) / n)
        parts.append(np.searchsorted(np.sort(confidence), self.grid, side="right") / n)
        if self.embedding is not None:
            scores = neighbour_scores(embedding, self.embedding, self.spacing)
            parts.append(np.array([np.count_nonzero(scores > self.radius) / n]))
        return np.concatenate(parts)

    def statistics(
        self, means: Array, window_size: int, reference: tuple[Array | None, Array] | None = None
    ) -> Array:
        """The tests' statistics (one column per test) of windows whose feature means are ``means``
        (one row per window); larger is more drifted. ``reference``: each window's own reference shares
        (:meth:`reference_shares`, one per window) instead of this map's."""
        class_shares, grid_shares = reference or (self.class_shares, self.grid_shares)
        columns = []
        at = 0
        if class_shares is not None:
            k = self.classes
            expected = np.matmul(self.weights, class_shares)  # [mixes, classes], or one per window
            gap = means[:, None, :k] - expected
            columns.append(window_size * (gap * gap / expected).sum(2).min(1))
            at = k
        g = len(self.grid)
        below = np.matmul(self.weights, grid_shares)  # [mixes, grid], or one per window
        columns.append(np.abs(means[:, None, at : at + g] - below).max(2).min(1))
        if self.embedding is not None:
            columns.append(means[:, at + g])
        return np.stack(columns, axis=1)

    def moved_classes(self, mean: Array) -> list[int]:
        """Classes ranked by how far the window's share moved from the reference's (standardised)."""
        share = self.class_share
        if share is None:
            return []
        residual = (mean[: self.classes] - share) / np.sqrt(share)
        return [int(c) for c in np.argsort(-np.abs(residual))]
