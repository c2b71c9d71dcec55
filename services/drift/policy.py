"""The monitor's decisions as pure functions: a version's detector state, alerts, retraining, promotion.

The state of each model version is a small JSON document kept in Redis, so a restarted monitor resumes with
the same streaks; nothing here talks to Redis, Kafka or Kubernetes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from services.drift.windows import WindowResult


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


@dataclass(frozen=True)
class RetrainCheck:
    """Whether an open alert may start a retraining job now, and why not when it may not."""

    start: bool
    reason: str


def retrain_check(
    *,
    alert_id: str,
    last_run_alert_id: str | None,
    last_run_age_s: float | None,
    feedback: int,
    min_feedback: int,
    cooldown_s: float,
) -> RetrainCheck:
    """The retraining policy: one job per alert, enough labelled feedback, and a cooldown between jobs.

    The lock that keeps two jobs of one model apart is taken by the caller after this says yes.
    """
    if last_run_alert_id == alert_id:
        return RetrainCheck(False, "this alert already started a job")
    if last_run_age_s is not None and last_run_age_s < cooldown_s:
        return RetrainCheck(
            False, f"the last job started {last_run_age_s:.0f} s ago (cooldown {cooldown_s:.0f} s)"
        )
    if feedback < min_feedback:
        return RetrainCheck(False, f"{feedback} labelled predictions, {min_feedback} needed")
    return RetrainCheck(True, "ready")


@dataclass(frozen=True)
class Promotion:
    """The retraining job's verdict on a candidate version."""

    promote: bool
    reason: str


def promotion(
    *,
    serving_feedback_accuracy: float,
    candidate_feedback_accuracy: float,
    serving_base_accuracy: float,
    candidate_base_accuracy: float,
    min_gain: float,
    max_base_drop: float,
) -> Promotion:
    """Promote only a candidate that is better on held-out feedback (the drifted traffic) by ``min_gain``
    and loses at most ``max_base_drop`` on the original held-out data."""
    gain = candidate_feedback_accuracy - serving_feedback_accuracy
    drop = serving_base_accuracy - candidate_base_accuracy
    if gain < min_gain:
        return Promotion(False, f"gains {gain:+.3f} on held-out feedback; {min_gain:.3f} needed")
    if drop > max_base_drop:
        return Promotion(False, f"loses {drop:.3f} on the base held-out data; at most {max_base_drop:.3f}")
    return Promotion(True, f"gains {gain:+.3f} on held-out feedback, base accuracy {-drop:+.3f}")
