"""`dlstream drift`: run the monitor, and read its status, alerts and report."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dlstream.cli.context import repository_of, settings_of
from dlstream.cli.serving import run_faust, serve_metrics


@click.group()
def drift() -> None:
    """The drift monitor: windows of predictions in Redis, alerts, retraining."""


@drift.command("run")
@click.pass_context
def drift_run(ctx: click.Context) -> None:
    """Run the drift monitor until SIGTERM."""
    from dlstream.drift.app import build_app
    from dlstream.drift.metrics import DriftMetrics
    from dlstream.retrain.launchers import LocalLauncher, make_launcher

    settings = settings_of(ctx)
    metrics = DriftMetrics()
    serve_metrics(settings.drift.metrics_port, settings.drift.bind_host, metrics.registry)
    launcher = make_launcher(settings, repository=repository_of(ctx))
    try:
        run_faust(build_app(settings, metrics=metrics, launcher=launcher), settings)
    finally:
        if isinstance(launcher, LocalLauncher):
            launcher.stop()


@drift.command("status")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of lines.")
@click.pass_context
def drift_status(ctx: click.Context, as_json: bool) -> None:
    """Per model: versions with their windows and accuracy, the open alert, feedback, retraining."""
    from dlstream.adapters.redis.drift_store import with_store
    from dlstream.domain.monitoring import overview_json

    overview = with_store(settings_of(ctx), lambda store: store.overview())
    if as_json:
        click.echo(json.dumps(overview_json(overview)))
        return
    from dlstream.drift.status import status_lines

    for line in status_lines(overview):
        click.echo(line)


@drift.command("alerts")
@click.option("--limit", default=20, show_default=True, help="How many of the newest alert records.")
@click.pass_context
def drift_alerts(ctx: click.Context, limit: int) -> None:
    """Alert records, newest first, one JSON object per line (raised and resolved)."""
    from dlstream.adapters.redis.drift_store import with_store

    for alert in with_store(settings_of(ctx), lambda store: store.alerts(limit)):
        click.echo(json.dumps(alert))


@drift.command("report")
@click.option("--model", default=None, help="One model (default: every model the monitor has seen).")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="HTML file."
)
@click.pass_context
def drift_report(ctx: click.Context, model: str | None, out: Path) -> None:
    """Write the drift report page: p-values over time, class mix and confidence, accuracy, alerts, jobs."""
    from dlstream.adapters.redis.drift_store import with_store
    from dlstream.drift.report import render_report

    settings = settings_of(ctx)
    data = with_store(settings, lambda store: store.report_data(model))
    out.write_text(render_report(data, false_alarm_rate=settings.drift.false_alarm_rate))
    click.echo(f"{out}: {len(data['models'])} model(s)")
