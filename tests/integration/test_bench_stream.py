"""The benchmark commands run end to end on the real stack and print their figures (values not judged)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlstream.adapters.kafka.admin import KafkaAdmin
from dlstream.config.settings import Settings
from tests.integration.workers import dlstream

pytestmark = pytest.mark.integration

FIGURES = ("pipeline_eps", "direct_triton_eps", "overhead_ratio", "naive_eps", "vs_naive", "p50_ms", "p99_ms")
STAGES = {"kafka_ms", "batch_ms", "inference_ms", "outcome_ms", "delivery_ms"}


@pytest.mark.slow(reason="two load levels of 5 s, then one and two workers started and balanced")
def test_bench_stream_prints_one_json_object_plots_the_curve_and_leaves_no_topic(
    settings: Settings, tmp_path: Path
) -> None:
    plot = tmp_path / "curve.png"
    args = [
        *("bench", "stream", "--json", "--events", "300", "--naive-events", "100", "--runs", "1"),
        *("--level-seconds", "5", "--levels", "0.5,0.9", "--idle-events", "5", "--workers", "2"),
        *("--plot", str(plot)),
    ]
    result = dlstream(settings, *args, timeout_s=600)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert all(report[name] > 0 for name in FIGURES), report
    assert report["p99_ms"] >= report["p50_ms"]
    assert report["floor_ms"] > 0
    assert report["idle"]["events"] == 5
    assert set(report["direct_triton_eps_by_request"]) == {"one_per_payload", "one_per_batch", "request_size"}
    assert all(rate > 0 for rate in report["direct_triton_eps_by_request"].values())
    assert [row["load"] for row in report["curve"]] == [0.5, 0.9]
    assert report["latency_load"] == 0.5
    for row in report["curve"]:
        assert row["p99_9_ms"] >= row["p99_ms"] >= row["p50_ms"] > 0
        assert set(row["breakdown_ms"]) == STAGES, row
        assert isinstance(row["grows"], bool)
    scale_out = report["scale_out"]
    assert scale_out["workers"] == [1, 2]
    assert all(rate > 0 for rate in scale_out["eps"])
    assert scale_out["vs_one_worker"][0] == 1.0
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert not [t for t in KafkaAdmin(settings.kafka).list_topics() if t.startswith("bench.")]


def test_bench_drift_prints_one_json_object_with_the_monitor_figures(settings: Settings) -> None:
    args = ["bench", "drift", "--json", "--model", "digits", "--windows", "40", "--window-size", "50"]
    result = dlstream(settings, *args, "--windows-per-split", "5", "--drifted-windows", "4", timeout_s=300)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    report = json.loads(lines[0])
    digits = report["models"]["digits"]
    figures = digits["window_sizes"]["50"]
    assert figures["measured"]
    split = figures["predictions_per_split"]
    assert split["undrifted"] == digits["held_out_predictions"] // 3
    assert split["calibration"] > 0
    assert figures["windows_per_split"] == 5
    assert figures["splits"] == 8
    for rate in ("0.01", "0.05"):
        alarms = figures["false_alarms"][rate]
        assert alarms["windows"] == 40
        low, high = alarms["observed_false_alarm_ci95"]
        assert low <= alarms["observed_false_alarm_rate"] <= high
        assert alarms["expected_windows_to_false_alert"] > 1
        assert len(alarms["per_split"]) == 8
        assert alarms["design_effect"] is None or alarms["design_effect"] >= 0
    inverted = figures["drifted"]["inverted"]["0.01"]
    assert inverted["windows"] == 4
    assert inverted["detection_rate"] >= 0.75
    assert figures["us_per_prediction"] > 0
    assert 0 < figures["redis_roundtrips_per_prediction"] < 1
