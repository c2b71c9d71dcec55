"""Batches that go as soon as the agent is ready, and the figures of the latency benchmark (no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dlstream.domain.contract import PredictionEvent, Timing
from dlstream.inference.batching import ReadyBatches
from dlstream.tools.bench.latency import (
    Arrival,
    BacklogSample,
    backlog_growth,
    breakdown,
    p99_bound_ms,
    parse_levels,
    percentiles,
)
from tests.predictions import prediction_data

pytestmark = pytest.mark.unit


async def trickle(items: list[int], gaps: dict[int, float]) -> AsyncIterator[int]:
    """Yield ``items``, sleeping ``gaps[i]`` seconds before item ``i``."""
    for i, item in enumerate(items):
        if i in gaps:
            await asyncio.sleep(gaps[i])
        yield item


async def collect(batches: ReadyBatches[int], work_s: float = 0.0) -> list[list[int]]:
    out = []
    async for batch in batches:
        out.append(batch)
        await asyncio.sleep(work_s)  # the agent busy with Triton meanwhile
    return out


def test_an_idle_stream_gives_batches_of_one_without_waiting() -> None:
    source = trickle([1, 2, 3], {1: 0.05, 2: 0.05})
    batches = asyncio.run(collect(ReadyBatches(source, max_batch=8)))
    assert batches == [[1], [2], [3]]


def test_events_that_arrive_while_the_agent_is_busy_form_the_next_batch() -> None:
    source = trickle(list(range(10)), {1: 0.01})
    # The first batch is [0]; while the agent works on it for 0.1 s, the rest queue up.
    batches = asyncio.run(collect(ReadyBatches(source, max_batch=4, capacity=16), work_s=0.1))
    assert batches[0] == [0]
    assert batches[1:] == [[1, 2, 3, 4], [5, 6, 7, 8], [9]]


def test_linger_waits_for_more_events_after_the_first() -> None:
    source = trickle([1, 2, 3], {1: 0.01, 2: 0.5})
    batches = asyncio.run(collect(ReadyBatches(source, max_batch=8, linger_s=0.2)))
    assert batches == [[1, 2], [3]]


def test_the_sources_failure_reaches_the_agent_after_the_batches_before_it() -> None:
    async def failing() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("consumer crashed")

    async def run() -> list[list[int]]:
        seen = []

        async def consume() -> None:
            async for batch in ReadyBatches(failing(), max_batch=4):
                seen.append(batch)

        with pytest.raises(RuntimeError, match="consumer crashed"):
            await consume()
        return seen

    assert asyncio.run(run()) == [[1]]


def test_a_full_queue_holds_the_reader_back() -> None:
    async def run() -> int:
        taken = 0

        async def counting() -> AsyncIterator[int]:
            nonlocal taken
            for i in range(100):
                taken += 1
                yield i

        batches = ReadyBatches(counting(), max_batch=2, capacity=4)
        iterator = aiter(batches)
        await anext(iterator)
        await asyncio.sleep(0.05)
        seen = taken
        await iterator.aclose()  # type: ignore[attr-defined]
        return seen

    # At most: the first batch, four queued, one waiting to be put, and one the source already made.
    assert asyncio.run(run()) <= 8


def test_wait_full_returns_once_a_full_batch_is_queued_and_again_only_when_the_next_is() -> None:
    async def run() -> list[str]:
        gate = asyncio.Event()

        async def gated() -> AsyncIterator[int]:
            for i in range(12):
                if i == 8:
                    await gate.wait()
                yield i

        seen: list[str] = []
        batches = ReadyBatches(gated(), max_batch=4, capacity=16)
        iterator = aiter(batches)
        seen.append(f"batch {await anext(iterator)}")
        await asyncio.wait_for(batches.wait_full(), 5)  # 4 ... 7 queued
        seen.append(f"batch {await anext(iterator)}")
        waiting = asyncio.ensure_future(batches.wait_full())
        await asyncio.sleep(0.05)
        seen.append(f"full while nothing is queued: {waiting.done()}")
        gate.set()  # 8 ... 11 come, then the end
        await asyncio.wait_for(waiting, 5)
        seen.append("full")
        async for batch in iterator:
            seen.append(f"batch {batch}")
        await asyncio.wait_for(batches.wait_full(), 5)  # the end never leaves a holder waiting
        return seen

    assert asyncio.run(run()) == [
        "batch [0, 1, 2, 3]",
        "batch [4, 5, 6, 7]",
        "full while nothing is queued: False",
        "full",
        "batch [8, 9, 10, 11]",
    ]


def prediction(total: float, kafka: float | None = 1.0) -> PredictionEvent:
    timing = Timing(
        queued_ms=3.0,
        inference_ms=4.0,
        total_ms=total,
        kafka_ms=kafka,
        batch_ms=None if kafka is None else 2.0,
        outcome_ms=None if kafka is None else 0.5,
    )
    return PredictionEvent(
        source="test",
        subject="r",
        data=prediction_data(timing=timing),
    )


def test_percentiles_and_the_breakdown_of_where_time_went() -> None:
    assert percentiles([float(v) for v in range(1, 101)]) == {
        "p50_ms": 50.5,
        "p99_ms": 99.0,
        "p99_9_ms": 99.9,
    }
    arrivals = [
        Arrival(prediction(7.5), requested_at=100.0, received_at=100.010),
        Arrival(prediction(7.5), requested_at=200.0, received_at=200.012),
        Arrival(prediction(7.5, kafka=None), requested_at=300.0, received_at=300.5),  # an older worker
    ]
    assert arrivals[0].end_to_end_ms == pytest.approx(10.0, abs=1e-6)
    parts = breakdown(arrivals)
    assert parts == {
        "kafka_ms": 1.0,
        "batch_ms": 2.0,
        "inference_ms": 4.0,
        "outcome_ms": 0.5,
        "delivery_ms": pytest.approx(3.5, abs=0.05),
    }


def test_a_backlog_that_trends_up_is_growth_and_a_steady_one_is_not() -> None:
    steady = [BacklogSample(at=float(t), sent=100 * t, received=100 * t - 5 - t % 3) for t in range(60)]
    growing = [BacklogSample(at=float(t), sent=100 * t, received=90 * t) for t in range(60)]
    assert backlog_growth(steady, offered_eps=100, settle_s=5)["grows"] is False
    grown = backlog_growth(growing, offered_eps=100, settle_s=5)
    assert grown["grows"] is True
    assert grown["backlog_slope_eps"] == pytest.approx(10.0)
    with pytest.raises(ValueError, match="too few"):
        backlog_growth(steady[:6], offered_eps=100, settle_s=5)


def test_the_p99_bound_is_one_batch_wait_and_three_triton_round_trips() -> None:
    assert p99_bound_ms(2.0, 6.0) == 20.0


def test_load_levels_are_sorted_fractions_and_anything_else_is_refused() -> None:
    assert parse_levels("0.9, 0.5,0.5") == (0.5, 0.9)
    for bad in ("0.5,1.5", "0", "half", ","):
        with pytest.raises(ValueError, match=r"load level|numbers"):
            parse_levels(bad)
