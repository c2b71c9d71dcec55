"""Builds the Faust app of the inference workers from settings (the one place that wires them)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import faust

from services.common.settings import Settings
from services.common.triton_client import AsyncTriton
from services.inference.health import WorkerState, partition_lag
from services.inference.metrics import InferenceMetrics
from services.inference.processor import ConsumedRecord, InferenceProcessor
from services.inference.sink import KafkaSink


def build_app(
    settings: Settings, *, repository: Path, metrics: InferenceMetrics, state: WorkerState | None = None
) -> faust.App:
    """The worker app: one agent over the three request topics, micro-batched with ``take_events``.

    On SIGTERM Faust stops fetching, waits until every event already taken is acknowledged (the agent finishes
    its batch, which returns only after its outcomes are acknowledged by Kafka), commits and exits.
    """
    inference = settings.inference
    worker_state = state or WorkerState()
    inference.data_dir.mkdir(parents=True, exist_ok=True)  # Faust creates only the last level
    app = faust.App(
        inference.group_id,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        value_serializer="raw",
        key_serializer="raw",
        web_port=inference.web_port,
        web_host=settings.triton.host,
        datadir=str(inference.data_dir / inference.group_id),
        store="memory://",
        topic_replication_factor=settings.kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
        # Offsets of events whose outcome was acknowledged are committed often; a crash redelivers the rest.
        broker_commit_every=max(inference.max_batch, 100),
        broker_commit_interval=1.0,
        # A record larger than the fetch size would stall its partition; oversize events must still arrive.
        consumer_max_fetch_size=max(4 * 1024 * 1024, 4 * settings.contract.max_payload_bytes),
    )
    t = settings.topics
    requests = app.topic(t.image, t.audio, t.text, key_type=bytes, value_type=bytes)

    @app.agent(requests)
    async def infer(stream: Any) -> None:
        triton = AsyncTriton(settings.triton)
        sink = KafkaSink(settings.kafka)
        await sink.start()
        processor = InferenceProcessor(
            settings, triton.infer, sink, metrics, repository=repository, state=worker_state
        )
        worker_state.started = True
        try:
            async for events in stream.take_events(inference.max_batch, within=inference.max_wait_ms / 1000):
                records = [
                    ConsumedRecord(
                        topic=e.message.topic,
                        partition=e.message.partition,
                        offset=e.message.offset,
                        key=e.message.key,
                        value=e.message.value,
                        headers=list(e.message.headers or []),
                    )
                    for e in events
                ]
                await processor.process(records)
        finally:
            worker_state.stopping = True
            await sink.stop()
            await triton.close()

    @app.timer(inference.lag_interval_s)  # type: ignore[untyped-decorator]
    async def measure_lag() -> None:
        consumer = app.consumer
        assigned = sorted(consumer.assignment())
        if not assigned:
            worker_state.lag = {}
            return
        ends = await consumer.highwaters(*assigned)
        # Faust keeps the offsets it committed; before its first commit on a partition the position stands in.
        committed = getattr(consumer, "_committed_offset", {})
        lag: dict[str, int] = {}
        for tp in assigned:
            position = None if committed.get(tp) is not None else await consumer.position(tp)
            value = partition_lag(ends.get(tp), committed.get(tp), position)
            if value is not None:
                lag[f"{tp.topic}/{tp.partition}"] = value
                metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(value)
        worker_state.lag = lag

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        code, body = worker_state.health(time.monotonic())
        return web.json(body, status=code)

    @app.page("/ready")
    async def ready(web: Any, request: Any) -> Any:
        code, body = worker_state.health(time.monotonic())
        return web.json(body, status=code if body["status"] == "ok" else 503)

    return app
