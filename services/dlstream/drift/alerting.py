"""The monitor's decisions as pure functions: a version's detector state and its alerts (when to retrain and
what to promote: :mod:`dlstream.retrain.decisions`).

The state of each model version is a small JSON document kept in Redis, so a restarted monitor resumes with
the same streaks; nothing here talks to Redis, Kafka or Kubernetes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from dlstream.drift.windows import WindowResult


@dataclass
class VersionState:
    """What the monitor remembers about one model version between windows."""

    windows: int = 0
    flagged_windows: int = 0
    flagged_streak: int = 0
    clean_streak: int = 0
    last_p_value: float | None = None
    last_tests: dict[str, list[float]] = field(default_factory=dict)
    class_counts: list[int] = field(default_factory=list)
    confidence_histogram: list[int] = field(default_factory=list)

    def update(self, result: WindowResult) -> None:
        """Count one evaluated window: streaks, the last tests, and the version's predicted-class counts and
        top-1 confidence histogram over all its windows."""
        self.windows += 1
        self.class_counts = _add(self.class_counts, result.counts)
        self.confidence_histogram = _add(self.confidence_histogram, result.confidence_histogram)
        if result.flagged:
            self.flagged_windows += 1
            self.flagged_streak += 1
            self.clean_streak = 0
        else:
            self.clean_streak += 1
            self.flagged_streak = 0
        self.last_p_value = result.p_value
        self.last_tests = {t.test: [round(t.statistic, 6), t.p_value] for t in result.tests}

    def to_json(self) -> str:
        """Serialise for Redis."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes | None) -> VersionState:
        """Restore from Redis (a fresh state when there is none)."""
        return cls(**json.loads(text)) if text else cls()


def _add(total: list[int], more: list[int]) -> list[int]:
    return [a + b for a, b in zip(total or [0] * len(more), more, strict=True)]


class AlertAction(StrEnum):
    """What a window does to the alert of its model."""

    NONE = "none"
    RAISE = "raise"
    RESOLVE = "resolve"


def alert_action(
    state: VersionState,
    version: str,
    *,
    open_alert_version: str | None,
    cooling_down: bool,
    alert_after: int,
    resolve_after: int,
) -> AlertAction:
    """Raise after ``alert_after`` flagged windows in a row (one open alert per model, none while cooling
    down); resolve an open alert after ``resolve_after`` clean windows of its version, or at the first clean
    window of another version (a retrained model took over)."""
    if open_alert_version is None:
        if state.flagged_streak >= alert_after and not cooling_down:
            return AlertAction.RAISE
        return AlertAction.NONE
    if open_alert_version == version:
        return AlertAction.RESOLVE if state.clean_streak >= resolve_after else AlertAction.NONE
    return AlertAction.RESOLVE if state.clean_streak >= 1 else AlertAction.NONE
