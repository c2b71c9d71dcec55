"""The drift tests' thresholds come from their measured null distribution: undrifted windows are flagged at
the configured rate, drifted ones are caught, and traffic inside the reference's support is not an outlier."""

from __future__ import annotations

import numpy as np
import pytest

from dlstream.drift.calibration import Calibration, _ranked, expected_windows_to_false_alert, tie_breaks
from dlstream.drift.statistical_tests import CHUNK_ROWS, Array, ReferenceIndex
from dlstream.drift.windows import Reference, WindowRows, confidence_histogram, evaluate_window
from dlstream.tools.bench.drift import _split_rates, _windows, expected_alerts, set_aside
from tests.predictions import prediction_data

pytestmark = [
    pytest.mark.unit,
    pytest.mark.slow(reason="simulates thousands of windows of model-like traffic"),
]

CLASSES = 10
LABELS = [str(i) for i in range(CLASSES)]
CENTRES = np.random.default_rng(99).normal(scale=3.0, size=(CLASSES, 8))


def traffic(
    rng: np.random.Generator, n: int, *, prior_shift: float = 0.0, offset: float = 0.0
) -> tuple[Array, Array]:
    """Model-like predictions: confident softmax rows around a winning class, embeddings around the class's
    centre. ``prior_shift`` moves traffic to class 0, ``offset`` moves the embeddings away."""
    prior = np.linspace(1.0, 2.0, CLASSES)
    prior[0] += prior_shift * prior.sum()
    winners = rng.choice(CLASSES, size=n, p=prior / prior.sum())
    alpha = np.full((n, CLASSES), 0.3)
    alpha[np.arange(n), winners] += 8.0
    gamma = rng.gamma(alpha)  # a Dirichlet draw per row
    softmax = (gamma / gamma.sum(axis=1, keepdims=True)).round(6)
    return softmax, CENTRES[winners] + rng.normal(size=(n, 8)) + offset


def reference(rng: np.random.Generator, size: int = 500, calibration: int = 2000) -> Reference:
    softmax, embedding = traffic(rng, size)
    calibration_softmax, calibration_embedding = traffic(rng, calibration)
    return Reference(LABELS, softmax, embedding, calibration_softmax, calibration_embedding)


def window(softmax: Array, embedding: Array) -> WindowRows:
    return WindowRows(softmax.argmax(1), softmax.max(1), softmax, embedding)


def p_values(rng: np.random.Generator, calibration: Calibration, windows: int, **shift: float) -> Array:
    size = calibration.window_size
    softmax, embedding = traffic(rng, windows * size, **shift)
    return np.array(
        [
            evaluate_window(
                window(softmax[k * size : (k + 1) * size], embedding[k * size : (k + 1) * size]),
                calibration,
                false_alarm_rate=0.05,
                seed=k,
            ).p_value
            for k in range(windows)
        ]
    )


@pytest.mark.parametrize("size", [50, 200])
def test_undrifted_windows_are_flagged_at_the_configured_rate(size: int) -> None:
    """Averaged over reference samples: one sample's rate scatters around the configured one by how far that
    sample happens to lie from the traffic, so many samples with few windows each measure the average."""
    rng = np.random.default_rng(size)
    p = np.concatenate(
        [p_values(rng, reference(rng, 300, 600).calibrate(size, 4000), 30) for _ in range(100)]
    )
    for rate, low, high in ((0.01, 0.4, 1.8), (0.05, 0.7, 1.3), (0.2, 0.8, 1.2)):
        assert low * rate <= (p <= rate).mean() <= high * rate, rate


def test_drifted_windows_are_flagged_with_the_test_that_moved() -> None:
    rng = np.random.default_rng(3)
    ref = reference(rng)
    calibration = ref.calibrate(100, 5000)
    assert (p_values(rng, calibration, 20, prior_shift=0.5) <= 0.01).mean() >= 0.9
    assert (p_values(rng, calibration, 20, offset=4.0) <= 0.01).all()
    softmax, embedding = traffic(rng, 100, prior_shift=0.5)
    result = evaluate_window(window(softmax, embedding), calibration, false_alarm_rate=0.01)
    assert result.flagged
    assert result.strongest.test == "class_chi_square"
    assert result.moved[0] == 0
    assert sum(result.counts) == 100
    assert [t.test for t in result.tests] == ["class_chi_square", "confidence_ks", "embedding_outliers"]


