"""When the monitor starts a retraining job, and whether a candidate version is promoted. Pure logic."""

from __future__ import annotations

from dataclasses import dataclass


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
