"""`dlstream drift status` as text: pure formatting of the store's overview."""

from __future__ import annotations

from typing import Any


def _version_line(version: str, summary: dict[str, Any]) -> str:
    line = f"  v{version}: {summary.get('windows', 0)} windows, {summary.get('flagged_windows', 0)} flagged"
    if summary.get("last_p_value") is not None:
        line += f", last p={summary['last_p_value']:.3g}"
    if "labelled" in summary:
        line += f", accuracy {summary['accuracy']:.3f} on {summary['labelled']} labels"
    calibration = summary.get("calibration")
    if calibration:
        line += (
            f"; a false alert every ~{calibration['expected_predictions_to_false_alert']:,} predictions"
            f" of undrifted traffic (rate {calibration['false_alarm_rate']} per window)"
        )
    return line


def status_lines(overview: dict[str, Any]) -> list[str]:
    """Per model: the open alert and feedback, then one line per version, then the last retraining run."""
    if not overview:
        return ["no predictions observed yet"]
    lines = []
    for model, info in overview.items():
        alert = info["open_alert"]
        state = (
            f"OPEN ALERT {alert['id']} on v{alert['version']} ({alert['test']}, p={alert['p_value']:.2e})"
            if alert
            else "no open alert"
        )
        lines.append(f"{model}: {state}; {info['feedback']} labelled predictions")
        for version, summary in sorted(info["versions"].items(), key=lambda kv: int(kv[0])):
            lines.append(_version_line(version, summary))
        run = info["retraining"]
        if run:
            lines.append(
                f"  retraining: {run.get('state')} (alert {run.get('alert_id')}, job {run.get('job')})"
            )
    return lines
