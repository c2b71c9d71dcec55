"""Label-free drift detectors (Rabanser et al. 2019, "Failing Loudly"): pure objects, no I/O.

Each compares one window of predictions with the reference sample the model build wrote (``reference.json``)
and returns a p-value. A window is flagged when its p-value is below the false-alarm rate; under no drift that
happens in that share of windows, which is what makes the rate a setting rather than a hope. Where one window
runs several tests, :func:`combined` applies Bonferroni so the window's false-alarm rate still holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import stats

Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WindowTest:
    """One test on one window."""

    test: str
    statistic: float
    p_value: float
    details: dict[str, Any]


def softmax_ks(window: Array, reference: Array) -> WindowTest:
    """Per-class two-sample Kolmogorov-Smirnov tests on the softmax outputs, Bonferroni over the classes.

    ``details["moved"]`` ranks the classes by their KS statistic (the classes that moved most first).
    """
    if window.ndim != 2 or reference.ndim != 2 or window.shape[1] != reference.shape[1]:
        raise ValueError(f"softmax shapes differ: {window.shape} vs {reference.shape}")
    results = [stats.ks_2samp(window[:, k], reference[:, k]) for k in range(window.shape[1])]
    statistics = np.array([r.statistic for r in results])
    p_values = np.array([r.pvalue for r in results])
    worst = int(np.argmin(p_values))
    p = min(1.0, float(p_values[worst]) * window.shape[1])
    moved = [int(k) for k in np.argsort(-statistics)]
    return WindowTest("softmax_ks", float(statistics[worst]), p, {"moved": moved})


def class_chi_square(predicted_counts: Array, reference_counts: Array) -> WindowTest:
    """Chi-square test of homogeneity between the window's and the reference's predicted-class counts.

    A two-sample test: the reference proportions are themselves estimated from a finite sample, and treating
    them as exact would raise false alarms above the configured rate.
    """
    table = np.vstack([predicted_counts, reference_counts]).astype(float)
    seen = table.sum(axis=0) > 0
    statistic, p, _, expected = stats.chi2_contingency(table[:, seen], correction=False)
    residuals = np.zeros(len(predicted_counts))
    residuals[seen] = (table[0, seen] - expected[0]) / np.sqrt(expected[0])
    moved = [int(k) for k in np.argsort(-np.abs(residuals))]
    return WindowTest("class_chi_square", float(statistic), float(p), {"moved": moved})


def _squared_distances(a: Array, b: Array) -> Array:
    distances: Array = np.maximum(0.0, (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T)
    return distances


def embedding_mmd(window: Array, reference: Array, *, permutations: int = 200, seed: int = 0) -> WindowTest:
    """Maximum mean discrepancy with a Gaussian kernel (median-distance bandwidth), permutation p-value."""
    if window.shape[1] != reference.shape[1]:
        raise ValueError(f"embedding widths differ: {window.shape[1]} vs {reference.shape[1]}")
    pooled = np.vstack([window, reference])
    distances = _squared_distances(pooled, pooled)
    bandwidth = float(np.median(distances[np.triu_indices(len(pooled), k=1)])) or 1.0
    kernel = np.exp(-distances / bandwidth)
    n, total = len(window), len(pooled)
    # MMD^2 (biased) is w^T K w with w = 1/n on the window and -1/m on the reference; a permutation only moves
    # the weights, so all permutations are one matrix product.
    weights = np.concatenate([np.full(n, 1.0 / n), np.full(total - n, -1.0 / (total - n))])
    observed = float(weights @ kernel @ weights)
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(total) for _ in range(permutations)])
    permuted = np.empty((permutations, total))
    np.put_along_axis(permuted, orders, np.broadcast_to(weights, (permutations, total)), axis=1)
    null = ((permuted @ kernel) * permuted).sum(axis=1)
    exceed = int((null >= observed - 1e-12).sum())
    return WindowTest("embedding_mmd", observed, (exceed + 1) / (permutations + 1), {})


def combined(results: list[WindowTest]) -> float:
    """The window's p-value over several tests (Bonferroni): flag the window when it is below the rate."""
    return min(1.0, min(r.p_value for r in results) * len(results))
