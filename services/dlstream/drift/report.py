"""The drift report: one HTML page per deployment, drawn from what the monitor keeps in Redis.

Per model: every window's p-value over time against the alarm threshold, with alerts and retraining runs on
the same time axis; per version, its predicted-class mix and its top-1 confidence histogram against its
reference, and its accuracy from labels. Pure: data in (:meth:`DriftStore.report_data`), HTML out; the
figures are PNGs inlined in the page, so it opens anywhere without a network.
"""

from __future__ import annotations

import base64
import html
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

CONFIDENCE_BINS = 20


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _png(fig: Any) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _shares(counts: list[float]) -> list[float]:
    total = sum(counts) or 1.0
    return [c / total for c in counts]


def _event_times(events: dict[str, list[Any]]) -> list[tuple[datetime, str, str]]:
    """``(time, colour, style)`` of each alert raised or resolved and each retraining run started or ended."""
    marks = []
    for alert in events["alerts"]:
        if alert["status"] == "open":
            marks.append((_time(alert["raised_at"]), "crimson", "-"))
        elif alert.get("resolved_at"):
            marks.append((_time(alert["resolved_at"]), "seagreen", "-"))
    for run in events["runs"]:
        for key in ("started_at", "finished_at"):
            if run.get(key):
                marks.append((datetime.fromtimestamp(float(run[key]), UTC), "royalblue", ":"))
    return marks


def _timeline(plt: Any, model: str, info: dict[str, Any], events: dict[str, list[Any]], rate: float) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
    shown: list[datetime] = []
    for version, summary in sorted(info["versions"].items(), key=lambda kv: int(kv[0])):
        history = summary.get("history") or []
        if not history:
            continue
        at = [_time(r["at"]) for r in history]
        shown += at
        p = [max(r["p"], 1e-300) for r in history]
        ax.plot(at, p, ".-", linewidth=0.8, markersize=4, label=f"v{version} window p-value")
        flagged = [(t, v) for t, v, r in zip(at, p, history, strict=True) if r["flagged"]]
        if flagged:
            ax.plot(*zip(*flagged, strict=True), "x", color="crimson", markersize=6)
    ax.axhline(rate, color="black", linestyle="--", linewidth=1, label=f"threshold {rate:g}")
    # Alerts and runs older than the oldest window kept are off the axis: the axis is the windows' time.
    start = min(shown) if shown else None
    marks = [m for m in _event_times(events) if start is None or m[0] >= start]
    for stamp, colour, style in marks:
        ax.axvline(stamp, color=colour, linestyle=style, linewidth=1.2)
    if start is not None:
        end = max([*shown, *(m[0] for m in marks)])
        margin = (end - start) * 0.03 or timedelta(seconds=1)
        ax.set_xlim(start - margin, end + margin)
    ax.set_yscale("log")
    ax.set_ylabel("p-value (log)")
    ax.set_title(f"{model}: windows over time (red: alert raised, green: resolved, blue dotted: retraining)")
    ax.legend(fontsize=7, loc="lower left")
    fig.autofmt_xdate()
    image = _png(fig)
    plt.close(fig)
    return image


def _run_line(run: dict[str, Any]) -> str:
    """One retraining run: its state, the version it started from, and what its job reported."""
    detail = run.get("detail", "")
    try:
        figures = json.loads(detail)
    except ValueError:
        figures = None
    if isinstance(figures, dict):
        parts = [figures.get("reason", "")]
        if figures.get("new_version"):
            parts.append(f"new version {figures['new_version']}")
        if figures.get("seconds"):
            parts.append(f"{figures['seconds']:.0f} s")
        detail = ", ".join(str(p) for p in parts if p)
    return f"{run.get('state', '')}: from v{run.get('from_version', '?')}, {detail}"


