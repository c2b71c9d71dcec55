"""Keeping a publisher at a steady rate of events per second (clock and sleep are injectable)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Pacer:
    """Spaces calls ``1/rate`` seconds apart on average; no rate means no waiting.

    The schedule is absolute (event ``n`` is due at ``start + n/rate``), so a slow send is caught up instead
    of lowering the rate, and a burst never exceeds what the schedule allows.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self._start: float | None = None
        self._sent = 0

    def wait(self) -> None:
        """Block until the next event is due."""
        if self.rate is None:
            return
        now = self.clock()
        if self._start is None:
            self._start = now
        due = self._start + self._sent / self.rate
        if due > now:
            self.sleep(due - now)
        self._sent += 1
