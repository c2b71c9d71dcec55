"""The benchmark commands run end to end on the real stack and print their figures (values not judged)."""

from __future__ import annotations

import json

from services.common.kafka_admin import KafkaAdmin
from services.common.settings import Settings
from tests.integration.workers import dlstream

FIGURES = ("pipeline_eps", "direct_triton_eps", "overhead_ratio", "naive_eps", "vs_naive", "p50_ms", "p99_ms")


def test_bench_stream_prints_one_json_object_and_leaves_no_topic(settings: Settings) -> None:
    args = ["bench", "stream", "--json", "--events", "300", "--naive-events", "100", "--latency-seconds", "2"]
    result = dlstream(settings, *args, timeout_s=300)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert all(report[name] > 0 for name in FIGURES), report
    assert report["p99_ms"] >= report["p50_ms"]
    assert not [t for t in KafkaAdmin(settings.kafka).list_topics() if t.startswith("bench.")]


DRIFT_FIGURES = (
    "configured_false_alarm_rate",
    "observed_false_alarm_rate",
    "us_per_prediction",
    "redis_roundtrips_per_prediction",
)


def test_bench_drift_prints_one_json_object_with_the_monitor_figures(settings: Settings) -> None:
    args = ["bench", "drift", "--json", "--windows", "20", "--drifted-windows", "4"]
    result = dlstream(settings, *args, timeout_s=300)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert all(report[name] is not None for name in DRIFT_FIGURES), report
    assert report["clean_windows"] == 20
    assert report["drifted_windows"] == 4
    assert report["us_per_prediction"] > 0
    assert 0 < report["redis_roundtrips_per_prediction"] < 1
