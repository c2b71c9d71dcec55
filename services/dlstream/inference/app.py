"""Builds the Faust app of the inference workers from settings (the one place that wires them)."""

from __future__ import annotations

import time
from typing import Any

import faust

from dlstream.adapters.faust.app import add_health_pages, service_app
from dlstream.adapters.kafka.sink import KafkaSink
from dlstream.adapters.triton.client import AsyncTriton
from dlstream.adapters.triton.discovery import TritonDiscovery
from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality
from dlstream.inference.batching import ReadyBatches
from dlstream.inference.metrics import InferenceMetrics
from dlstream.inference.pipelining import BatchPipeline
from dlstream.inference.processor import ConsumedRecord, Decision, InferenceProcessor
from dlstream.runtime.health import WorkerState, partition_lag
from dlstream.runtime.heap import freeze_startup_heap


def consumed(event: Any, *, wall: float, monotonic: float) -> ConsumedRecord:
    """The record of a Faust event, with where it came from and when the worker received it.

    Faust's monitor stamps ``message.time_in`` (monotonic) as the consumer hands the record over; ``wall`` and
    ``monotonic`` are one reading of both clocks, to turn that stamp into wall-clock time.
    """
    message = event.message
    time_in = getattr(message, "time_in", None)
    return ConsumedRecord(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=list(message.headers or []),
        fetched_at=None if time_in is None else wall - (monotonic - time_in),
    )


def build_app(
    settings: Settings, *, metrics: InferenceMetrics, state: WorkerState | None = None
) -> faust.App:
    """The worker app: one agent over the three request topics, micro-batched with ``noack_take``; the
    models it routes to are discovered from Triton and refreshed every ``discovery_interval_s``.

    On SIGTERM Faust stops fetching, waits until every event already taken is acknowledged (the agent finishes
    its batch, which returns only after its outcomes are acknowledged by Kafka), commits and exits. Events
    waiting for a model are not acknowledged then; they are redelivered.
    """
    inference = settings.inference
    worker_state = state or WorkerState()
    discovery = TritonDiscovery(settings.triton, overrides=inference.default_models)
    app = service_app(
        settings,
        group_id=inference.group_id,
        web_port=inference.web_port,
        bind_host=inference.bind_host,
        data_dir=inference.data_dir,
        # Offsets of events whose outcome was acknowledged are committed often; a crash redelivers the rest.
        broker_commit_every=max(inference.max_batch, 100),
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
            settings, triton.infer_batch, sink, metrics, catalog=lambda: discovery.catalog, state=worker_state
        )
        await discovery.refresh()
        freeze_startup_heap()
        # Offsets are committed only for acknowledged events, and events are acknowledged only once their
        # outcome is (``deliver``, ``settle``).
        unacked = stream.noack()

        async def decide(events: list[Any]) -> Decision:
            wall, now = time.time(), time.monotonic()
            return await processor.decide([consumed(e, wall=wall, monotonic=now) for e in events])

        async def deliver(events: list[Any], decision: Decision) -> None:
            await processor.deliver(decision)
            # Only now may these offsets be committed.
            waiting = set(decision.waiting_indices)
            for i, event in enumerate(events):
                if i not in waiting:
                    await unacked.ack(event)

        async def settle(event: Any, decision: Decision, index: int) -> None:
            await processor.settle(decision.waiting_at(index))
            await unacked.ack(event)

        batches = ReadyBatches(
            unacked.events(), max_batch=inference.max_batch, linger_s=inference.max_wait_ms / 1000
        )
        pipeline: BatchPipeline[Any, Decision] = BatchPipeline(
            decide=decide,
            deliver=deliver,
            settle=settle,
            triton_depth=inference.triton_depth,
            pipeline_depth=inference.pipeline_depth,
            max_waiting=inference.max_waiting,
            just_in_time=inference.triton_just_in_time,
            full=batches.wait_full,
        )
        worker_state.started = True
        try:
            await pipeline.run(batches)
        finally:
            worker_state.stopping = True
            await sink.stop()
            await triton.close()
            await discovery.close()

    @app.timer(inference.discovery_interval_s)  # type: ignore[untyped-decorator]
    async def discover() -> None:
        catalog = await discovery.refresh()
        for modality in Modality:
            metrics.models_served.labels(modality=modality.value).set(len(catalog.of_modality(modality)))

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

    add_health_pages(app, worker_state)

    return app
