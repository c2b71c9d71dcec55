"""The stack's own promises: crash recovery of the broker, dead children reported, nothing left behind."""

from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from dlstream.adapters.kafka.connection import client_options
from dlstream.config.settings import load_settings
from dlstream.runtime.net import free_ports
from dlstream.tools.stack.local_stack import LocalStack
from dlstream.tools.stack.process import group_members, is_running
from tests.integration.conftest import PROJECT_ROOT, TopicFactory, copy_models

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
        consumer_timeout_ms=10_000,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in range(6)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        values = [message.value.decode() for message in consumer]
    finally:
        consumer.close()
    assert sorted(values) == sorted(f"record {i}" for i in range(RECORDS))


def test_a_second_stack_with_a_worker_starts_healthy_and_down_leaves_no_process(tmp_path: Path) -> None:
    kafka, controller, redis_port, http, grpc, metrics, web, worker_metrics = free_ports(8)
    # One model is enough for a Triton whose backend stub runs in its process group.
    repository = copy_models(
        PROJECT_ROOT / load_settings().triton.model_repository, ("digits",), tmp_path / "repo"
    )
    settings = load_settings(
        environment="test",
        kafka={"bootstrap_servers": f"127.0.0.1:{kafka}", "partitions": 2},
        redis={"port": redis_port},
        triton={
            "http_port": http,
            "grpc_port": grpc,
            "metrics_port": metrics,
            "model_repository": repository,
        },
        inference={"web_port": web, "metrics_port": worker_metrics, "group_id": f"second-{web}"},
        stack={
            "services": ("kafka", "redis", "triton", "inference"),
            "run_dir": tmp_path / "second",
            "kafka_controller_port": controller,
            "kafka_heap": "256m",
            "service_user": "",  # pytest's temporary folders are closed to other users
        },
    )
    stack = LocalStack(settings, project_root=PROJECT_ROOT)
    try:
        statuses = stack.up()
        assert all(s.ok for s in statuses), statuses
        pids = [s.pid for s in statuses if s.pid is not None]
        assert len(pids) == 4
        assert any(len(group_members(pid)) > 1 for pid in pids), "Triton's backend stub runs in its group"
        with urllib.request.urlopen(f"http://127.0.0.1:{worker_metrics}/metrics", timeout=5) as response:
            assert b"dlstream_events_in" in response.read()
    finally:
        stack.down()
    assert all(group_members(pid) == [] for pid in pids)
    assert [s.state for s in stack.status()] == ["stopped"] * 4
