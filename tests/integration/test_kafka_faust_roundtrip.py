"""10,000 CloudEvents through a real 6-partition topic, read back by a real Faust worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaProducer

from dlstream.adapters.kafka.connection import client_options
from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality, new_request
from tests.integration.conftest import PROJECT_ROOT, TopicFactory

pytestmark = pytest.mark.integration

EVENTS = 10_000


def produce_events(settings: Settings, topic: str, count: int) -> list[str]:
    """Produce ``count`` text request events with acks=all and idempotence; return their ids."""
    producer = KafkaProducer(
        **client_options(settings.kafka),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        batch_size=64 * 1024,
    )
    ids = []
    futures = []
    try:
        for i in range(count):
            event = new_request(
                Modality.TEXT,
                f"event number {i}".encode(),
                content_type="text/plain",
                source="tests/roundtrip",
            )
            record = event.to_kafka()
            futures.append(producer.send(topic, key=record.key, value=record.value, headers=record.headers))
            ids.append(event.id)
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=30)  # raises if any send failed
    finally:
        producer.close(timeout=10)
    return ids


def read_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_10k_events_read_back_by_faust_agent_none_lost_none_duplicated(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    topic = topics.create("events", partitions=6)
    produced = produce_events(settings, topic, EVENTS)
    assert len(set(produced)) == EVENTS

    out = tmp_path / "seen.txt"
    env = {
        **os.environ,
        "COLLECT_BROKER": settings.kafka.bootstrap_servers,
        "COLLECT_TOPIC": topic,
        "COLLECT_GROUP": group_id,
        "COLLECT_OUT": str(out),
        "COLLECT_PARTITIONS": "6",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.faust_collector", "worker"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while len(read_lines(out)) < EVENTS and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.5)
        # A little longer, so that a duplicate delivered after the last new event would be seen.
        time.sleep(2)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            output, _ = worker.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            output, _ = worker.communicate()

    lines = read_lines(out)
    seen = Counter(line.split()[0] for line in lines)
    partitions = {int(line.split()[1]) for line in lines}
    duplicates = {k: v for k, v in seen.items() if v > 1}
    lost = set(produced) - set(seen)
    assert not lost, f"{len(lost)} events lost; worker output:\n{output.decode(errors='replace')[-3000:]}"
    assert not duplicates, f"{len(duplicates)} events duplicated"
    assert set(seen) == set(produced)
    assert partitions == set(range(6)), "events should spread over all six partitions"
