"""Reading topics without joining a consumer group: the SDK's subscribe and DLQ tools only look."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from dlstream.adapters.kafka.bootstrap import BOOTSTRAP_TIMEOUT_S, bootstrapped
from dlstream.adapters.kafka.connection import client_options
from dlstream.adapters.kafka.refusals import KafkaRefusals
from dlstream.config.settings import KafkaSettings
from dlstream.domain.errors import TransientError

Start = Literal["beginning", "latest"]
POLL_MS = 500


def read_records(
    settings: KafkaSettings,
    topics: Sequence[str],
    *,
    start: Start = "beginning",
    follow: bool = False,
    idle_timeout_s: float | None = None,
    max_record_bytes: int = 16 * 1024 * 1024,
    until: Callable[[], bool] | None = None,
) -> Iterator[Any]:
    """Yield the records of every partition of ``topics`` (kafka-python ``ConsumerRecord``).

    Without ``follow`` it stops at the end offsets seen when it started. With ``follow`` it runs until
    ``idle_timeout_s`` passes without a record (forever when None), or until ``until()`` is true (asked
    at least every ``POLL_MS``). Nothing is committed.

    Raises:
        TransientError: Kafka is unreachable or a topic does not exist.
    """
    refusals = KafkaRefusals(settings).attach()
    try:
        consumer = bootstrapped(
            lambda bootstrap: KafkaConsumer(
                **client_options(settings),
                **bootstrap,
                enable_auto_commit=False,
                group_id=None,
                fetch_max_bytes=max(52428800, max_record_bytes),
                max_partition_fetch_bytes=max_record_bytes,
                client_id="dlstream-reader",
            ),
            refusals,
            BOOTSTRAP_TIMEOUT_S,
        )
    except KafkaError as exc:
        refusals.detach()
        raise refusals.explain(exc, f"cannot reach Kafka at {settings.bootstrap_servers}") from exc
    try:
        partitions = []
        for topic in topics:
            ids = consumer.partitions_for_topic(topic)
            if not ids:
                raise TransientError(f"topic {topic} does not exist (yet)")
            partitions += [TopicPartition(topic, p) for p in sorted(ids)]
        consumer.assign(partitions)
        if start == "beginning":
            consumer.seek_to_beginning(*partitions)
        else:
            consumer.seek_to_end(*partitions)
        ends: dict[TopicPartition, int] = consumer.end_offsets(partitions)
        last_record = time.monotonic()
        while True:
            if not follow and all(consumer.position(tp) >= ends[tp] for tp in partitions):
                return
            if until is not None and until():
                return
            batch = consumer.poll(timeout_ms=POLL_MS)
            for tp_records in batch.values():
                for record in tp_records:
                    if not follow and record.offset >= ends[TopicPartition(record.topic, record.partition)]:
                        continue
                    yield record
            if batch:
                last_record = time.monotonic()
            elif follow and idle_timeout_s is not None and time.monotonic() - last_record > idle_timeout_s:
                return
    except KafkaError as exc:
        raise refusals.explain(exc, f"reading {', '.join(topics)} failed") from exc
    finally:
        refusals.detach()
        consumer.close()
