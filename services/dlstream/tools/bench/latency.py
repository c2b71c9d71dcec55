"""Latency figures of ``dlstream bench stream``: percentiles, the per-stage breakdown and backlog growth.

Pure functions over what the benchmark observed; nothing here talks to Kafka or Triton.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dlstream.domain.contract import PredictionEvent

STAGES = ("kafka_ms", "batch_ms", "inference_ms", "outcome_ms", "delivery_ms")


@dataclass(frozen=True, slots=True)
class Arrival:
    """A prediction as the benchmark's subscriber received it: ``requested_at`` is its request's ``ce_time``,
    ``received_at`` when the subscriber had it (both wall-clock seconds)."""

    prediction: PredictionEvent
    requested_at: float
    received_at: float

    @property
    def end_to_end_ms(self) -> float:
        """From the request's ``ce_time`` to the prediction in the subscriber's hands."""
        return max(0.0, (self.received_at - self.requested_at) * 1000)


def in_worker_ms(arrival: Arrival) -> float | None:
    """From the worker's fetch to its outcome going to the producer (batch wait, Triton, shaping)."""
    t = arrival.prediction.data.timing
    if t.batch_ms is None or t.outcome_ms is None:
        return None
    return t.batch_ms + t.inference_ms + t.outcome_ms


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and p99.9 of ``values`` (milliseconds), rounded to 0.1."""
    if not values:
        raise ValueError("no values")
    p50, p99, p999 = np.percentile(np.asarray(values, dtype=np.float64), [50, 99, 99.9])
    return {"p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1), "p99_9_ms": round(float(p999), 1)}


def breakdown(arrivals: Sequence[Arrival]) -> dict[str, float]:
    """Median milliseconds of each stage: in Kafka before the worker fetched the event, waiting for its
    batch to go to Triton, in Triton, shaping the outcome, and from the worker's producer to the subscriber.
    Predictions of workers that do not report the parts are left out."""
    rows: dict[str, list[float]] = {stage: [] for stage in STAGES}
    for arrival in arrivals:
        t = arrival.prediction.data.timing
        if t.kafka_ms is None or t.batch_ms is None or t.outcome_ms is None:
            continue
        rows["kafka_ms"].append(t.kafka_ms)
        rows["batch_ms"].append(t.batch_ms)
        rows["inference_ms"].append(t.inference_ms)
        rows["outcome_ms"].append(t.outcome_ms)
        rows["delivery_ms"].append(max(0.0, arrival.end_to_end_ms - t.total_ms))
    return {stage: round(float(np.median(v)), 1) for stage, v in rows.items() if v}


@dataclass(frozen=True, slots=True)
class BacklogSample:
    """Events published and predictions received so far, ``at`` seconds into a load level."""

    at: float
    sent: int
    received: int

    @property
    def backlog(self) -> int:
        """Events published whose prediction has not arrived yet."""
        return self.sent - self.received


def backlog_growth(samples: Sequence[BacklogSample], offered_eps: float, settle_s: float) -> dict[str, float]:
    """How the backlog moved over a load level, ignoring its first ``settle_s`` seconds.

    The slope of a least-squares line through the backlog samples, in events per second, and whether the
    backlog grew by more than one second of offered traffic over the level (``grows``): a pipeline that
    keeps up holds a backlog of a few batches that does not trend.
    """
    kept = [s for s in samples if s.at >= settle_s]
    if len(kept) < 3:
        raise ValueError("too few backlog samples after settling")
    at = np.array([s.at for s in kept])
    backlog = np.array([s.backlog for s in kept], dtype=np.float64)
    slope = float(np.polyfit(at, backlog, 1)[0])
    span = float(at[-1] - at[0])
    return {
        "backlog_start": int(backlog[0]),
        "backlog_end": int(backlog[-1]),
        "backlog_max": int(backlog.max()),
        "backlog_slope_eps": round(slope, 2),
        "grows": bool(slope * span > max(offered_eps, 1.0)),
    }


def p99_bound_ms(max_wait_ms: float, triton_ms_at_batch: float) -> float:
    """The p99 a load level below saturation should stay under: one batch fill wait plus three Triton
    round trips at the batch size the worker formed (the batch the event waited behind, its own, and one
    of slack)."""
    return round(max_wait_ms + 3 * triton_ms_at_batch, 1)


def parse_levels(text: str) -> tuple[float, ...]:
    """Load levels from a comma-separated list of fractions of the maximum, sorted and deduplicated;
    :class:`ValueError` unless each is in (0, 1] and there is at least one."""
    try:
        levels = tuple(sorted({float(part) for part in text.split(",") if part.strip()}))
    except ValueError as error:
        raise ValueError(f"not a comma-separated list of numbers: {text!r}") from error
    return check_levels(levels)


def check_levels(levels: Sequence[float]) -> tuple[float, ...]:
    """``levels`` as a tuple; :class:`ValueError` unless each is in (0, 1] and there is at least one."""
    if not levels or not all(0 < level <= 1 for level in levels):
        raise ValueError(f"each load level is a fraction in (0, 1]: {list(levels)}")
    return tuple(levels)
