"""When the next batch goes to Triton (``dlstream.inference.dispatch``): pure logic, times in seconds."""

from __future__ import annotations

import pytest

from dlstream.inference.dispatch import BatchTimes, InFlight, hold_until

pytestmark = pytest.mark.unit


def answered_one_after_another(times: BatchTimes, sizes: list[int], took: object) -> float:
    now = 0.0
    for size in sizes:
        sent = now
        now += took(size)  # type: ignore[operator]
        times.answered(sent, size, now)
        now += 0.001  # Triton idle between batches
    return now


def test_the_fit_recovers_a_fixed_and_a_per_event_time() -> None:
    times = BatchTimes()
    answered_one_after_another(times, [1, 8, 64, 16, 32, 4] * 5, lambda n: 0.003 + 0.0005 * n)
    assert times.expected(1) == pytest.approx(0.0035)
    assert times.expected(64) == pytest.approx(0.035)


def test_batches_of_one_size_give_their_mean_time_per_event() -> None:
    times = BatchTimes()
    answered_one_after_another(times, [10] * 5, lambda n: 0.02)
    assert times.expected(10) == pytest.approx(0.02)
    assert times.expected(20) == pytest.approx(0.04)


def test_time_queued_behind_the_batch_before_is_not_the_models() -> None:
    times = BatchTimes()
    times.answered(0.0, 10, 0.010)
    # Sent at 0.002 while the first ran; Triton could only start it at 0.010.
    times.answered(0.002, 10, 0.020)
    assert times.expected(10) == pytest.approx(0.010)


def test_the_fit_follows_a_machine_that_slows_down() -> None:
    times = BatchTimes()
    end = answered_one_after_another(times, [8, 32] * 20, lambda n: 0.001 * n)
    for i in range(100):
        size, start = (8, 32)[i % 2], end + i
        times.answered(start, size, start + 0.002 * size)  # twice as slow
    assert times.expected(16) == pytest.approx(0.032, rel=0.01)


def test_nothing_in_flight_or_nothing_learnt_sends_at_once() -> None:
    times = BatchTimes()
    assert hold_until([], times, now=5.0, lead_s=0.002) == 5.0
    assert hold_until([InFlight(4.9, 10)], times, now=5.0, lead_s=0.002) == 5.0


def test_the_next_batch_fills_until_just_before_the_batches_in_triton_are_expected_back() -> None:
    times = BatchTimes()
    answered_one_after_another(times, [10] * 3, lambda n: 0.020)
    last = times.last_answer
    one = [InFlight(last + 1.0, 10)]
    assert hold_until(one, times, now=last + 1.005, lead_s=0.002) == pytest.approx(last + 1.018)
    # Two in Triton: the second starts once the first is answered.
    two = [InFlight(last + 1.001, 10), InFlight(last + 1.0, 10)]
    assert hold_until(two, times, now=last + 1.005, lead_s=0.002) == pytest.approx(last + 1.038)
    # Expected back already (Triton is late): send at once.
    assert hold_until(one, times, now=last + 1.5, lead_s=0.002) == last + 1.5


def test_a_weight_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="weight"):
        BatchTimes(weight=0)
