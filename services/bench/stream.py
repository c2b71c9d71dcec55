"""``dlstream bench stream``: the pipeline against Triton called directly and against a naive Faust agent.

All figures come from one run on the running stack, one model and the same held-out payloads:

- ``direct_triton_eps``: an asyncio gRPC client sending the payloads in the workers' batches (``max_batch``
  concurrent requests, Triton's dynamic batcher forming the model batches), no Kafka; measured before and
  after the pipeline run and averaged;
- ``pipeline_eps``: events produced in advance, then a real worker (``dlstream inference run``) started;
  the rate is counted between its first and last prediction, so start-up is not in it;
- ``naive_eps``: the same for :mod:`services.bench.naive_agent` (one event at a time);
- ``p50_ms``/``p99_ms``: end to end (``ce_time`` to prediction produced) while events are offered at half
  of ``pipeline_eps`` to the same worker, after a few seconds at that load to settle.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from kafka import KafkaConsumer, TopicPartition

from pipelines.samples import held_out_payloads
from services.client.publisher import Outgoing, Publisher
from services.client.subscriber import subscribe
from services.common.contract import Modality, PredictionEvent
from services.common.kafka_admin import KafkaAdmin, client_options
from services.common.launch import worker_argv, worker_env
from services.common.net import free_ports
from services.common.settings import Settings
from services.common.triton_client import AsyncTriton

log = structlog.get_logger(__name__)

WARM_UP_SECONDS = 3.0


def rate_between(predictions: list[PredictionEvent]) -> float:
    """Predictions per second between the first and the last one produced (by their event time)."""
    stamps = sorted(datetime.fromisoformat(p.time.replace("Z", "+00:00")).timestamp() for p in predictions)
    if len(stamps) < 2 or stamps[-1] <= stamps[0]:
        raise ValueError("need at least two predictions produced at different times")
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def percentiles_ms(values: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``values``."""
    p50, p99 = np.percentile(np.array(values), [50, 99])
    return float(p50), float(p99)


async def direct_triton_eps(settings: Settings, model: str, payloads: list[bytes], batch: int) -> float:
    """Payloads per second through Triton, ``batch`` concurrent requests at a time as the workers send."""
    triton = AsyncTriton(settings.triton)
    try:
        await asyncio.gather(*(triton.infer(model, p) for p in payloads[:batch]))  # warm-up
        started = time.perf_counter()
        for i in range(0, len(payloads), batch):
            await asyncio.gather(*(triton.infer(model, p) for p in payloads[i : i + batch]))
        return len(payloads) / (time.perf_counter() - started)
    finally:
        await triton.close()


class StreamBench:
    """Runs the phases of the benchmark on private topics and removes them afterwards."""

    def __init__(self, settings: Settings, repository: Path, work_dir: Path, model: str) -> None:
        self.settings = settings
        self.repository = repository
        self.work_dir = work_dir
        self.model = model
        self.admin = KafkaAdmin(settings.kafka)
        self.prefixes: list[str] = []

    def deployment(self, name: str) -> Settings:
        """Settings with fresh topics and a fresh group named after ``name``, the model as image default."""
        prefix = f"bench.{name}.{uuid.uuid4().hex[:8]}"
        self.prefixes.append(prefix)
        topics = self.settings.topics.under(prefix)
        self.admin.ensure_topics(topics.all(), partitions=self.settings.kafka.partitions)
        inference = self.settings.inference
        models = {**inference.default_models, "image": self.model}
        return self.settings.model_copy(
            update={
                "topics": topics,
                "inference": inference.model_copy(
                    update={
                        "group_id": f"{prefix}.group",
                        "default_models": models,
                        "metrics_port": 0,
                        "web_port": free_ports(1, inference.bind_host)[0],
                    }
                ),
            }
        )

    @contextmanager
    def process(self, settings: Settings, argv: list[str], name: str) -> Iterator[subprocess.Popen[bytes]]:
        """A worker (or the naive baseline) on ``settings``, stopped with SIGTERM on exit."""
        env = worker_env(settings, repository=self.repository, data_dir=self.work_dir / "faust")
        with (self.work_dir / f"{name}.log").open("wb") as out:
            child = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                yield child
            finally:
                child.terminate()
                try:
                    child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()

    def publish(self, settings: Settings, payloads: list[bytes], rate: float | None = None) -> set[str]:
        """Publish the payloads as image events; returns their ids."""
        items = (Outgoing(p, "image/png", "bench") for p in payloads)
        with Publisher(settings, source="dlstream/bench") as publisher:
            sent = publisher.publish_all(Modality.IMAGE, items, rate=rate, total=len(payloads))
        return {event.id for event, _ in sent}

    def wait_for_records(self, settings: Settings, count: int, timeout_s: float = 300.0) -> None:
        """Block until the image prediction topic holds ``count`` records, by polling end offsets only.

        Reading and parsing predictions while the worker runs would take CPU from it and from Triton, so the
        throughput runs wait this way and read their predictions afterwards.
        """
        topic = settings.topics.prediction("image")
        consumer = KafkaConsumer(**client_options(settings.kafka), group_id=None, enable_auto_commit=False)
        try:
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])
            ]
            deadline = time.monotonic() + timeout_s
            while sum(consumer.end_offsets(partitions).values()) < count:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"fewer than {count} predictions after {timeout_s}s; see {self.work_dir}"
                    )
                time.sleep(0.25)
        finally:
            consumer.close()

    def collect(self, settings: Settings, ids: set[str]) -> list[PredictionEvent]:
        """The predictions of ``ids``; raises if some never arrive."""
        found = list(
            subscribe(settings, modalities=[Modality.IMAGE], ids=ids, follow=True, idle_timeout_s=60)
        )
        if len(found) != len(ids):
            raise RuntimeError(
                f"{len(ids) - len(found)} of {len(ids)} events got no prediction; see {self.work_dir}"
            )
        return found

    def cleanup(self) -> None:
        """Delete every topic this run created."""
        doomed = [t for t in self.admin.list_topics() if any(t.startswith(p) for p in self.prefixes)]
        self.admin.delete_topics(doomed)


