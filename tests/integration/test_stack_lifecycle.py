"""The stack's own promises: a SIGKILLed broker restarted by `up` keeps every acknowledged record."""

from __future__ import annotations

import os
import signal

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from dlstream.adapters.kafka.connection import client_options
from dlstream.tools.stack.local_stack import LocalStack
from dlstream.tools.stack.process import is_running
from tests.integration.conftest import TopicFactory

pytestmark = pytest.mark.integration

RECORDS = 2_000


def test_broker_sigkilled_and_restarted_keeps_every_acknowledged_record(
    local_stack: LocalStack, topics: TopicFactory, group_id: str
) -> None:
    if os.environ.get("DLSTREAM_TEST_ATTACH") == "1":
        pytest.skip("does not kill a stack it did not start")
    settings = local_stack.settings
    topic = topics.create("durable", partitions=6)
    producer = KafkaProducer(**client_options(settings.kafka), acks="all", enable_idempotence=True)
    try:
        futures = [
            producer.send(topic, key=str(i).encode(), value=f"record {i}".encode()) for i in range(RECORDS)
        ]
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)

    record = local_stack.record("kafka")
    assert record is not None
    local_stack.kill("kafka", signal.SIGKILL)
    assert not is_running(record)
    states = {s.name: s.state for s in local_stack.status()}
    assert states["kafka"] == "dead"

    local_stack.up()
    assert {s.name: s.state for s in local_stack.status()}["kafka"] == "running"
    restarted = local_stack.record("kafka")
    assert restarted is not None
    assert restarted.pid != record.pid

    consumer = KafkaConsumer(
        **client_options(settings.kafka),
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=60_000,  # a bound on a silence, not a wait: reading ends at the last record
    )
    values: list[str] = []
    try:
        partitions = [TopicPartition(topic, p) for p in range(6)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        for message in consumer:
            values.append(message.value.decode())
            if len(values) == RECORDS:
                break
    finally:
        consumer.close()
    assert sorted(values) == sorted(f"record {i}" for i in range(RECORDS))
