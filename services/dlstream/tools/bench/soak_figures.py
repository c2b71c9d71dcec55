"""Figures of ``dlstream bench soak``: growth of memory and latency after warm-up.

Pure functions over what the soak observed; nothing here reads a process or talks to Kafka.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Period:
    """One sampling period of a soak: when it ended (seconds into the run), its events, their end-to-end
    latency percentiles, and the resident memory of each process then."""

    at: float
    events: int
    p50_ms: float
    p99_ms: float
    rss_mb: Mapping[str, float]


def slope_per_hour(at: Sequence[float], values: Sequence[float]) -> float:
    """The least-squares slope of ``values`` over ``at`` (seconds), per hour."""
    if len(at) < 2 or at[-1] <= at[0]:
        return 0.0
    return (
        float(np.polyfit(np.asarray(at, dtype=np.float64), np.asarray(values, dtype=np.float64), 1)[0]) * 3600
    )


def soak_growth(periods: Sequence[Period], warm_up_s: float) -> dict[str, object]:
    """Per process: resident memory at the first period after ``warm_up_s`` and at the last, their difference
    and the trend (MB per hour, least squares over every period after warm-up); the same for p50 and p99.

    Raises:
        ValueError: when fewer than two periods end after the warm-up.
    """
    kept = [p for p in periods if p.at > warm_up_s]
    if len(kept) < 2:
        raise ValueError(f"need at least two periods after the {warm_up_s:.0f} s warm-up, got {len(kept)}")
    at = [p.at for p in kept]
    names = sorted(set().union(*(p.rss_mb for p in kept)))
    memory = {}
    for name in names:
        series = [(p.at, p.rss_mb[name]) for p in kept if name in p.rss_mb]
        first, last = series[0][1], series[-1][1]
        memory[name] = {
            "after_warm_up_mb": round(first, 1),
            "end_mb": round(last, 1),
            "growth_mb": round(last - first, 1),
            "growth_pct": round(100 * (last - first) / first, 1) if first else 0.0,
            "trend_mb_per_hour": round(slope_per_hour([a for a, _ in series], [v for _, v in series]), 1),
        }
    latency = {
        name: {
            "after_warm_up_ms": getattr(kept[0], name),
            "end_ms": getattr(kept[-1], name),
            "trend_ms_per_hour": round(slope_per_hour(at, [getattr(p, name) for p in kept]), 1),
        }
        for name in ("p50_ms", "p99_ms")
    }
    return {"memory": memory, "latency": latency, "periods_after_warm_up": len(kept)}
