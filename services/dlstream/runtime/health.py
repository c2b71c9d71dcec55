"""What a worker reports on ``/health`` and how its consumer lag is counted: pure logic, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class WorkerState:
    """Progress of one worker, updated by its agent and read by the health page."""

    started: bool = False
    stopping: bool = False
    retrying_since: float | None = None
    last_batch_at: float | None = None
    batches: int = 0
    lag: dict[str, int] = field(default_factory=dict)
    waiting_stages: int = 0

    def begin_wait(self, now: float) -> None:
        """A stage (Triton calls, or producing outcomes) starts waiting out a transient failure."""
        if self.waiting_stages == 0:
            self.retrying_since = now
        self.waiting_stages += 1

    def back_off(self, delay: float | None, *, initial_s: float, max_s: float, now: float) -> float:
        """The next wait of a stage retrying a transient failure: ``initial_s`` at its first failure (the
        stage starts waiting), then double the last ``delay`` up to ``max_s``."""
        if delay is None:
            self.begin_wait(now)
            return initial_s
        return min(delay * 2, max_s)

    def end_wait(self) -> None:
        """That stage got through; the worker is ``retrying`` while any stage still waits."""
        self.waiting_stages -= 1
        if self.waiting_stages == 0:
            self.retrying_since = None

    def health(self, now: float) -> tuple[int, dict[str, Any]]:
        """HTTP status and body of ``/health``.

        A worker waiting out a Triton or Kafka outage is alive (200, status ``retrying``): restarting it would
        not help, and its consumption is paused on purpose. It is unhealthy (503) before its agent has started
        and once it is shutting down.
        """
        if not self.started or self.stopping:
            status, code = ("stopping" if self.stopping else "starting"), 503
        elif self.retrying_since is not None:
            status, code = "retrying", 200
        else:
            status, code = "ok", 200
        body: dict[str, Any] = {
            "status": status,
            "batches": self.batches,
            "seconds_since_last_batch": None
            if self.last_batch_at is None
            else round(now - self.last_batch_at, 3),
            "retrying_for_s": None if self.retrying_since is None else round(now - self.retrying_since, 3),
            "consumer_lag": sum(self.lag.values()),
        }
        return code, body


def partition_lag(end_offset: int | None, committed: int | None, position: int | None) -> int | None:
    """Records of a partition not yet committed by the group: end offset minus committed offset.

    Both are "next offset" positions (Kafka's convention). Before this worker's first commit on a partition
    the fetch position stands in for the committed offset; with neither, or no end offset, it is unknown.
    """
    if end_offset is None or end_offset < 0:
        return None
    start = committed if committed is not None else position
    if start is None:
        return None
    return max(0, end_offset - start)
