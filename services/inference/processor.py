"""The inference step: a batch of consumed records in, exactly one prediction or dead letter per record out.

Records that break the contract, name a model not served, or carry a payload the model refuses become dead
letters. Transient failures (Triton down, a model reloading) are retried with exponential backoff for as long
as they last, and so is producing the outcomes; the batch is not finished, so nothing is committed and
consumption waits (backpressure).
``process`` returns only after every outcome is acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import structlog

from services.common.contract import KafkaRecord, Modality, RequestEvent, Timing, dead_letter, parse_request
from services.common.errors import ContractError, TransientError
from services.common.settings import Settings
from services.common.triton_client import Inference
from services.inference.health import WorkerState
from services.inference.metrics import InferenceMetrics
from services.inference.predictions import build_prediction
from services.inference.routing import choose_model, modality_of_topic

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """A record as consumed, with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class Sink(Protocol):
    """Where outcomes go; ``send_all`` returns once Kafka acknowledged every record."""

    async def send_all(self, records: Sequence[tuple[str, KafkaRecord]]) -> None:
        """Produce ``(topic, record)`` pairs and wait for all acknowledgements."""


Infer = Callable[[str, bytes], Awaitable[Inference]]


@dataclass
class Decision:
    """A batch after Triton: for each record index, its event and inference, or why it is a dead letter.

    Shaping the outcomes is left to :meth:`InferenceProcessor.deliver`, so that it runs while Triton already
    works on the next batch.
    """

    records: list[ConsumedRecord]
    results: dict[int, tuple[RequestEvent, Inference] | ContractError] = field(default_factory=dict)
    inference_ms: float = 0.0


@lru_cache(maxsize=64)
def _labels(repository: Path, model: str, version: str) -> tuple[str, ...]:
    return tuple(json.loads((repository / model / version / "labels.json").read_text()))


