"""What the long-running commands (`inference run`, `drift run`) share: their metrics endpoint and the Faust
worker that runs their app."""

from __future__ import annotations

from typing import Any

from prometheus_client import start_http_server

from dlstream.adapters.faust.worker import STOP_MARGIN_S, DeadlineWorker
from dlstream.config.settings import Settings


def serve_metrics(port: int, host: str, registry: object) -> None:
    """Serve a registry's Prometheus metrics on ``host:port`` (none when the port is 0)."""
    if port:
        start_http_server(port, addr=host, registry=registry)  # type: ignore[arg-type]


def run_faust(app: Any, settings: Settings) -> None:
    """Run a Faust app as a worker in this process until it is stopped."""
    # Faust logs through the same JSON handler as everything else, without its own handler or banner.
    worker = DeadlineWorker(
        app,
        stop_deadline_s=settings.inference.drain_timeout_s + STOP_MARGIN_S,
        loglevel=settings.log.level.lower(),
        override_logging=False,
        quiet=True,
    )
    worker.spinner = None  # its terminal escapes would land in the log
    worker.execute_from_commandline()
