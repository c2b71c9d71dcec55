"""Builds the Faust app of the drift monitor from settings (the one place that wires it)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import faust
import structlog

from dlstream.adapters.faust.app import add_health_pages, service_app
from dlstream.adapters.kafka.sink import KafkaSink
from dlstream.adapters.redis.drift_store import DriftStore, async_redis
from dlstream.config.settings import Settings
from dlstream.domain.contract import DriftAlert, Modality
from dlstream.domain.errors import AccessDenied, TransientError
from dlstream.drift.intake import take_labels, take_predictions
from dlstream.drift.metrics import DriftMetrics
from dlstream.drift.monitor import DriftMonitor
from dlstream.drift.report import render_report
from dlstream.drift.report_access import REALM, needs_login, requester_redis
from dlstream.retrain.launchers import Launcher
from dlstream.runtime.health import WorkerState
from dlstream.runtime.heap import freeze_startup_heap

log = structlog.get_logger("dlstream.drift")
TICK_S = 5.0


def build_app(
    settings: Settings,
    *,
    metrics: DriftMetrics,
    launcher: Launcher | None,
    state: WorkerState | None = None,
) -> faust.App:
    """The monitor app: one agent over the prediction topics, one over labels, a timer following jobs.

    Events are acknowledged (so committed) after their effect is in Redis and any alert is on Kafka
    (:mod:`dlstream.drift.intake`).
    """
    drift = settings.drift
    monitor_state = state or WorkerState()
    app = service_app(
        settings,
        group_id=drift.group_id,
        web_port=drift.web_port,
        bind_host=drift.bind_host,
        data_dir=drift.data_dir,
    )
    predictions = app.topic(
        *(settings.topics.prediction(m) for m in Modality), key_type=bytes, value_type=bytes
    )
    labels = app.topic(settings.topics.labels, key_type=bytes, value_type=bytes)
    holder: dict[str, Any] = {}
    creating = asyncio.Lock()  # both agents ask for the monitor at start; one must build it

    async def monitor() -> DriftMonitor:
        async with creating:
            if "monitor" not in holder:
                await _create()
        return holder["monitor"]  # type: ignore[no-any-return]

    async def _create() -> None:
        sink = KafkaSink(settings.kafka)
        await sink.start()
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=drift.webhook_timeout_s))

        async def webhook(alert: DriftAlert) -> None:
            if drift.webhook_url is None:
                return
            try:
                async with session.post(
                    drift.webhook_url,
                    data=alert.model_dump_json(),
                    headers={"content-type": "application/json"},
                ) as response:
                    response.raise_for_status()
            except (aiohttp.ClientError, TimeoutError) as exc:
                metrics.webhook_failures.inc()
                log.warning("drift.webhook_failed", url=drift.webhook_url, error=str(exc))

        holder.update(sink=sink, session=session)
        holder["monitor"] = DriftMonitor(
            settings,
            DriftStore(async_redis(settings.redis), drift),
            metrics=metrics,
            publish=sink.send_all,
            webhook=webhook,
            launcher=launcher,
        )
        freeze_startup_heap()

    @app.agent(predictions)
    async def watch(stream: Any) -> None:
        drift_monitor = await monitor()
        monitor_state.started = True
        try:
            async for events in stream.noack_take(drift.max_batch, within=drift.max_wait_ms / 1000):
                taken = list(events)
                records = [(event.message.topic, event.message.value) for event in taken]
                await take_predictions(drift_monitor, monitor_state, records, settings.retry)
                for event in taken:
                    await stream.ack(event)
        finally:
            monitor_state.stopping = True
            await holder["sink"].stop()
            await holder["session"].close()
            await drift_monitor.store.close()

    @app.agent(labels)
    async def feedback(stream: Any) -> None:
        drift_monitor = await monitor()
        async for events in stream.noack_take(drift.max_batch, within=drift.max_wait_ms / 1000):
            taken = list(events)
            records = [(event.message.offset, event.message.value) for event in taken]
            await take_labels(drift_monitor, monitor_state, records, settings.retry)
            for event in taken:
                await stream.ack(event)

    @app.timer(TICK_S)  # type: ignore[untyped-decorator]
    async def follow_jobs() -> None:
        if "monitor" in holder:
            try:
                await holder["monitor"].tick()
            except (TransientError, AccessDenied) as error:
                log.warning("drift.tick_failed", error=str(error))

    add_health_pages(app, monitor_state)

    @app.page("/report")
    async def report(web: Any, request: Any) -> Any:
        drift_monitor = await monitor()
        model = request.query.get("model")
        if not needs_login(settings.redis):
            data = await drift_monitor.store.report_data(model)
        else:
            redis = requester_redis(settings.redis, request.headers.get("Authorization"))
            if redis is None:
                return _refused(web, "the drift report needs the Redis credentials of a user who may read it")
            reader = DriftStore(async_redis(redis), drift)
            try:
                data = await reader.report_data(model)
            except AccessDenied as denied:
                return _refused(web, str(denied))
            finally:
                await reader.close()
        page = await asyncio.to_thread(render_report, data, false_alarm_rate=drift.false_alarm_rate)
        return web.html(page)

    return app


def _refused(web: Any, why: str) -> Any:
    return web.text(why + "\n", status=401, headers={"WWW-Authenticate": REALM})