class InferenceProcessor:
    """Decides and produces the outcome of every record of a batch."""

    def __init__(
        self,
        settings: Settings,
        infer: Infer,
        sink: Sink,
        metrics: InferenceMetrics,
        *,
        repository: Path,
        state: WorkerState | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.infer = infer
        self.sink = sink
        self.metrics = metrics
        self.repository = repository
        self.state = state or WorkerState()
        self.sleep = sleep
        self.request_topics = {m.value: settings.topics.request(m) for m in Modality}

    async def process(self, records: Sequence[ConsumedRecord]) -> None:
        """Produce one outcome per record; returns after Kafka acknowledged all of them."""
        await self.deliver(await self.decide(records))

    async def decide(self, records: Sequence[ConsumedRecord]) -> Decision:
        """Validate every record and run the valid ones through Triton (retried while it is unavailable)."""
        self.metrics.batch_size.observe(len(records))
        decision = Decision(records=list(records))
        pending: dict[int, tuple[RequestEvent, str]] = {}
        for i, record in enumerate(records):
            self.metrics.events_in.labels(topic=record.topic).inc()
            try:
                modality = modality_of_topic(record.topic, self.request_topics)
                event = parse_request(
                    record.value,
                    record.headers,
                    modality=modality,
                    max_payload_bytes=self.settings.contract.max_payload_bytes,
                )
                pending[i] = (event, choose_model(event, self.settings.inference))
            except ContractError as error:
                decision.results[i] = error
        started = time.monotonic()
        for i, result in (await self._infer_with_retry(pending)).items():
            decision.results[i] = result if isinstance(result, ContractError) else (pending[i][0], result)
        decision.inference_ms = (time.monotonic() - started) * 1000
        return decision

    def outcomes(self, decision: Decision) -> list[tuple[str, KafkaRecord]]:
        """The prediction or dead letter of every record of a decided batch, in order."""
        assert len(decision.results) == len(decision.records), "every record must have an outcome"
        produced = []
        for i, record in enumerate(decision.records):
            result = decision.results[i]
            if isinstance(result, ContractError):
                produced.append(self._dead_letter(record, result))
            else:
                produced.append(self._prediction(*result, decision.inference_ms))
        return produced

    async def deliver(self, decision: Decision) -> None:
        """Produce the outcomes; returns once Kafka acknowledged all of them (retried while it cannot)."""
        produced = self.outcomes(decision)
        await self._send_with_retry(produced)
        dead = sum(1 for topic, _ in produced if topic == self.settings.topics.dlq)
        self.state.batches += 1
        self.state.last_batch_at = time.monotonic()
        log.info("inference.batch", events=len(produced), predictions=len(produced) - dead, dead_letters=dead)

    async def _infer_with_retry(
        self, pending: dict[int, tuple[RequestEvent, str]]
    ) -> dict[int, Inference | ContractError]:
        results: dict[int, Inference | ContractError] = {}
        todo = dict(pending)
        delay: float | None = None  # set once this stage waits
        while todo:
            indices = list(todo)
            began = time.monotonic()
            answers = await asyncio.gather(
                *(self.infer(todo[i][1], todo[i][0].data) for i in indices), return_exceptions=True
            )
            self.metrics.triton_seconds.observe(time.monotonic() - began)
            transient = []
            for i, answer in zip(indices, answers, strict=True):
                if isinstance(answer, Inference | ContractError):
                    results[i] = answer
                    del todo[i]
                elif isinstance(answer, TransientError):
                    transient.append(str(answer))
                else:
                    raise answer  # a bug, not an outcome: crash, and the batch is redelivered
            if todo:
                delay = await self._back_off(delay, "inference.retry", events=len(todo), error=transient[0])
        if delay is not None:
            self.state.end_wait()
        return results

    async def _back_off(self, delay: float | None, event: str, **fields: object) -> float:
        """Wait before a retry and return the wait that was used: the first one, then doubling up to the max.

        ``delay`` is None on a stage's first failure, which marks the worker as retrying until that stage
        gets through (``WorkerState.end_wait``).
        """
        retry = self.settings.inference
        delay = self.state.back_off(
            delay, initial_s=retry.retry_initial_s, max_s=retry.retry_max_s, now=time.monotonic()
        )
        self.metrics.retries.inc()
        log.warning(event, wait_s=round(delay, 2), **fields)
        await self.sleep(delay)
        return delay

    async def _send_with_retry(self, produced: Sequence[tuple[str, KafkaRecord]]) -> None:
        # Resending after a failed acknowledgement may duplicate a record; the SDK drops duplicates by id.
        delay: float | None = None  # set once this stage waits
        while True:
            try:
                await self.sink.send_all(produced)
            except TransientError as error:
                delay = await self._back_off(
                    delay, "inference.send_retry", records=len(produced), error=str(error)
                )
            else:
                if delay is not None:
                    self.state.end_wait()
                return

    def _prediction(
        self, event: RequestEvent, result: Inference, inference_ms: float
    ) -> tuple[str, KafkaRecord]:
        now = datetime.now(UTC)
        total_ms = max(0.0, (now - event.time).total_seconds() * 1000)
        prediction = build_prediction(
            event,
            model=result.model,
            model_version=result.model_version,
            labels=_labels(self.repository, result.model, result.model_version),
            probabilities=result.probabilities,
            embedding=result.embedding,
            timing=Timing(
                queued_ms=max(0.0, total_ms - inference_ms), inference_ms=inference_ms, total_ms=total_ms
            ),
            k=self.settings.inference.top_k,
            full_probabilities_max_classes=self.settings.inference.full_probabilities_max_classes,
        )
        self.metrics.predictions_out.labels(model=result.model).inc()
        topic = self.settings.topics.prediction(event.modality)
        return topic, prediction.to_kafka()

    def _dead_letter(self, record: ConsumedRecord, error: ContractError) -> tuple[str, KafkaRecord]:
        self.metrics.dead_letters.labels(reason=error.reason.value).inc()
        letter = dead_letter(
            key=record.key,
            value=record.value,
            headers=record.headers,
            error=error,
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
        )
        return self.settings.topics.dlq, letter.to_kafka()