def _version_figure(plt: Any, model: str, version: str, summary: dict[str, Any]) -> str | None:
    reference = summary.get("reference")
    if not reference:
        return None
    labels = reference["labels"]
    observed = [summary.get("class_counts", {}).get(label, 0) for label in labels]
    fig, (mix, confidence) = plt.subplots(1, 2, figsize=(9, 2.8), dpi=100)
    positions = range(len(labels))
    mix.bar([i - 0.2 for i in positions], _shares(reference["class_counts"]), width=0.4, label="reference")
    mix.bar([i + 0.2 for i in positions], _shares(observed), width=0.4, label="served")
    if len(labels) <= 20:
        mix.set_xticks(list(positions), labels, rotation=45, fontsize=7)
    mix.set_title(f"{model} v{version}: predicted-class mix", fontsize=9)
    mix.legend(fontsize=7)
    edges = [i / CONFIDENCE_BINS for i in range(CONFIDENCE_BINS)]
    served = summary.get("confidence_histogram") or [0] * CONFIDENCE_BINS
    confidence.bar(edges, _shares(served), width=1 / CONFIDENCE_BINS, align="edge", alpha=0.6, label="served")
    if reference.get("confidence_histogram"):
        shares = _shares(reference["confidence_histogram"])
        confidence.step([*edges, 1.0], [*shares, shares[-1]], where="post", color="black", label="reference")
    confidence.set_title(f"{model} v{version}: top-1 confidence", fontsize=9)
    confidence.legend(fontsize=7)
    image = _png(fig)
    plt.close(fig)
    return image


def _version_row(version: str, summary: dict[str, Any]) -> str:
    accuracy = (
        f"{summary['accuracy']:.3f} on {summary['labelled']} labels"
        if summary.get("labelled")
        else "no labels"
    )
    cells = [
        f"v{version}",
        str(summary.get("predictions", "")),
        str(summary.get("windows", 0)),
        str(summary.get("flagged_windows", 0)),
        f"{summary['last_p_value']:.3g}" if summary.get("last_p_value") is not None else "",
        accuracy,
    ]
    return "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"


def render_report(
    data: dict[str, Any], *, false_alarm_rate: float, title: str = "dlstream drift report"
) -> str:
    """The report page for ``data`` (:meth:`DriftStore.report_data`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = []
    for model, info in sorted(data["models"].items()):
        events = {
            "alerts": [a for a in data["alerts"] if a["model"] == model],
            "runs": [r for r in data["runs"] if r["model"] == model],
        }
        rows = "".join(
            _version_row(v, s) for v, s in sorted(info["versions"].items(), key=lambda kv: int(kv[0]))
        )
        alert = info.get("open_alert")
        state = "no open alert"
        if alert:
            state = f"OPEN ALERT on v{alert['version']} since {alert['raised_at']} ({alert['test']})"
        parts = [
            f"<h2>{html.escape(model)}</h2>",
            f"<p class='state'>{html.escape(state)}; {info.get('feedback', 0)} labelled predictions kept</p>",
            "<table><tr><th>version</th><th>predictions</th><th>windows</th><th>flagged</th>"
            f"<th>last p</th><th>accuracy</th></tr>{rows}</table>",
            f"<img alt='{html.escape(model)} timeline' src='data:image/png;base64,"
            f"{_timeline(plt, model, info, events, false_alarm_rate)}'>",
        ]
        for version, summary in sorted(info["versions"].items(), key=lambda kv: int(kv[0])):
            image = _version_figure(plt, model, version, summary)
            if image:
                parts.append(
                    f"<img alt='{html.escape(model)} v{version}' src='data:image/png;base64,{image}'>"
                )
        if events["runs"]:
            runs = "".join(f"<li>{html.escape(_run_line(r))}</li>" for r in events["runs"])
            parts.append(f"<h3>Retraining runs</h3><ul>{runs}</ul>")
        sections.append("<section>" + "".join(parts) + "</section>")
    body = "".join(sections) or "<p>No model has predictions in the monitor yet.</p>"
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }}
td, th {{ border: 1px solid #bbb; padding: 0.2em 0.6em; text-align: right; }}
.state {{ font-weight: bold; }}
img {{ display: block; margin: 0.5em 0; max-width: 100%; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Generated {generated}; alarm threshold {false_alarm_rate:g} per window.</p>
{body}</body></html>
"""
