"""Thresholds from the null distribution, measured: pure, no I/O.

A version's tests (:mod:`services.drift.detectors`) compare each window with the version's reference sample.
How large a statistic gets by chance depends on that sample, the window size and the model, so no textbook
distribution gives its p-value exactly (Bonferroni over tests and classes, ties and a finite reference sample
make such p-values conservative). Instead, many windows are drawn with replacement from the model's own
predictions on held-out data (a calibration sample the reference never saw, and the reference sample itself,
each of its predictions measured against the rest) and run through the same tests against the same
reference: a live window's p-value is its rank among them. The tests are
combined by the smallest p-value, itself ranked among the null windows' smallest p-values, so the window's
false-alarm rate is the configured one rather than a bound on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.drift.detectors import Array, FeatureMap

# Null windows drawn per chunk (bounds the memory of the gather: chunk x window x features).
CHUNK = 64


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
class NullWindows:
    """The tests' statistics on undrifted windows of one kind of traffic."""

    null: Array  # [windows, tests], each column sorted
    null_min_p: Array  # sorted smallest p-value of each null window

    @classmethod
    def draw(
        cls, features: FeatureMap, rows: Array, *, window_size: int, windows: int, rng: np.random.Generator
    ) -> NullWindows:
        """Draw ``windows`` windows of ``window_size`` of ``rows`` (features of predictions), with
        replacement: live traffic is a draw from the population, not from a finite pool."""
        if len(rows) == 0:
            raise ValueError("no calibration predictions")
        n = len(rows)
        means = []
        for start in range(0, windows, CHUNK):
            # The sample is itself a sample of the traffic: each chunk's windows come from a bootstrap
            # resample of it, so the null also spreads by how far the sample may lie from the traffic
            # (which matters once windows are as large as the sample).
            pool = rng.integers(0, n, size=n)
            picks = pool[rng.integers(0, n, size=(min(CHUNK, windows - start), window_size))]
            means.append(rows[picks].mean(axis=1))
        statistics = features.statistics(np.vstack(means), window_size)
        null = np.sort(statistics, axis=0)
        p = np.column_stack(
            [
                _ranked(null[:, t], statistics[:, t], rng.random(windows), member=True)
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
        cls,
        features: FeatureMap,
        kinds: Sequence[Array],
        *,
        window_size: int,
        windows: int,
        seed: int = 0,
    ) -> Calibration:
        """Null windows of each kind of traffic (``kinds``: the features of its predictions)."""
        rng = np.random.default_rng(seed)
        nulls = tuple(
            NullWindows.draw(features, rows, window_size=window_size, windows=windows, rng=rng)
            for rows in kinds
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
