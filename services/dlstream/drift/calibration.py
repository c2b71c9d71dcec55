"""Thresholds from the null distribution, measured: pure, no I/O.

A version's tests (:mod:`dlstream.drift.statistical_tests`) compare each window with the version's
reference sample.
How large a statistic gets by chance depends on the sample sizes, the window size and the model, so no
textbook distribution gives its p-value exactly (Bonferroni over tests and classes, ties and a finite
reference sample make such p-values conservative). Instead, many null windows are drawn from the model's own
predictions on held-out data (the reference sample, each of its predictions measured against the rest, and a
calibration sample the reference never saw) and run through the same tests. A live window's p-value is its
rank among them.

Each null window is compared with a reference drawn afresh beside it, as the build drew the real one: a
resample of the held-out predictions of the reference's size, and an outlier radius at the quantile that a
fresh calibration sample would have put it (the share of traffic above the quantile at position ``h`` of
``n`` held-out scores is distributed as the mass above that order statistic, Beta(n - h, h + 1)). Windows
are thus as far from their reference as live windows are from theirs *because the reference itself is a
sample*, so the false-alarm rate is the configured one averaged over the reference samples a build may draw;
for one reference it is lower or higher as that sample happens to lie nearer to or farther from the traffic.

The tests are combined by the smallest p-value, itself ranked among the null windows' smallest p-values, so
the window's false-alarm rate is the configured one rather than a bound on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from dlstream.drift.statistical_tests import Array, FeatureMap

# Null windows drawn per chunk (bounds the memory of the counts: chunk x held-out predictions).
CHUNK = 512
# Null windows compared with each reference drawn beside them.
WINDOWS_PER_REFERENCE = 4


def _ranked(null: Array, values: Array, uniforms: Array, *, member: bool) -> Array:
    """Randomised p-values of ``values`` (larger is more extreme) against the sorted ``null``: ties are
    broken at random so the p-value is uniform under the null even for discrete statistics. ``member``: the
    values are the null's own (each is counted once in its ties, not as an extra sample)."""
    n = len(null)
    right = np.searchsorted(null, values, side="right")
    left = np.searchsorted(null, values, side="left")
    greater = n - right
    equal = right - left
    if member:
        return (greater + uniforms * equal) / n
    p: Array = (greater + uniforms * (equal + 1)) / (n + 1)
    return p


def tie_breaks(seed: int, count: int) -> Array:
    """``count`` uniforms in [0, 1) that ``seed`` determines (BLAKE2b of the seed: a generator seeded per
    window cost 20 us warm and about 0.3 ms in the monitor's loop, the hash 3 us)."""
    blocks = (count + 7) // 8
    digest = b"".join(
        hashlib.blake2b(b"%d:%d" % (seed, block), digest_size=64).digest() for block in range(blocks)
    )
    uniforms: Array = (np.frombuffer(digest, dtype="<u8")[:count] >> np.uint64(11)) * 2.0**-53
    return uniforms


@dataclass(frozen=True)
class HeldOut:
    """Held-out predictions standing in for undrifted traffic, as the null windows draw on them: predictions
    with the same class and confidence features form a cell (at most classes x 16), so a window's means of
    those features are its counts per cell times the cells' features."""

    cells: npt.NDArray[np.int64]  # each prediction's cell
    cell_features: Array  # [cells, reference columns]
    scores: Array | None  # each prediction's outlier score; None for a model without an embedding
    components: npt.NDArray[np.int64]  # the reference component each prediction stands for
    reference_sizes: tuple[int, ...]  # the reference's predictions per component
    outlier_mass: tuple[float, float]  # Beta parameters of the traffic's share above the outlier radius

    @classmethod
    def of(
        cls,
        features: FeatureMap,
        rows: Array,
        components: npt.NDArray[np.int64],
        reference_sizes: tuple[int, ...],
        outlier_mass: tuple[float, float],
    ) -> HeldOut:
        """From the predictions' ``rows`` of :meth:`FeatureMap.features` (with ``scores=True``)."""
        columns = features.reference_columns
        cell_features, inverse = np.unique(rows[:, :columns], axis=0, return_inverse=True)
        scores = rows[:, -1] if features.embedding is not None else None
        return cls(inverse.reshape(-1), cell_features, scores, components, reference_sizes, outlier_mass)

    def __len__(self) -> int:
        return len(self.cells)


def _cell_counts(cells: npt.NDArray[np.int64], picks: npt.NDArray[np.int64], count: int) -> Array:
    """How many of each window's ``picks`` (rows of ``cells``) fall in each of ``count`` cells, one row per
    window: the class and confidence features of a prediction are those of its cell, so a window's means are
    its counts times the cells' features (a fifth of the time of gathering the picked rows)."""
    windows = len(picks)
    flat = (cells[picks] + (np.arange(windows) * count)[:, None]).ravel()
    counts: Array = np.bincount(flat, minlength=windows * count).reshape(windows, count).astype(np.float64)
    return counts


