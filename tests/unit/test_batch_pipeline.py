"""How a worker overlaps its batches (``BatchPipeline``): stages are hand-written coroutines, no I/O."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from dlstream.inference.pipelining import BatchPipeline

pytestmark = pytest.mark.unit


@dataclass
class Decided:
    batch: list[int]
    waiting_indices: list[int] = field(default_factory=list)


@dataclass
class Stages:
    """Stages that record what ran at once; each waits for its own release when ``gated``."""

    gated: bool = False
    waiting: set[int] = field(default_factory=set)  # events whose model is not served
    deciding: int = 0
    delivering: int = 0
    settling: int = 0
    most_deciding: int = 0
    most_delivering: int = 0
    most_settling: int = 0
    pulled: int = 0
    delivered: list[int] = field(default_factory=list)
    settled: list[int] = field(default_factory=list)
    order: list[str] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    async def source(self, batches: list[list[int]]) -> AsyncIterator[list[int]]:
        for batch in batches:
            self.pulled += 1
            yield batch

    async def decide(self, batch: list[int]) -> Decided:
        self.deciding += 1
        self.most_deciding = max(self.most_deciding, self.deciding)
        self.order.append(f"decide {batch[0]}")
        if self.gated:
            await self.gate(f"decide {batch[0]}").wait()
        await asyncio.sleep(0)
        self.deciding -= 1
        return Decided(batch, [i for i, e in enumerate(batch) if e in self.waiting])

    async def deliver(self, batch: list[int], decision: Decided) -> None:
        self.delivering += 1
        self.most_delivering = max(self.most_delivering, self.delivering)
        self.order.append(f"deliver {batch[0]}")
        if self.gated:
            await self.gate(f"deliver {batch[0]}").wait()
        await asyncio.sleep(0)
        self.delivering -= 1
        self.delivered += [e for i, e in enumerate(batch) if i not in decision.waiting_indices]

    async def settle(self, event: int, decision: Decided, index: int) -> None:
        assert decision.batch[index] == event
        self.settling += 1
        self.most_settling = max(self.most_settling, self.settling)
        if self.gated:
            await self.gate(f"settle {event}").wait()
        await asyncio.sleep(0)
        self.settling -= 1
        self.settled.append(event)


def pipeline(
    stages: Stages,
    *,
    triton: int = 2,
    depth: int = 2,
    waiting: int = 100,
    just_in_time: bool = True,
    full: Callable[[], Awaitable[object]] | None = None,
    clock: Callable[[], float] | None = None,
) -> BatchPipeline[int, Decided]:
    return BatchPipeline(
        decide=stages.decide,
        deliver=stages.deliver,
        settle=stages.settle,
        triton_depth=triton,
        pipeline_depth=depth,
        max_waiting=waiting,
        just_in_time=just_in_time,
        full=full,
        clock=clock,
    )


async def until(condition: object, timeout_s: float = 5.0) -> None:
    async def poll() -> None:
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), timeout_s)


async def everything_ready_ran() -> None:
    """Let every task that can run, run (no wall-clock wait): what has not happened then cannot."""
    for _ in range(100):
        await asyncio.sleep(0)


BATCHES = [[10 * b + i for i in range(3)] for b in range(8)]


def open_every_gate(stages: Stages) -> None:
    """Let every batch of BATCHES be decided and delivered."""
    for gate in [f"{s} {10 * b}" for b in range(8) for s in ("decide", "deliver")]:
        stages.gate(gate).set()


async def release_all(stages: Stages, run: asyncio.Task[None]) -> None:
    """Open every gate and let the run end."""
    open_every_gate(stages)
    await asyncio.wait_for(run, 5)


@pytest.mark.parametrize(("triton", "depth"), [(1, 1), (1, 2), (2, 2), (3, 4)])
def test_every_event_is_delivered_once(triton: int, depth: int) -> None:
    stages = Stages()
    asyncio.run(pipeline(stages, triton=triton, depth=depth).run(stages.source(BATCHES)))
    assert sorted(stages.delivered) == sorted(e for b in BATCHES for e in b)


def test_the_next_batch_goes_to_triton_while_it_works_on_one_and_is_formed_only_then() -> None:
    async def scenario() -> Stages:
        stages = Stages(gated=True)
        run = asyncio.create_task(pipeline(stages, triton=2).run(stages.source(BATCHES)))
        await until(lambda: stages.deciding == 2)
        # Two batches are with Triton; the third is not formed until one of them comes back.
        await everything_ready_ran()
        assert stages.pulled == 2
        assert stages.most_deciding == 2
        stages.gate("decide 0").set()
        await until(lambda: stages.pulled == 3)
        await release_all(stages, run)
        return stages

    stages = asyncio.run(scenario())
    assert stages.most_deciding == 2


def test_one_in_triton_waits_for_its_answer_before_forming_the_next() -> None:
    async def scenario() -> Stages:
        stages = Stages(gated=True)
        run = asyncio.create_task(pipeline(stages, triton=1, depth=3).run(stages.source(BATCHES)))
        await until(lambda: stages.deciding == 1)
        await everything_ready_ran()
        assert stages.pulled == 1
        await release_all(stages, run)
        return stages

    assert asyncio.run(scenario()).most_deciding == 1


def test_slow_deliveries_hold_their_places_and_stop_new_batches() -> None:
    async def scenario() -> Stages:
        stages = Stages(gated=True)
        run = asyncio.create_task(pipeline(stages, triton=2, depth=2).run(stages.source(BATCHES)))
        for b in range(8):
            stages.gate(f"decide {10 * b}").set()
        # One delivery may run; the next decided batch keeps its Triton place until it may deliver, and so
        # does the one after it: nothing more is formed.
        await until(lambda: stages.delivering == 1)
        await everything_ready_ran()
        assert stages.pulled == 3
        assert stages.most_delivering == 1
        stages.gate("deliver 0").set()
        await until(lambda: stages.pulled == 4)
        for b in range(1, 8):
            stages.gate(f"deliver {10 * b}").set()
        await asyncio.wait_for(run, 5)
        return stages

    stages = asyncio.run(scenario())
    assert stages.most_delivering == 1
    assert sorted(stages.delivered) == sorted(e for b in BATCHES for e in b)


def test_depth_one_runs_each_batch_end_to_end_before_the_next() -> None:
    stages = Stages()
    asyncio.run(pipeline(stages, triton=4, depth=1).run(stages.source(BATCHES)))
    assert stages.order == [f"{s} {10 * b}" for b in range(8) for s in ("decide", "deliver")]


def test_waiting_events_are_settled_apart_without_holding_the_delivery_back() -> None:
    async def scenario() -> Stages:
        stages = Stages(gated=True, waiting={1, 11, 21})
        run = asyncio.create_task(pipeline(stages, waiting=2).run(stages.source(BATCHES)))
        open_every_gate(stages)
        # Two events wait (the bound); the batch of the third is delivered all the same, then holds its
        # place until a waiting place is free.
        await until(lambda: stages.settling == 2 and 20 in stages.delivered)
        await everything_ready_ran()
        assert stages.most_settling == 2
        for event in (1, 11, 21):
            stages.gate(f"settle {event}").set()
        await asyncio.wait_for(run, 5)
        return stages

    stages = asyncio.run(scenario())
    assert sorted(stages.settled) == [1, 11, 21]
    assert 1 not in stages.delivered
    assert sorted(stages.delivered + stages.settled) == sorted(e for b in BATCHES for e in b)


def test_a_failed_delivery_ends_the_run_and_cancels_the_rest() -> None:
    class Failing(Stages):
        async def deliver(self, batch: list[int], decision: Decided) -> None:
            if batch[0] == 20:
                raise RuntimeError("broken sink")
            await super().deliver(batch, decision)

    stages = Failing()
    with pytest.raises(RuntimeError, match="broken sink"):
        asyncio.run(pipeline(stages).run(stages.source(BATCHES)))
    assert 20 not in stages.delivered


def test_depths_below_one_are_refused() -> None:
    stages = Stages()
    with pytest.raises(ValueError, match="at least 1"):
        pipeline(stages, triton=0)


class Clock:
    """A clock the test moves: Triton's learnt batch time is whatever the test lets pass during a batch."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def learnt_100_s_batches(stages: Stages, clock: Clock) -> None:
    """Let batch 0 take 100 s by the clock and be answered, and batch 1 go to Triton (and stay there)."""
    await until(lambda: stages.deciding == 2)
    clock.now += 100.0
    stages.gate("decide 0").set()
    stages.gate("deliver 0").set()
    await until(lambda: "deliver 0" in stages.order)


