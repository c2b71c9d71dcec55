"""A short soak of the real stack with a worker and the monitor: every period sampled, growth reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlstream.config.settings import Settings
from tests.integration.conftest import TopicFactory
from tests.integration.drift import MONITOR_ARGV, drift_settings
from tests.integration.workers import Worker, dlstream

pytestmark = pytest.mark.integration


def test_soak_samples_every_process_and_reports_growth_after_warm_up(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    deployed = drift_settings(settings, topics, group_id)
    worker = Worker(deployed, tmp_path / "worker.log").start()
    monitor = Worker(deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV).start()
    try:
        assert worker.proc is not None
        assert monitor.proc is not None
        args = [
            *("bench", "soak", "--json", "--minutes", "0.3", "--warm-up-minutes", "0.05"),
            *("--period-seconds", "6", "--rate", "30"),
            *("--process", f"worker={worker.proc.pid}", "--process", f"monitor={monitor.proc.pid}"),
        ]
        result = dlstream(deployed, *args, timeout_s=300)
    finally:
        monitor.stop()
        worker.stop()
    report = json.loads(result.stdout)
    names = {"kafka", "redis", "triton", "worker", "monitor"}
    assert set(report["processes"]) == names
    periods = report["periods"]
    assert len(periods) >= 3
    assert report["events"] == sum(p["events"] for p in periods) >= 20 * len(periods)
    for period in periods:
        assert set(period["rss_mb"]) == names, period
        assert all(mb > 1 for mb in period["rss_mb"].values()), period
        assert period["p99_ms"] >= period["p50_ms"] > 0
    growth = report["growth"]
    assert set(growth["memory"]) == names
    assert growth["periods_after_warm_up"] >= 2
    assert growth["latency"]["p99_ms"]["end_ms"] == periods[-1]["p99_ms"]
    print({name: figures["growth_mb"] for name, figures in growth["memory"].items()})
