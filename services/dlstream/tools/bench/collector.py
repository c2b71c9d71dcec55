"""The predictions a benchmark run waits for, read from the prediction topics on a thread of its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from dlstream.client.reader import read_records
from dlstream.config.settings import Settings
from dlstream.domain.contract import PredictionEvent, RequestEvent
from dlstream.tools.bench.latency import (
    Arrival,
)

ARRIVAL_TIMEOUT_S = 120.0


class Collector(threading.Thread):
    """Reads topics from their beginning in the background, stamping when each record's key (the request
    id, for requests and predictions alike) first arrived: what a user's subscriber sees."""

    def __init__(self, settings: Settings, topics: Sequence[str]) -> None:
        super().__init__(name="bench-collector", daemon=True)
        self.settings = settings
        self.topics = list(topics)
        self.arrived: dict[str, tuple[bytes, float]] = {}
        self.error: BaseException | None = None
        self._stop_reading = threading.Event()
        self._changed = threading.Condition()

    def run(self) -> None:
        try:
            for record in read_records(
                self.settings.kafka, self.topics, follow=True, until=self._stop_reading.is_set
            ):
                received = time.time()
                key = record.key.decode() if record.key else ""
                with self._changed:
                    self.arrived.setdefault(key, (record.value, received))
                    self._changed.notify_all()
        except Exception as exc:  # noqa: BLE001 - reported to the waiting bench instead of dying silently
            self.error = exc
            with self._changed:
                self._changed.notify_all()

    def count(self, ids: set[str]) -> int:
        """How many of ``ids`` arrived."""
        with self._changed:
            return sum(1 for i in ids if i in self.arrived)

    def wait_for(self, ids: set[str], timeout_s: float = ARRIVAL_TIMEOUT_S) -> None:
        """Block until every one of ``ids`` arrived."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not all(i in self.arrived for i in ids):
                if self.error is not None:
                    raise RuntimeError(f"reading {self.topics} failed: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = sum(1 for i in ids if i not in self.arrived)
                    raise RuntimeError(f"{missing} of {len(ids)} records did not arrive in {timeout_s}s")
                self._changed.wait(min(left, 0.5))

    def arrivals(self, sent: Sequence[RequestEvent]) -> list[Arrival]:
        """The predictions of ``sent`` with their request and arrival times."""
        with self._changed:
            got = [(e, self.arrived[e.id]) for e in sent]
        return [
            Arrival(PredictionEvent.from_kafka(value), e.time.timestamp(), received)
            for e, (value, received) in got
        ]

    def stop(self) -> None:
        """Stop reading and wait for the thread."""
        self._stop_reading.set()
        self.join(timeout=30)
