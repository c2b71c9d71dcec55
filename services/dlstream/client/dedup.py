"""Dropping redelivered predictions: at-least-once delivery means an id may arrive twice."""

from __future__ import annotations

from collections import OrderedDict


class Deduplicator:
    """Remembers the last ``capacity`` ids seen (bounded memory) and says whether an id is new."""

    def __init__(self, capacity: int = 200_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def first_time(self, key: str) -> bool:
        """True the first time ``key`` is offered (within the window), False for a repeat."""
        if key in self._seen:
            self._seen.move_to_end(key)
            self.duplicates += 1
            return False
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True
