"""The label-free drift tests hold their false-alarm rate on clean windows and catch shifted ones."""

from __future__ import annotations

import numpy as np
import pytest

from services.drift.detectors import Array, class_chi_square, combined, embedding_mmd, softmax_ks

ALPHA = 0.05
CLASSES = 10


def softmax_sample(rng: np.random.Generator, n: int, concentration: float = 0.3) -> Array:
    """Confident, model-like softmax outputs: a Dirichlet around a random winning class."""
    winners = rng.integers(0, CLASSES, size=n)
    alpha = np.full((n, CLASSES), concentration)
    alpha[np.arange(n), winners] += 8.0
    return np.array([rng.dirichlet(a) for a in alpha])


def test_clean_windows_raise_false_alarms_at_most_at_the_configured_rate() -> None:
    rng = np.random.default_rng(0)
    reference = softmax_sample(rng, 500)
    reference_counts = np.bincount(reference.argmax(1), minlength=CLASSES).astype(float)
    windows = 500
    alarms = 0
    for _ in range(windows):
        window = softmax_sample(rng, 100)
        counts = np.bincount(window.argmax(1), minlength=CLASSES).astype(float)
        p = combined([softmax_ks(window, reference), class_chi_square(counts, reference_counts)])
        alarms += p < ALPHA
    # At most the rate plus three binomial standard deviations.
    assert alarms / windows <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / windows)


def test_a_shifted_softmax_is_flagged_in_almost_every_window() -> None:
    rng = np.random.default_rng(1)
    reference = softmax_sample(rng, 500)
    flagged = sum(
        softmax_ks(softmax_sample(rng, 100, concentration=1.5), reference).p_value < ALPHA for _ in range(50)
    )
    assert flagged >= 48


def test_a_class_that_takes_over_is_named_first() -> None:
    reference_counts = np.full(CLASSES, 50.0)
    window = np.full(CLASSES, 8.0)
    window[3] = 40.0
    result = class_chi_square(window, reference_counts)
    assert result.p_value < 1e-6
    assert result.details["moved"][0] == 3


def test_the_embedding_test_holds_its_rate_and_sees_a_moved_mean() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(200, 8))
    clean = [
        embedding_mmd(rng.normal(size=(50, 8)), reference, permutations=60, seed=i).p_value
        for i in range(100)
    ]
    assert np.mean(np.array(clean) < ALPHA) <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / 100)
    moved = embedding_mmd(rng.normal(loc=0.7, size=(50, 8)), reference, permutations=60)
    assert moved.p_value < ALPHA


def test_mismatched_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="differ"):
        softmax_ks(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="differ"):
        embedding_mmd(np.zeros((5, 3)), np.zeros((5, 4)))