def test_a_reference_of_two_components_accepts_either_alone_or_any_mix_but_not_a_third_kind() -> None:
    """A retrained version's reference: base traffic (component 0) and the drifted live traffic it was trained
    on (component 1, another class mix and other embeddings). Either alone or any mix is traffic it serves."""
    rng = np.random.default_rng(4)
    base, live = traffic(rng, 700), traffic(rng, 300, prior_shift=0.6, offset=4.0)
    softmax, embedding = (np.vstack([a, b]) for a, b in zip(base, live, strict=True))
    parts = np.array([0] * 700 + [1] * 300)
    order = rng.permutation(1000)
    ref, cal = order[:500], order[500:]
    reference = Reference(
        LABELS, softmax[ref], embedding[ref], softmax[cal], embedding[cal], parts[ref], parts[cal]
    )
    calibration = reference.calibrate(100, 4000)
    for share in (0.0, 0.3, 1.0):
        rows = [traffic(rng, 100 * 30, prior_shift=0.6, offset=4.0), traffic(rng, 100 * 30)]
        p = []
        for k in range(30):
            live_count = round(100 * share)
            pick = slice(k * 100, k * 100 + live_count), slice(k * 100 + live_count, (k + 1) * 100)
            s = np.vstack([rows[0][0][pick[0]], rows[1][0][pick[1]]])
            e = np.vstack([rows[0][1][pick[0]], rows[1][1][pick[1]]])
            p.append(evaluate_window(window(s, e), calibration, false_alarm_rate=0.01, seed=k).p_value)
        assert (np.array(p) <= 0.01).mean() <= 0.1, share
    softmax, embedding = traffic(rng, 100, offset=-6.0)
    result = evaluate_window(window(softmax, embedding), calibration, false_alarm_rate=0.01)
    assert result.flagged
    assert result.tests[2].p_value < 0.001


def test_models_without_full_probabilities_or_embeddings_are_tested_on_what_they_have() -> None:
    rng = np.random.default_rng(5)
    ref = reference(rng, 200, 200)
    bare = Reference(LABELS, ref.softmax, np.zeros((200, 0)), ref.calibration_softmax, np.zeros((200, 0)))
    calibration = bare.calibrate(50, 2000)
    softmax, _ = traffic(rng, 50)
    rows = WindowRows(softmax.argmax(1), softmax.max(1), None, np.zeros((50, 0)))
    result = evaluate_window(rows, calibration, false_alarm_rate=0.01)
    assert [t.test for t in result.tests] == ["class_chi_square", "confidence_ks"]


def test_tied_statistics_still_give_uniform_p_values() -> None:
    rng = np.random.default_rng(6)
    null = np.sort(rng.integers(0, 4, size=100000).astype(float))
    values = rng.integers(0, 4, size=20000).astype(float)
    p = _ranked(null, values, rng.random(len(values)), member=False)
    for rate in (0.05, 0.1, 0.3):
        assert (p <= rate).mean() == pytest.approx(rate, abs=0.01)


def test_expected_windows_between_false_alerts() -> None:
    assert expected_windows_to_false_alert(0.05, 1) == pytest.approx(20.0)
    assert expected_windows_to_false_alert(0.01, 2) == pytest.approx(10100.0)


def test_expected_alerts_in_short_streams_and_per_window_in_a_long_one() -> None:
    assert expected_alerts(0.01, 2, 2) == pytest.approx(1e-4)
    assert expected_alerts(0.01, 2, 1) == 0.0
    assert expected_alerts(0.3, 1, 10) == pytest.approx(3.0)
    long = expected_alerts(0.05, 2, 100_000) / 100_000
    assert long == pytest.approx(1 / expected_windows_to_false_alert(0.05, 2), rel=1e-3)


