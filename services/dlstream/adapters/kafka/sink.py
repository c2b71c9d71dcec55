"""The workers' producer: acks=all and idempotent, so an outcome is durable before its offset is committed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from dlstream.adapters.kafka.connection import aiokafka_options
from dlstream.config.settings import KafkaSettings
from dlstream.domain.contract import KafkaRecord
from dlstream.domain.errors import TransientError

MAX_RECORD_BYTES = 16 * 1024 * 1024


class KafkaSink:
    """Sends outcomes and waits for every acknowledgement."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = AIOKafkaProducer(
            **aiokafka_options(settings),
            acks="all",
            enable_idempotence=True,
            # No linger: the records of a batch are sent together anyway, and a lone one should not wait.
            linger_ms=0,
            # A dead letter keeps the original payload, which may be over the contract's limit.
            max_request_size=MAX_RECORD_BYTES,
        )

    async def start(self) -> None:
        """Connect."""
        await self._producer.start()

    async def stop(self, flush_timeout_s: float = 2.0) -> None:
        """Flush for at most ``flush_timeout_s``, then disconnect.

        aiokafka's own stop waits until every pending record is delivered or expires
        (``request_timeout_ms``, 40 s), which with the broker away outlasts a stop timeout. At the deadline
        its sender is stopped first (it ends within a retry backoff), so the stop only closes connections.
        Records still pending then are dropped: their events were not acknowledged, so their offsets stay
        uncommitted and they are redelivered.
        """
        try:
            await asyncio.wait_for(self._producer.flush(), flush_timeout_s)
        except TimeoutError:
            await self._producer._sender.close()
        await self._producer.stop()

    async def send_all(self, records: Sequence[tuple[str, KafkaRecord]]) -> None:
        """Produce every record; returns when all are acknowledged.

        Raises:
            TransientError: Kafka refused or timed out; the batch is not done.
        """
        try:
            futures = [
                await self._producer.send(topic, value=r.value, key=r.key, headers=r.headers)
                for topic, r in records
            ]
            await asyncio.gather(*futures)
        except KafkaError as exc:
            raise TransientError(f"producing outcomes failed: {exc}") from exc