@dataclass(frozen=True)
class NullWindows:
    """The tests' statistics on undrifted windows of one kind of traffic."""

    null: Array  # [windows, tests], each column sorted
    null_min_p: Array  # sorted smallest p-value of each null window

    @classmethod
    def draw(
        cls,
        features: FeatureMap,
        held_out: HeldOut,
        kind: npt.NDArray[np.bool_],
        *,
        window_size: int,
        windows: int,
        rng: np.random.Generator,
    ) -> NullWindows:
        """Draw ``windows`` windows of ``window_size`` of the held-out predictions of one ``kind`` (a mask),
        with replacement (live traffic is a draw from the population, not from a finite pool), each against
        a reference drawn beside it."""
        if not kind.any():
            raise ValueError("no calibration predictions")
        scores, cells, cell_features = held_out.scores, held_out.cells, held_out.cell_features
        # The kind's predictions by ascending outlier score: a pick above a radius is an index above a bound.
        order = np.arange(int(kind.sum())) if scores is None else np.argsort(scores[kind], kind="stable")
        kind_cells = cells[kind][order]
        if scores is not None:
            # All held-out scores ascending, then +inf: the bound when no score is above the radius.
            kind_scores, bounds = scores[kind][order], np.append(np.sort(scores), np.inf)
            total = len(bounds) - 1
        references = [cells[held_out.components == c] for c in range(len(held_out.reference_sizes))]
        n, count = len(kind_cells), len(cell_features)
        statistics = []
        for start in range(0, windows, CHUNK):
            m = min(CHUNK, windows - start)
            picks = rng.integers(0, n, size=(m, window_size))
            means = _cell_counts(kind_cells, picks, count) @ cell_features / window_size
            if scores is not None:
                # Each held-out score stands for the slice of traffic around it; a score is above the radius
                # when its slice's middle is (a quantile's interpolation counts half a score too many).
                above = rng.beta(*held_out.outlier_mass, size=m)
                first = np.floor(total * (1.0 - above) - 0.5).astype(np.int64) + 1
                inside = np.searchsorted(kind_scores, bounds[np.minimum(first, total)], side="left")
                means = np.column_stack([means, (picks >= inside[:, None]).mean(axis=1)])
            # One reference per few windows: each window's pair with its reference is still a fresh draw,
            # and a reference of 500 costs as much to draw as 10 windows of 50.
            shared = -(-m // WINDOWS_PER_REFERENCE)
            drawn = np.stack(
                [
                    _cell_counts(pool, rng.integers(0, len(pool), size=(shared, size)), count)
                    @ cell_features
                    / size
                    for pool, size in zip(references, held_out.reference_sizes, strict=True)
                ],
                axis=1,
            ).repeat(WINDOWS_PER_REFERENCE, axis=0)[:m]
            reference = features.reference_shares(drawn, held_out.reference_sizes)
            statistics.append(features.statistics(means, window_size, reference))
        everything = np.vstack(statistics)
        null = np.sort(everything, axis=0)
        p = np.column_stack(
            [
                _ranked(null[:, t], everything[:, t], rng.random(windows), member=True)
                for t in range(null.shape[1])
            ]
        )
        return cls(null, np.sort(p.min(axis=1)))

    def p_values(self, statistics: Array, uniforms: Array) -> tuple[Array, float]:
        """Each test's p-value for one window's ``statistics``, and the window's combined p-value; ties are
        broken by ``uniforms`` (one per test and one more)."""
        per_test = np.array(
            [
                _ranked(self.null[:, t], statistics[t : t + 1], uniforms[t : t + 1], member=False)[0]
                for t in range(len(statistics))
            ]
        )
        below = int(np.searchsorted(self.null_min_p, float(per_test.min()), side="left"))
        return per_test, min(1.0, (below + float(uniforms[-1])) / (len(self.null_min_p) + 1))


@dataclass(frozen=True)
class Calibration:
    """The null distribution of a version's tests at one window size: one set of null windows per kind of
    undrifted traffic (the whole reference; and each of its components alone, when it has several)."""

    features: FeatureMap
    window_size: int
    nulls: tuple[NullWindows, ...]

    @classmethod
    def measure(
        cls, features: FeatureMap, held_out: HeldOut, *, window_size: int, windows: int, seed: int = 0
    ) -> Calibration:
        """Null windows of all the held-out predictions and, when the reference has several components,
        of each component's alone."""
        rng = np.random.default_rng(seed)
        kinds = [np.ones(len(held_out), dtype=np.bool_)]
        if len(held_out.reference_sizes) > 1:
            kinds += [held_out.components == c for c in range(len(held_out.reference_sizes))]
        nulls = tuple(
            NullWindows.draw(features, held_out, kind, window_size=window_size, windows=windows, rng=rng)
            for kind in kinds
        )
        return cls(features, window_size, nulls)

    @property
    def windows(self) -> int:
        """Null windows measured per kind of traffic."""
        return len(self.nulls[0].null_min_p)

    def p_values(self, statistics: Array, seed: int) -> tuple[Array, float]:
        """Each test's p-value for one window's ``statistics``, and the window's combined p-value: the
        smallest of them ranked among the null windows' smallest (uniform under no drift). With several
        kinds of traffic, the largest combined p-value: the window is judged against the kind it fits.
        ``seed`` breaks ties at random, reproducibly."""
        step = len(statistics) + 1
        uniforms = tie_breaks(seed, step * len(self.nulls))
        answers = [
            null.p_values(statistics, uniforms[k * step : (k + 1) * step])
            for k, null in enumerate(self.nulls)
        ]
        return max(answers, key=lambda answer: answer[1])


def expected_windows_to_false_alert(false_alarm_rate: float, alert_after: int) -> float:
    """Expected windows of undrifted traffic until ``alert_after`` flagged windows in a row (the alert
    policy's average run length under the null, with windows flagged independently at the rate)."""
    r = false_alarm_rate
    return (1.0 - r**alert_after) / ((1.0 - r) * r**alert_after)
