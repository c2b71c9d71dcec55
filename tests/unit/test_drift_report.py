"""The drift report page from report data (pure: no Redis, no browser)."""

from __future__ import annotations

from typing import Any

import pytest

from dlstream.drift.report import render_report

pytestmark = [pytest.mark.unit, pytest.mark.slow(reason="renders the report and its plots with matplotlib")]


def _data() -> dict[str, Any]:
    history = [
        {"window": i, "at": f"2026-12-01T10:{i:02d}:00.000Z", "p": p, "flagged": p < 0.01}
        for i, p in enumerate([0.4, 0.2, 1e-5, 1e-9])
    ]
    version = {
        "windows": 4,
        "flagged_windows": 2,
        "last_p_value": 1e-9,
        "predictions": 220,
        "labelled": 40,
        "accuracy": 0.725,
        "class_counts": {"a": 50, "b": 150},
        "confidence_histogram": [0] * 15 + [10, 20, 30, 40, 100],
        "history": history,
        "reference": {"labels": ["a", "b"], "class_counts": [100, 100], "confidence_histogram": [1] * 20},
    }
    alert = {"model": "<m>", "version": "1", "status": "open", "raised_at": "2026-12-01T10:03:00.000Z"}
    run = {
        "model": "<m>",
        "state": "promoted",
        "from_version": "1",
        "detail": "gain 0.5",
        "started_at": "1764583500",
    }
    return {
        "models": {
            "<m>": {"versions": {"1": version}, "open_alert": {**alert, "test": "softmax_ks"}, "feedback": 40}
        },
        "alerts": [alert],
        "runs": [run, {**run, "detail": '{"reason": "gains +0.862", "new_version": 2, "seconds": 682.7}'}],
    }


def test_the_report_has_a_section_per_model_with_its_figures_table_and_runs() -> None:
    page = render_report(_data(), false_alarm_rate=0.01)
    assert page.startswith("<!doctype html>")
    assert "<h2>&lt;m&gt;</h2>" in page
    assert "<m>" not in page  # names are escaped
    assert "OPEN ALERT on v1" in page
    assert "0.725 on 40 labels" in page
    assert page.count("data:image/png;base64,") == 2
    assert "promoted: from v1, gain 0.5" in page
    assert "promoted: from v1, gains +0.862, new version 2, 683 s" in page  # a job's JSON report, summarised


def test_an_empty_monitor_gets_a_page_that_says_so() -> None:
    page = render_report({"models": {}, "alerts": [], "runs": []}, false_alarm_rate=0.05)
    assert "No model has predictions in the monitor yet." in page


def test_a_hostile_model_name_is_escaped_everywhere_on_the_page() -> None:
    data = _data()
    hostile = "<script>alert(1)</script>"
    data["models"] = {hostile: data["models"]["<m>"]}
    for record in [*data["alerts"], *data["runs"]]:
        record["model"] = hostile
    page = render_report(data, false_alarm_rate=0.01)
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