def bench_stream(
    settings: Settings,
    repository: Path,
    *,
    model: str,
    events: int,
    naive_events: int,
    latency_seconds: float,
    work_dir: Path,
) -> dict[str, Any]:
    """Measure the pipeline, direct Triton and the naive agent on ``model`` (an image model)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    samples, _ = held_out_payloads(model, 0)
    payloads = [samples[i % len(samples)] for i in range(events)]
    batch = settings.inference.max_batch
    bench = StreamBench(settings, repository, work_dir, model)
    try:
        # Direct Triton is measured before and after the pipeline and averaged: on a shared machine its rate
        # drifts by 10-20 % between runs, and bracketing keeps that drift out of the ratio.
        directs = [asyncio.run(direct_triton_eps(settings, model, payloads, batch))]
        log.info("bench.direct", eps=round(directs[0], 1))

        pipeline_settings = bench.deployment("pipeline")
        ids = bench.publish(pipeline_settings, payloads)
        with bench.process(pipeline_settings, worker_argv(), "pipeline"):
            bench.wait_for_records(pipeline_settings, len(ids))
            pipeline = rate_between(bench.collect(pipeline_settings, ids))
            log.info("bench.pipeline", eps=round(pipeline, 1))
            offered = pipeline / 2
            # A few seconds at the offered load first: the worker settles after the backlog it just drained.
            warm_up = [samples[i % len(samples)] for i in range(int(offered * WARM_UP_SECONDS))]
            bench.collect(pipeline_settings, bench.publish(pipeline_settings, warm_up, rate=offered))
            count = max(50, int(offered * latency_seconds))
            paced = [samples[i % len(samples)] for i in range(count)]
            latency_ids = bench.publish(pipeline_settings, paced, rate=offered)
            latencies = [p.data.timing.total_ms for p in bench.collect(pipeline_settings, latency_ids)]
        p50, p99 = percentiles_ms(latencies)
        directs.append(asyncio.run(direct_triton_eps(settings, model, payloads, batch)))
        log.info("bench.direct", eps=round(directs[1], 1))
        direct = sum(directs) / len(directs)

        naive_settings = bench.deployment("naive")
        naive_ids = bench.publish(naive_settings, payloads[:naive_events])
        with bench.process(naive_settings, [sys.executable, "-m", "services.bench.naive_agent"], "naive"):
            bench.wait_for_records(naive_settings, len(naive_ids))
            naive = rate_between(bench.collect(naive_settings, naive_ids))
        log.info("bench.naive", eps=round(naive, 1))
    finally:
        bench.cleanup()
    return {
        "model": model,
        "max_batch": batch,
        "events": events,
        "naive_events": naive_events,
        "pipeline_eps": round(pipeline, 1),
        "direct_triton_eps": round(direct, 1),
        "direct_triton_runs": [round(d, 1) for d in directs],
        "overhead_ratio": round(pipeline / direct, 3),
        "naive_eps": round(naive, 1),
        "vs_naive": round(pipeline / naive, 2),
        "offered_eps": round(offered, 1),
        "latency_events": len(latencies),
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        "goals": {"overhead_ratio": 0.9, "vs_naive": 5.0},
    }
