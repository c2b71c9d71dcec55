"""`dlstream drift status` as text: pure formatting of the store's overview."""

from __future__ import annotations

from dlstream.domain.monitoring import ModelOverview, VersionSummary


def _version_line(version: str, summary: VersionSummary) -> str:
    line = f"  v{version}: {summary.windows} windows, {summary.flagged_windows} flagged"
    if summary.last_p_value is not None:
        line += f", last p={summary.last_p_value:.3g}"
    metric = summary.metric or {}
    if summary.labelled and metric.get("name") not in (None, "accuracy"):
        line += f", {metric['name']} {float(metric['value']):.3f} on {summary.labelled} labels"
    elif summary.labelled and summary.accuracy is not None:
        line += f", accuracy {summary.accuracy:.3f} on {summary.labelled} labels"
    calibration = summary.calibration
    if calibration is not None:
        line += (
            f"; a false alert every ~{calibration.expected_predictions_to_false_alert:,} predictions"
            f" of undrifted traffic (rate {calibration.false_alarm_rate} per window)"
        )
    return line


def status_lines(overview: dict[str, ModelOverview]) -> list[str]:
    """Per model: the open alert and feedback, then one line per version, then the last retraining run."""
    if not overview:
        return ["no predictions observed yet"]
    lines = []
    for model, info in overview.items():
        alert = info.open_alert
        state = (
            f"OPEN ALERT {alert.id} on v{alert.version} ({alert.test}, p={alert.p_value:.2e})"
            if alert
            else "no open alert"
        )
        lines.append(f"{model}: {state}; {info.feedback} labelled predictions")
        for version, summary in sorted(info.versions.items(), key=lambda kv: int(kv[0])):
            lines.append(_version_line(version, summary))
        run = info.retraining
        if run is not None:
            lines.append(f"  retraining: {run.state} (alert {run.alert_id}, job {run.job})")
    return lines
