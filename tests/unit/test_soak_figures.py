"""The soak's growth figures: memory and latency after warm-up, by difference and by trend."""

from __future__ import annotations

import pytest

from dlstream.tools.bench.soak_figures import Period, slope_per_hour, soak_growth

pytestmark = pytest.mark.unit


def period(at: float, worker_mb: float, p99: float = 50.0, **rss: float) -> Period:
    return Period(at=at, events=100, p50_ms=p99 / 2, p99_ms=p99, rss_mb={"worker": worker_mb, **rss})


def test_the_slope_is_per_hour() -> None:
    assert slope_per_hour([0.0, 60.0, 120.0], [100.0, 101.0, 102.0]) == pytest.approx(60.0)
    assert slope_per_hour([5.0], [1.0]) == 0.0


def test_warm_up_periods_are_left_out_of_growth() -> None:
    periods = [period(10, 50.0, p99=400.0), period(70, 100.0), period(130, 100.0), period(190, 103.0)]
    growth = soak_growth(periods, warm_up_s=60)
    worker = growth["memory"]["worker"]  # type: ignore[index]
    assert worker["after_warm_up_mb"] == 100.0
    assert worker["end_mb"] == 103.0
    assert worker["growth_mb"] == 3.0
    assert worker["growth_pct"] == 3.0
    assert worker["trend_mb_per_hour"] == pytest.approx(90.0)  # least squares: 180 / 7200 MB a second
    assert growth["latency"]["p99_ms"]["after_warm_up_ms"] == 50.0  # type: ignore[index]
    assert growth["periods_after_warm_up"] == 3


def test_a_process_that_appears_late_is_measured_from_its_first_sample() -> None:
    periods = [period(70, 100.0), period(130, 100.0, triton=2000.0), period(190, 100.0, triton=2010.0)]
    triton = soak_growth(periods, warm_up_s=60)["memory"]["triton"]  # type: ignore[index]
    assert triton["after_warm_up_mb"] == 2000.0
    assert triton["growth_mb"] == 10.0


def test_too_short_a_soak_says_so() -> None:
    with pytest.raises(ValueError, match="two periods after"):
        soak_growth([period(10, 1.0), period(70, 1.0)], warm_up_s=60)
