"""Batches that go to Triton as soon as it is free: no fill wait when idle, large batches under load.

A fixed fill window (Faust's ``take(max, within)``) makes every event of an idle stream wait for the window,
and under load still waits for it after each batch. Here a reader task moves events from the stream into a
bounded queue, and the agent takes *everything queued* (up to ``max_batch``) whenever it is ready for the
next batch; only when nothing is queued does it wait, for the first event, and then ``linger_s`` at most
for more. While Triton works on a batch, the next one fills by itself.

The queue holds at most ``capacity`` events: when the agent falls behind, the reader stops taking from the
stream, and the consumer's own buffers then pause fetching (backpressure). Nothing is acknowledged here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class ReadyBatches(Generic[T]):
    """Async iterator of batches (lists) of the items of ``source``."""

    def __init__(
        self,
        source: AsyncIterable[T],
        *,
        max_batch: int,
        linger_s: float = 0.0,
        capacity: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.source = source
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._queue: asyncio.Queue[object] = asyncio.Queue(capacity or 2 * max_batch)
        self._reader: asyncio.Task[None] | None = None
        self._ended = False
        self._full = asyncio.Event()

    async def wait_full(self) -> None:
        """Return once a full batch (or the end of the source) is queued."""
        await self._full.wait()

    async def _read(self) -> None:
        # The end marker may wait for room: the agent keeps taking until it sees it. A cancelled reader (the
        # agent is gone) puts nothing.
        try:
            async for item in self.source:
                await self._queue.put(item)
                if self._queue.qsize() >= self.max_batch:
                    self._full.set()
        except asyncio.CancelledError:
            raise
        except BaseException:
            self._full.set()
            await self._queue.put(_END)
            raise
        self._full.set()
        await self._queue.put(_END)

    def __aiter__(self) -> AsyncIterator[list[T]]:
        return self._batches()

    async def _batches(self) -> AsyncIterator[list[T]]:
        self._reader = asyncio.create_task(self._read())
        try:
            while not self._ended:
                batch = await self._take()
                if self._queue.qsize() < self.max_batch and not self._reader.done():
                    self._full.clear()
                if batch:
                    yield batch
            await self._reader  # re-raises what ended the source, if it failed
        finally:
            if not self._reader.done():
                self._reader.cancel()
                await asyncio.gather(self._reader, return_exceptions=True)

    async def _take(self) -> list[T]:
        batch: list[T] = []
        first = await self._queue.get()
        if not self._add(batch, first):
            return batch
        self._drain(batch)
        if self.linger_s > 0 and len(batch) < self.max_batch and not self._ended:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.linger_s
            while len(batch) < self.max_batch and not self._ended:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), left)
                except TimeoutError:
                    break
                if self._add(batch, item):
                    self._drain(batch)
        return batch

    def _drain(self, batch: list[T]) -> None:
        while len(batch) < self.max_batch and not self._ended:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            self._add(batch, item)

    def _add(self, batch: list[T], item: object) -> bool:
        if item is _END:
            self._ended = True
            return False
        batch.append(item)  # type: ignore[arg-type]
        return True
