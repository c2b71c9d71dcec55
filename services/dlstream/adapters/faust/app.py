"""The Faust app of a dlstream service: raw bytes in and out, the project's Kafka settings, own data dir."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Protocol

import faust
import structlog

from dlstream.adapters.faust.transport import transport_class
from dlstream.adapters.kafka.connection import ssl_context
from dlstream.config.settings import KafkaSettings, Settings

log = structlog.get_logger("dlstream.faust")


class DrainingApp(faust.App):
    """A Faust app whose wait for the events already taken, on SIGTERM and before a rebalance, ends after
    ``drain_timeout_s``. Events that cannot finish then (their model server or store is away) are left
    unacknowledged, so their offsets stay uncommitted and another member or a restart redelivers them; the
    process still exits within its stop timeout."""

    drain_timeout_s: float = 20.0

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        # Faust's wait swallows cancellation, so it is ended from inside: at the deadline the set of events it
        # waits for is emptied, and its loop commits what was acknowledged and returns within a second.
        deadline = asyncio.get_running_loop().call_later(self.drain_timeout_s, self._stop_waiting, consumer)
        try:
            await super()._consumer_wait_empty(consumer, logger)
        finally:
            deadline.cancel()

    def _stop_waiting(self, consumer: Any) -> None:
        unacked = getattr(consumer, "_unacked_messages", None)
        if not unacked:
            return
        # The transport's consumer keeps them as in work, so the commit after the wait does not pass them.
        abandon = getattr(consumer, "abandon_unacked", None)
        unfinished = abandon() if abandon is not None else len(unacked)
        unacked.clear()
        log.warning("faust.drain_timeout", seconds=self.drain_timeout_s, unfinished=unfinished)


def service_app(
    settings: Settings,
    *,
    group_id: str,
    web_port: int,
    bind_host: str,
    data_dir: Path,
    **options: Any,
) -> faust.App:
    """A Faust app whose consumer group is ``group_id``; ``options`` add to or override Faust's settings.

    Records are raw bytes (services parse the wire contract themselves), tables live in memory, a new group
    starts at the earliest offset, and SIGTERM waits for events already taken (``stream_wait_empty``), at
    most ``drain_timeout_s`` (:class:`DrainingApp`). A member silent for ``session_timeout_s`` leaves its
    group, so a crashed process's partitions move quickly.
    Its consumer long-polls at most ``kafka.fetch_max_wait_ms`` (:mod:`dlstream.adapters.faust.transport`).
    """
    data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    session_timeout_s = settings.inference.session_timeout_s
    app = DrainingApp(
        group_id,
        **{
            "broker": f"kafka://{settings.kafka.bootstrap_servers}",
            "broker_credentials": faust_credentials(settings.kafka),
            "value_serializer": "raw",
            "key_serializer": "raw",
            "web_port": web_port,
            "web_bind": bind_host,
            "web_host": bind_host,
            "datadir": str(data_dir / group_id),
            "store": "memory://",
            "topic_replication_factor": settings.kafka.replication_factor,
            "consumer_auto_offset_reset": "earliest",
            "stream_wait_empty": True,
            "broker_commit_interval": 1.0,
            "broker_session_timeout": session_timeout_s,
            "broker_heartbeat_interval": session_timeout_s / 4,
            **options,
        },
    )
    app.drain_timeout_s = settings.inference.drain_timeout_s
    app.transport = transport_class(settings.kafka.fetch_max_wait_ms)(app.conf.broker_consumer, app)
    return app


class Health(Protocol):
    """What a service reports on its health pages."""

    def health(self, now: float) -> tuple[int, dict[str, Any]]:
        """HTTP status and JSON body of ``/health``."""


def add_health_pages(app: faust.App, state: Health) -> None:
    """``GET /health`` (the state's own status code) and ``GET /ready`` (200 only while ``ok``)."""

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        code, body = state.health(time.monotonic())
        return web.json(body, status=code)

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        code, body = state.health(time.monotonic())
        return web.json(body, status=code if body["status"] == "ok" else 503)


def faust_credentials(settings: KafkaSettings) -> Any:
    """The ``broker_credentials`` of a Faust app: None for PLAINTEXT."""
    context = ssl_context(settings)
    if settings.sasl_mechanism:
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=password,
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
