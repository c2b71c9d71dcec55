"""Faust's aiokafka transport with the consumer's fetch wait as a setting.

Faust builds its worker consumer with ``fetch_max_wait_ms=1500`` fixed in its code. aiokafka sends one
fetch per broker at a time and leaves out the partitions whose records are still buffered; a record that
lands on such a partition waits until the fetch in flight returns, which with nothing else arriving is the
full fetch wait. This transport sets the wait from ``kafka.fetch_max_wait_ms``.
"""

from __future__ import annotations

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


def transport_class(fetch_max_wait_ms: int) -> type[faust_aiokafka.Transport]:
    """A Faust transport class whose worker consumers long-poll at most ``fetch_max_wait_ms``."""

    class ConsumerThread(_ConsumerThread):
        pass

    ConsumerThread.fetch_max_wait_ms = fetch_max_wait_ms

    class WaitingConsumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(faust_aiokafka.Transport):
        Consumer = WaitingConsumer

    return Transport
