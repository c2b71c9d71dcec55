"""``dlstream bench stream`` runs end to end on the real stack and prints its figures (values not judged)."""

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
