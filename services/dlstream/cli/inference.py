"""`dlstream inference`: run an inference worker."""

from __future__ import annotations

import click

from dlstream.cli.context import settings_of
from dlstream.cli.serving import run_faust, serve_metrics


@click.group()
def inference() -> None:
    """The inference workers (Faust)."""


@inference.command("run")
@click.pass_context
def inference_run(ctx: click.Context) -> None:
    """Run one inference worker until SIGTERM (finishes the batch in flight, commits, exits)."""
    from dlstream.inference.app import build_app
    from dlstream.inference.metrics import InferenceMetrics

    settings = settings_of(ctx)
    metrics = InferenceMetrics()
    serve_metrics(settings.inference.metrics_port, settings.inference.bind_host, metrics.registry)
    run_faust(build_app(settings, metrics=metrics), settings)
