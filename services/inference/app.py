"""Builds the Faust app of the inference workers from settings (the one place that wires them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faust

from services.common.settings import Settings
from services.common.triton_client import AsyncTriton
from services.inference.metrics import InferenceMetrics
from services.inference.processor import ConsumedRecord, InferenceProcessor
from services.inference.sink import KafkaSink


def build_app(settings: Settings, *, repository: Path, metrics: InferenceMetrics) -> faust.App:
    """The worker app: one agent over the three request topics, micro-batched with ``take_events``."""
    inference = settings.inference
    app = faust.App(
        inference.group_id,
        broker=f"kafka://{settings.kafka.bootstrap_servers}",
        value_serializer="raw",
        key_serializer="raw",
        web_port=inference.web_port,
        web_host=settings.triton.host,
        store="memory://",
        topic_replication_factor=settings.kafka.replication_factor,
        consumer_auto_offset_reset="earliest",
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
        processor = InferenceProcessor(settings, triton.infer, sink, metrics, repository=repository)
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
            await sink.stop()
            await triton.close()

    return app