def test_the_bench_sets_aside_two_windows_and_keeps_half_for_the_reference() -> None:
    assert set_aside(1000, 50) == 333
    assert set_aside(1000, 200) == 400
    assert set_aside(600, 50) == 200
    assert set_aside(600, 200) is None  # 400 aside would leave a third
    assert set_aside(393, 200) is None


def test_the_bench_cuts_disjoint_windows_from_a_split_and_refuses_more_than_it_holds() -> None:
    pool = [prediction_data(request_id=f"r{i}", embedding=[float(i)]) for i in range(10)]
    stream = _windows(pool, 2, 5, seed=3, replace=False)
    assert sorted(p.embedding[0] for p in stream) == [float(i) for i in range(10)]
    assert len({p.request_id for p in stream}) == 10
    with pytest.raises(ValueError, match="disjoint windows"):
        _windows(pool, 3, 4, seed=3, replace=False)
    assert len(_windows(pool, 3, 4, seed=3, replace=True)) == 12


def test_the_design_effect_is_one_for_independent_windows_and_the_windows_per_split_when_all_agree() -> None:
    rng = np.random.default_rng(5)
    independent = _split_rates(rng.random((4000, 5)).tolist(), 0.05)
    assert independent["design_effect"] == pytest.approx(1.0, abs=0.1)
    together = np.repeat(rng.random((4000, 1)), 5, axis=1)
    assert _split_rates(together.tolist(), 0.05)["design_effect"] == pytest.approx(5.0, abs=0.3)


@pytest.mark.parametrize(("rows", "dims"), [(CHUNK_ROWS + 45, 8), (40, 3)])
def test_nearest_reference_rows_are_those_of_a_full_sort(rows: int, dims: int) -> None:
    rng = np.random.default_rng(dims)
    sample = rng.normal(size=(300, dims))
    sample[1] = sample[0]  # a duplicate: leaving a row out must not leave out its twin
    queries = rng.normal(size=(rows, dims))
    index = ReferenceIndex.build(sample)
    for points, own in ((queries, False), (sample, True)):
        distance, nearest = index.nearest(points, 3, own=own)
        full = np.sqrt(((points[:, None, :] - sample[None, :, :]) ** 2).sum(2))
        if own:
            np.fill_diagonal(full, np.inf)
        expected = np.sort(full, axis=1)[:, :3]
        np.testing.assert_allclose(np.take_along_axis(full, nearest, 1), expected, atol=1e-12)
        np.testing.assert_allclose(distance, expected[:, 2], atol=1e-12)
    assert index.nearest(sample, 3, own=True)[0][0] > 0.0  # row 0's twin counts once, as its nearest


def test_tie_breaks_are_uniform_and_the_same_for_the_same_seed() -> None:
    draws = np.concatenate([tie_breaks(seed, 9) for seed in range(5000)])
    assert ((draws >= 0.0) & (draws < 1.0)).all()
    counts = np.histogram(draws, bins=10, range=(0.0, 1.0))[0]
    assert np.abs(counts / len(draws) - 0.1).max() < 0.01
    assert (tie_breaks(7, 3) == tie_breaks(7, 9)[:3]).all()
    assert not (tie_breaks(7, 3) == tie_breaks(8, 3)).any()


def test_the_confidence_histogram_is_numpys_including_values_on_the_edges() -> None:
    rng = np.random.default_rng(9)
    edges = np.linspace(0.0, 1.0, 21)
    for values in (rng.random(1000), rng.random(1000).round(2), edges, np.array([-0.1, 1.1, 0.5])):
        expected = np.histogram(values, bins=20, range=(0.0, 1.0))[0]
        assert confidence_histogram(values).tolist() == expected.tolist()


def test_a_windows_feature_means_are_the_mean_of_its_features() -> None:
    rng = np.random.default_rng(10)
    features = reference(rng).feature_map()
    softmax, embedding = traffic(rng, 200, prior_shift=0.3, offset=0.5)
    classes, confidence = softmax.argmax(1), softmax.max(1)
    expected = features.features(classes, confidence, embedding).mean(0)
    np.testing.assert_allclose(features.means(classes, confidence, embedding), expected, atol=1e-15)
