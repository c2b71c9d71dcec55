"""The sliced bootstrap: a refusal ends the wait with its slice, a silent broker gets the whole timeout."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError

from dlstream.adapters.kafka import bootstrap
from dlstream.adapters.kafka.bootstrap import bootstrapped

pytestmark = pytest.mark.unit


class Clock:
    """time.monotonic for the module under test, moved by the fake clients' bootstrap attempts."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class Refusals:
    """Stands for the client's refusals: whether the broker refused it, and how often that was asked."""

    def __init__(self) -> None:
        self.refusal = False
        self.asked = 0

    def refused(self) -> bool:
        self.asked += 1
        return self.refusal


class Network:
    """Stands for kafka-python's network client: only whether it was closed."""

    def __init__(self, **config: Any) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(bootstrap, "time", fake)
    monkeypatch.setattr("kafka.net.compat.KafkaNetClient", Network)
    return fake


def attempts(clock: Clock, refusals: Refusals, *, refuse_at: int | None, succeed_at: int | None) -> Any:
    """A client factory whose bootstrap times out after its whole slice, logs a refusal in attempt
    ``refuse_at`` and succeeds in attempt ``succeed_at``; it records each attempt's slice and network."""
    seen: list[tuple[float, Network]] = []

    def make(options: dict[str, Any]) -> str:
        network = options["kafka_client"]()
        seen.append((options["bootstrap_timeout_ms"] / 1000, network))
        if len(seen) == succeed_at:
            return "client"
        if len(seen) == refuse_at:
            refusals.refusal = True
        clock.now += options["bootstrap_timeout_ms"] / 1000
        raise KafkaTimeoutError("Unable to bootstrap")

    make.seen = seen  # type: ignore[attr-defined]
    return make


def test_a_refusal_ends_the_wait_with_its_slice(clock: Clock) -> None:
    refusals = Refusals()
    make = attempts(clock, refusals, refuse_at=1, succeed_at=None)
    with pytest.raises(KafkaTimeoutError):
        bootstrapped(make, refusals, timeout_s=30.0)
    assert [s for s, _ in make.seen] == [2.0]
    assert clock.now == 2.0
    assert all(n.closed for _, n in make.seen)


def test_a_silent_broker_gets_the_whole_timeout_in_growing_slices(clock: Clock) -> None:
    refusals = Refusals()
    make = attempts(clock, refusals, refuse_at=None, succeed_at=None)
    with pytest.raises(KafkaTimeoutError):
        bootstrapped(make, refusals, timeout_s=30.0)
    assert [s for s, _ in make.seen] == [2.0, 4.0, 8.0, 16.0]
    assert clock.now == 30.0
    assert all(n.closed for _, n in make.seen)
    assert refusals.asked == 3  # not after the last slice: the timeout is the answer


def test_a_slow_broker_is_reached_in_a_later_slice_and_its_client_kept(clock: Clock) -> None:
    refusals = Refusals()
    make = attempts(clock, refusals, refuse_at=None, succeed_at=3)
    assert bootstrapped(make, refusals, timeout_s=30.0) == "client"
    assert [n.closed for _, n in make.seen] == [True, True, False]
