"""The limiter of repeated Kafka client log lines."""

from __future__ import annotations

import logging

import pytest

from dlstream.runtime.logs import RepeatLimiter

pytestmark = pytest.mark.unit


def record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_one_line_per_kind_and_interval_then_the_count_held_back() -> None:
    now = [0.0]
    limiter = RepeatLimiter(10.0, clock=lambda: now[0])
    retry = "Unable connect to node with id %s: %s"
    first = record("aiokafka.conn", retry, 1, "refused")
    assert limiter.filter(first)
    assert first.getMessage() == "Unable connect to node with id 1: refused"
    for step in range(1, 40):
        now[0] = step * 0.2
        assert not limiter.filter(record("aiokafka.conn", retry, 1, "refused"))
    # Another kind, level or logger is let through meanwhile.
    assert limiter.filter(record("aiokafka.conn", "Metadata refresh failed"))
    assert limiter.filter(record("aiokafka.conn", retry, 1, "refused", level=logging.WARNING))
    now[0] = 10.5
    later = record("aiokafka.conn", retry, 1, "refused")
    assert limiter.filter(later)
    assert (
        later.getMessage()
        == "Unable connect to node with id 1: refused (39 more like it held back over 10 s)"
    )


def test_other_loggers_are_never_held_back() -> None:
    limiter = RepeatLimiter(10.0, clock=lambda: 0.0)
    assert all(limiter.filter(record("dlstream.inference", "batch")) for _ in range(5))
    assert all(limiter.filter(record("kafkaesque", "not a Kafka client")) for _ in range(5))
