"""``dlstream bench soak``: the running stack held at a share of its maximum for a set time, sampled for
memory and latency, with the growth after warm-up.

Events go to the stack's own request topics, so its worker and drift monitor do the work a user's traffic
would give them. Each period publishes at the soak's rate, waits for its predictions (end-to-end latency as a
subscriber sees it) and then samples the resident memory of every process: each recorded stack service with
the whole of its process group (Triton's backend stubs, for instance), and any other process named by pid.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from tqdm import tqdm

from dlstream.config.settings import Settings
from dlstream.models.samples import held_out_payloads
from dlstream.tools.bench.latency import percentiles
from dlstream.tools.bench.load_levels import LatencyRun
from dlstream.tools.bench.soak_figures import Period, soak_growth
from dlstream.tools.stack.local_stack import LocalStack
from dlstream.tools.stack.process import group_members, is_running

log = structlog.get_logger(__name__)

PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


def group_rss_mb(pgid: int) -> float | None:
    """Resident memory of every live process in the process group ``pgid`` (MB), None when none is left."""
    total, found = 0.0, False
    for pid in group_members(pgid):
        try:
            resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        total += resident_pages * PAGE_MB
        found = True
    return total if found else None


def stack_processes(stack: LocalStack) -> dict[str, int]:
    """The running stack services' recorded pids (each the leader of its own process group)."""
    return {name: r.pid for name in stack.services if (r := stack.record(name)) is not None and is_running(r)}


def max_rate(run: LatencyRun, events: int) -> float:
    """Predictions per second of the running worker draining ``events`` published as fast as possible."""
    arrivals = run.burst(events)
    received = sorted(a.received_at for a in arrivals)
    return (len(received) - 1) / max(received[-1] - received[0], 1e-6)


def soak(
    settings: Settings,
    processes: Mapping[str, int],
    *,
    model: str,
    seconds: float,
    warm_up_s: float,
    period_s: float,
    rate: float | None,
    load: float,
    calibration_events: int,
) -> dict[str, Any]:
    """Hold the stack at ``rate`` events per second (``load`` x its measured maximum when None) for
    ``seconds``, one period of ``period_s`` at a time; report each period and the growth after
    ``warm_up_s``."""
    payloads, _ = held_out_payloads(model, 0)
    run = LatencyRun(settings, payloads)
    periods: list[Period] = []
    try:
        run.start(warm_up=2 * settings.inference.max_batch)
        maximum: float | None = None
        if rate is None:
            maximum = max_rate(run, calibration_events)
            target = load * maximum
        else:
            target = rate
        log.info("soak.rate", maximum_eps=maximum, rate_eps=round(target, 1))
        began = time.monotonic()
        with tqdm(total=round(seconds), desc="soak", unit="s") as progress:
            while (elapsed := time.monotonic() - began) < seconds:
                arrivals, _, _ = run.level(target, min(period_s, max(1.0, seconds - elapsed)), progress=False)
                rss = {name: mb for name, pid in processes.items() if (mb := group_rss_mb(pid)) is not None}
                at = time.monotonic() - began
                latency = percentiles([a.end_to_end_ms for a in arrivals])
                periods.append(Period(at, len(arrivals), latency["p50_ms"], latency["p99_ms"], rss))
                log.info("soak.period", at_s=round(at), p99_ms=latency["p99_ms"], rss_mb=rss)
                progress.update(min(round(at), round(seconds)) - progress.n)
    finally:
        run.stop()
    return {
        "model": model,
        "seconds": seconds,
        "warm_up_s": warm_up_s,
        "period_s": period_s,
        "rate_eps": round(target, 1),
        "maximum_eps": None if maximum is None else round(maximum, 1),
        "events": sum(p.events for p in periods),
        "processes": dict(processes),
        "periods": [
            {
                "at_s": round(p.at, 1),
                "events": p.events,
                "p50_ms": p.p50_ms,
                "p99_ms": p.p99_ms,
                "rss_mb": {k: round(v, 1) for k, v in p.rss_mb.items()},
            }
            for p in periods
        ],
        "growth": soak_growth(periods, warm_up_s),
    }