@pytest.mark.parametrize("just_in_time", [True, False])
def test_a_batch_formed_while_triton_is_busy_fills_until_triton_is_expected_to_free_up(
    just_in_time: bool,
) -> None:
    async def scenario() -> int:
        stages, clock = Stages(gated=True), Clock()
        run = asyncio.create_task(
            pipeline(stages, just_in_time=just_in_time, clock=clock).run(stages.source(BATCHES))
        )
        await learnt_100_s_batches(stages, clock)
        await everything_ready_ran()
        # Batch 1 was sent at 100 s and is expected back at 200 s: the next keeps filling until then.
        pulled_while_busy = stages.pulled
        await release_all(stages, run)
        return pulled_while_busy

    assert asyncio.run(scenario()) == (2 if just_in_time else 3)


def test_a_held_batch_goes_once_triton_answers() -> None:
    async def scenario() -> None:
        stages, clock = Stages(gated=True), Clock()
        run = asyncio.create_task(pipeline(stages, clock=clock).run(stages.source(BATCHES)))
        await learnt_100_s_batches(stages, clock)
        await everything_ready_ran()
        assert stages.pulled == 2
        stages.gate("decide 10").set()
        await until(lambda: stages.pulled == 3)
        await release_all(stages, run)

    asyncio.run(scenario())


def test_a_held_batch_goes_once_a_full_batch_waits() -> None:
    async def scenario() -> None:
        stages, clock, full = Stages(gated=True), Clock(), asyncio.Event()
        run = asyncio.create_task(pipeline(stages, clock=clock, full=full.wait).run(stages.source(BATCHES)))
        await learnt_100_s_batches(stages, clock)
        await everything_ready_ran()
        assert stages.pulled == 2
        full.set()
        await until(lambda: stages.pulled == 3)
        assert stages.deciding == 2  # batch 1 is still in Triton
        await release_all(stages, run)

    asyncio.run(scenario())
