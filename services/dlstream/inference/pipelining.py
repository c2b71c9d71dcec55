"""How a worker overlaps its batches: Triton never waits for the worker, and nothing is held without bound.

A batch goes through three stages: *decide* (validate, route, Triton), *deliver* (produce the outcomes and
wait for Kafka's acknowledgement, then acknowledge the events so their offsets may be committed) and, for
events whose model is not served, *settle* (wait for the model apart from the batch). Up to
``triton_depth`` batches are decided at once: the next batch goes to Triton while it still works on the
previous one, so Triton reads it the moment it is free instead of idling while the worker receives one
answer and sends the next request. A batch is formed only when one of those places is free, so events
that arrive while they are all taken join the next batch (large under load, one event when idle).

With ``just_in_time``, a batch formed while others are in Triton keeps filling until shortly before Triton
is expected to free up (:mod:`dlstream.inference.dispatch`), until a full batch is waiting, or until a
batch in Triton is answered, whichever comes first: it is taken at once instead of queueing in Triton, and
it carries the events that arrived meanwhile.

Bounds: a batch keeps its place until its delivery has one of ``pipeline_depth - 1`` places, and until each
of its waiting events has one of ``max_waiting`` places; while all are taken no new batch is formed, the
batch source stops reading and the consumer stops fetching (backpressure). ``pipeline_depth`` 1: one batch
at a time, end to end.

No I/O here: the stages are the caller's coroutines.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from dlstream.inference.dispatch import BatchTimes, InFlight, hold_until

E = TypeVar("E")


class Decided(Protocol):
    """What deciding a batch gives: the indices of its events that wait for their model."""

    @property
    def waiting_indices(self) -> Sequence[int]:
        """Positions in the batch of the events that wait for their model."""


D = TypeVar("D", bound=Decided)


class BatchPipeline(Generic[E, D]):
    """Runs ``decide``, ``deliver`` and ``settle`` over the batches of a stream, overlapped and bounded."""

    def __init__(
        self,
        *,
        decide: Callable[[list[E]], Awaitable[D]],
        deliver: Callable[[list[E], D], Awaitable[None]],
        settle: Callable[[E, D, int], Awaitable[None]],
        triton_depth: int,
        pipeline_depth: int,
        max_waiting: int,
        just_in_time: bool = True,
        lead_s: float = 0.002,
        full: Callable[[], Awaitable[object]] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if triton_depth < 1 or pipeline_depth < 1 or max_waiting < 1:
            raise ValueError("triton_depth, pipeline_depth and max_waiting must be at least 1")
        self.decide = decide
        self.deliver = deliver
        self.settle = settle
        self.serial = pipeline_depth == 1
        self._in_triton = asyncio.Semaphore(1 if self.serial else triton_depth)
        self._deliveries = asyncio.Semaphore(max(1, pipeline_depth - 1))
        self._waiting = asyncio.Semaphore(max_waiting)
        self._tasks: set[asyncio.Task[None]] = set()
        self.just_in_time = just_in_time
        self.lead_s = lead_s
        self.full = full
        self.clock = clock
        self.times = BatchTimes()
        self._in_flight: dict[int, InFlight] = {}
        self._numbers = itertools.count()
        self._answered = asyncio.Event()

    async def run(self, batches: AsyncIterable[list[E]]) -> None:
        """Process every batch of ``batches``; returns when all are delivered and settled. A failing stage
        cancels the rest and raises (its events are not acknowledged, so they are redelivered)."""
        iterator = aiter(batches)
        try:
            while True:
                self._reap()
                await self._in_triton.acquire()
                if self.just_in_time and self._in_flight:
                    await self._hold()
                try:
                    events = await anext(iterator)
                except StopAsyncIteration:
                    self._in_triton.release()
                    break
                # In flight from now on, not from when its task first runs: the next hold counts it.
                number = next(self._numbers)
                self._in_flight[number] = InFlight(self._now(), len(events))
                task = self._spawn(self._batch(events, number))
                if self.serial:
                    await task
            while self._tasks:
                running = list(self._tasks)
                await asyncio.gather(*running)
                self._tasks.difference_update(running)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    def _now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    async def _hold(self) -> None:
        """Let the next batch fill while Triton is expected to be busy (see the dispatch module)."""
        full: asyncio.Future[Any] | None = asyncio.ensure_future(self.full()) if self.full else None
        try:
            while self._in_flight and not (full is not None and full.done()):
                now = self._now()
                left = hold_until(self._in_flight.values(), self.times, now=now, lead_s=self.lead_s) - now
                if left <= 0:
                    return
                self._answered.clear()
                answered = asyncio.ensure_future(self._answered.wait())
                waits: list[asyncio.Future[Any]] = [answered] if full is None else [answered, full]
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                answered.cancel()
        finally:
            if full is not None:
                full.cancel()

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        return task

    def _reap(self) -> None:
        for task in [t for t in self._tasks if t.done()]:
            self._tasks.discard(task)
            task.result()  # a failed stage ends the run

    async def _batch(self, events: list[E], number: int) -> None:
        sent = self._in_flight[number]
        try:
            try:
                decision = await self.decide(events)
            finally:
                del self._in_flight[number]
                self._answered.set()
            self.times.answered(sent.sent_at, sent.size, self._now())
            await self._deliveries.acquire()
            delivery = self._deliver(events, decision)
            if self.serial:
                await delivery
            else:
                self._spawn(delivery)
            for index in decision.waiting_indices:
                await self._waiting.acquire()
                self._spawn(self._settle(events[index], decision, index))
        finally:
            self._in_triton.release()

    async def _deliver(self, events: list[E], decision: D) -> None:
        try:
            await self.deliver(events, decision)
        finally:
            self._deliveries.release()

    async def _settle(self, event: E, decision: D, index: int) -> None:
        try:
            await self.settle(event, decision, index)
        finally:
            self._waiting.release()
