"""Faust's aiokafka transport with the consumer's fetch wait as a setting, and commits that never pass an
event still in work.

Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` fixed in its code. aiokafka sends one
fetch per broker at a time and leaves out the partitions whose records are still buffered; a record that
lands on such a partition waits until the fetch in flight returns, which with nothing else arriving is the
full fetch wait. This transport sets the wait from ``kafka.fetch_max_wait_ms``.

Faust commits the first run of consecutive acknowledged offsets of a partition. Before the partition's first
commit it does not check that the run starts where the partition's events start, and after one it lets a
single missing offset pass; so when events are acknowledged out of order (a worker's batches finish in the
order Triton answers them, an event waiting for its model is acknowledged after its batch), a commit could
pass an event still in work, and a crash or a stop then lost it. Here a partition's commit stops at the first
event handed to the stream and not yet acknowledged (:func:`committable_offset`), including the events a drain
stopped waiting for at its deadline (they are still in work: a stop or a rebalance must not commit past them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    fetch_max_wait_ms: int = 1500

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts and builds its fetcher; set before that.
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError("this aiokafka version keeps the fetch wait elsewhere; update dlstream")
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


def committable_offset(acked: Sequence[int], pending: Iterable[int]) -> int | None:
    """The offset a partition may commit: the first offset handed to the stream and not yet acknowledged
    (``pending``), or one past the last acknowledged when none is pending; None when nothing acknowledged lies
    before the first pending one. A partition hands its events to the stream in offset order, so every
    offset below the first pending one is done."""
    if not acked:
        return None
    first_pending = min(pending, default=None)
    if first_pending is None:
        return max(acked) + 1
    return first_pending if min(acked) < first_pending else None


def transport_class(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """A Faust transport class whose worker consumers long-poll at most ``fetch_max_wait_ms``."""

    class ConsumerThread(_ConsumerThread):
        pass

    ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms

    class WaitingConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

        # Events in work that a drain stopped waiting for (see abandon_unacked).
        abandoned: set[Any]

        def abandon_unacked(self) -> int:
            """Stop waiting for the events in work (a drain's deadline passed): Faust's wait for an empty
            set then ends. Commits still stop at them until each is acknowledged or its partition leaves
            this member, so another member or a restart redelivers what was not finished. How many."""
            unacked = self._unacked_messages
            self.abandoned = getattr(self, "abandoned", set()) | set(unacked)
            count = len(unacked)
            unacked.clear()
            return count

        def ack(self, message: Any) -> bool:
            getattr(self, "abandoned", set()).discard(message)
            return bool(super().ack(message))

        async def on_partitions_assigned(self, assigned: set[Any], generation_id: int = 0) -> None:
            # Events of a partition that moved to another member are that member's to redeliver.
            self.abandoned = {m for m in getattr(self, "abandoned", set()) if m.tp in assigned}
            await super().on_partitions_assigned(assigned, generation_id)

        def _new_offset(self, tp: Any) -> int | None:
            acked = self._acked[tp]
            in_work = list(self._unacked_messages) + list(getattr(self, "abandoned", ()))
            pending = (m.offset for m in in_work if m.tp == tp)
            offset = committable_offset(acked, pending)
            if offset is None:
                return None
            done = [a for a in acked if a < offset]
            acked[:] = sorted(a for a in acked if a >= offset)
            self._acked_index[tp].difference_update(done)
            gap = self._gap.get(tp)
            if gap:
                gap.chop(0, offset)
            return offset

    class Transport(faust_aiokafka.Transport):
        Consumer = WaitingConsumer

    return Transport
