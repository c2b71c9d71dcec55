"""When a worker sends its next batch to Triton while Triton still works on earlier ones.

Sent at once, the next batch waits in Triton's queue for the batches ahead of it: under moderate load
Triton is never idle, but every event waits a whole batch longer than it must. Sent just before Triton
frees up, it is taken at once, and the events that arrived meanwhile are in it. :class:`BatchTimes` learns
how long Triton takes for a batch of ``n`` events from the batches it answered; :func:`hold_until` says how
long the next batch may keep filling. A batch is never held once a full batch is waiting, nor once Triton
has nothing left (the place it waits for came free).

Pure logic: the caller measures and waits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class InFlight:
    """A batch sent to Triton and not answered yet: when it was sent and its size."""

    sent_at: float
    size: int


class BatchTimes:
    """Triton's time for a batch as ``fixed + per_event * size``, fitted by least squares over recent
    batches (older ones weigh exponentially less, so the fit follows a machine whose speed moves).

    A batch's time is counted from when Triton could start it: its sending, or the answer to the batch
    before it, whichever came later; so time queued behind another batch is not taken for the model's.
    """

    def __init__(self, *, weight: float = 0.05) -> None:
        if not 0 < weight <= 1:
            raise ValueError("weight must be in (0, 1]")
        self.weight = weight
        self._sums = [0.0] * 5  # weights, size, time, size², size * time
        self._last_answer = float("-inf")

    @property
    def last_answer(self) -> float:
        """When the latest batch was answered (-inf before any)."""
        return self._last_answer

    @property
    def known(self) -> bool:
        """Whether a batch was answered yet."""
        return self._sums[0] > 0

    def answered(self, sent_at: float, size: int, at: float) -> None:
        """A batch of ``size`` events sent at ``sent_at`` was answered at ``at``."""
        started = max(sent_at, self._last_answer)
        self._last_answer = max(self._last_answer, at)
        took = max(0.0, at - started)
        keep = 1 - self.weight
        for i, value in enumerate((1.0, size, took, size * size, size * took)):
            self._sums[i] = keep * self._sums[i] + value

    def expected(self, size: int) -> float:
        """Seconds Triton is expected to take for a batch of ``size`` (0 before any batch was answered)."""
        w, n, t, nn, nt = self._sums
        if w <= 0:
            return 0.0
        spread = w * nn - n * n
        if spread <= 1e-9 * max(1.0, w * nn):  # every batch the same size: the mean time per event
            return max(0.0, t / n * size) if n > 0 else 0.0
        per_event = max(0.0, (w * nt - n * t) / spread)
        fixed = max(0.0, (t - per_event * n) / w)
        return fixed + per_event * size


def hold_until(in_flight: Iterable[InFlight], times: BatchTimes, *, now: float, lead_s: float) -> float:
    """The time until which the next batch may keep filling: ``lead_s`` before Triton is expected to have
    answered every batch in ``in_flight`` (in the order sent, each started once the one before it was
    answered), or ``now`` (send at once) when nothing is in flight or no batch was answered yet."""
    batches = sorted(in_flight, key=lambda b: b.sent_at)
    if not batches or not times.known:
        return now
    free_at = times.last_answer
    for batch in batches:
        free_at = max(free_at, batch.sent_at) + times.expected(batch.size)
    return max(now, free_at - lead_s)
