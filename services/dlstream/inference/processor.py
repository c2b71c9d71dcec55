"""The inference step: a batch of consumed records in, exactly one prediction or dead letter per record out.

Records that break the contract, name a model of another modality, or carry a payload the model refuses
become dead letters. Models come from the catalog that discovery keeps (Triton's own view); an event whose
model is not served *waits* apart from its batch (:meth:`InferenceProcessor.settle`) for
``model_wait_s``, then becomes a ``model-unavailable`` dead letter, so one missing model never stalls the
others. The routed events of a batch go to Triton in a few requests per model (a rejected request is sent
again event by event, so a bad payload fails alone). Transient failures (Triton down) are retried with
exponential backoff for as long as they last, and so is producing the outcomes; the batch is not finished,
so nothing is committed and consumption waits (backpressure).
``process`` returns only after every outcome is acknowledged by Kafka.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from dlstream.adapters.triton.answers import task_prediction
from dlstream.adapters.triton.client import Inference, PayloadRejected, near_equal_parts
from dlstream.config.settings import Settings
from dlstream.domain.catalog import ModelCatalog, ServedModel, Unavailable
from dlstream.domain.contract import KafkaRecord, Modality, RequestEvent, Timing, dead_letter, parse_request
from dlstream.domain.errors import ContractError, DeadLetterReason, ModelUnavailable, TransientError
from dlstream.inference.metrics import InferenceMetrics
from dlstream.inference.routing import modality_of_topic
from dlstream.runtime.health import WorkerState

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
    fetched_at: float | None = None  # wall-clock seconds when the worker received it from Kafka


class Sink(Protocol):
    """Where outcomes go; ``send_all`` returns once Kafka acknowledged every record."""

    async def send_all(self, records: Sequence[tuple[str, KafkaRecord]]) -> None:
        """Produce ``(topic, record)`` pairs and wait for all acknowledgements."""


Infer = Callable[[str, list[bytes], Sequence[str], str], Awaitable[list[Inference]]]
Catalog = Callable[[], ModelCatalog]
Answer = Inference | ContractError | ModelUnavailable
WAIT_POLL_S = 0.25


@dataclass(frozen=True)
class Waiting:
    """An event whose model is not served now: it waits for it apart from its batch. ``refused_under`` is
    the catalog under which Triton answered that the model is not loaded (tried again only under a newer
    one)."""

    index: int
    record: ConsumedRecord
    event: RequestEvent
    reason: str
    refused_under: ModelCatalog | None = None


@dataclass
class Decision:
    """A batch after Triton: for each record index, its event, model and inference, or why it is a dead
    letter; and the events that wait for their model.

    Shaping the outcomes is left to :meth:`InferenceProcessor.deliver`, so that it runs while Triton already
    works on the next batch.
    """

    records: list[ConsumedRecord]
    results: dict[int, tuple[RequestEvent, ServedModel, Inference] | ContractError] = field(
        default_factory=dict
    )
    waiting: list[Waiting] = field(default_factory=list)
    inference_started: float = 0.0  # wall-clock seconds
    inference_ms: float = 0.0

    @property
    def waiting_indices(self) -> list[int]:
        """Positions in the batch of the events that wait for their model."""
        return [w.index for w in self.waiting]

    def waiting_at(self, index: int) -> Waiting:
        """The waiting event at position ``index`` of the batch."""
        return next(w for w in self.waiting if w.index == index)


class InferenceProcessor:
    """Decides and produces the outcome of every record of a batch."""

    def __init__(
        self,
        settings: Settings,
        infer: Infer,
        sink: Sink,
        metrics: InferenceMetrics,
        *,
        catalog: Catalog,
        state: WorkerState | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.infer = infer
        self.sink = sink
        self.metrics = metrics
        self.catalog = catalog
        self.state = state or WorkerState()
        self.sleep = sleep
        self.clock = clock
        self.request_topics = {m.value: settings.topics.request(m) for m in Modality}

    async def process(self, records: Sequence[ConsumedRecord]) -> None:
        """Produce one outcome per record; returns after Kafka acknowledged all of them."""
        decision = await self.decide(records)
        await asyncio.gather(self.deliver(decision), *(self.settle(w) for w in decision.waiting))

    async def decide(self, records: Sequence[ConsumedRecord]) -> Decision:
        """Validate every record, route it through the catalog, and run the routed ones through Triton
        (retried while it is unavailable); events whose model is not served are set aside as waiting."""
        self.metrics.batch_size.observe(len(records))
        decision = Decision(records=list(records))
        pending: dict[int, tuple[RequestEvent, ServedModel]] = {}
        catalog = self.catalog()
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
                route = catalog.route(event.modality, event.model)
            except ContractError as error:
                decision.results[i] = error
                continue
            if isinstance(route, Unavailable):
                decision.waiting.append(Waiting(i, record, event, route.reason))
            else:
                pending[i] = (event, route)
        decision.inference_started = time.time()
        started = time.monotonic()
        for i, answer in (await self._infer_with_retry(pending)).items():
            event, model = pending[i]
            if isinstance(answer, ModelUnavailable):
                decision.waiting.append(Waiting(i, records[i], event, str(answer), catalog))
            elif isinstance(answer, ContractError):
                decision.results[i] = answer
            else:
                decision.results[i] = (event, model, answer)
        decision.inference_ms = (time.monotonic() - started) * 1000
        self.metrics.waiting.inc(len(decision.waiting))
        return decision

    def outcomes(self, decision: Decision) -> list[tuple[str, KafkaRecord]]:
        """The prediction or dead letter of every decided record of a batch, in order (waiting ones apart)."""
        waiting = {w.index for w in decision.waiting}
        assert len(decision.results) + len(waiting) == len(decision.records), "every record needs an outcome"
        produced = []
        for i, record in enumerate(decision.records):
            if i in waiting:
                continue
            result = decision.results[i]
            if isinstance(result, ContractError):
                produced.append(self._dead_letter(record, result))
            else:
                produced.append(self._outcome(record, *result, decision))
        return produced

    async def deliver(self, decision: Decision) -> None:
        """Produce the decided outcomes; returns once Kafka acknowledged all of them (retried while it
        cannot). Waiting events are :meth:`settle`'s."""
        produced = self.outcomes(decision)
        await self._send_with_retry(produced)
        dead = sum(1 for topic, _ in produced if topic == self.settings.topics.dlq)
        self.state.batches += 1
        self.state.last_batch_at = time.monotonic()
        log.info(
            "inference.batch",
            events=len(produced),
            predictions=len(produced) - dead,
            dead_letters=dead,
            waiting=len(decision.waiting),
        )

    async def settle(self, waiting: Waiting) -> None:
        """The outcome of an event whose model was not served: inferred once the catalog serves the model,
        else a ``model-unavailable`` dead letter after ``model_wait_s``; returns once Kafka acknowledged it.

        The wait's clock stops while Triton is unreachable (an outage, retried as long as it lasts, a
        restarting Triton loading its models included).
        """
        wait_s = self.settings.inference.model_wait_s
        deadline = self.clock() + wait_s
        reason = waiting.reason
        refused_under = waiting.refused_under
        try:
            while True:
                catalog = self.catalog()
                try:
                    route = catalog.route(waiting.event.modality, waiting.event.model)
                except ContractError as error:
                    outcome = self._dead_letter(waiting.record, error)
                    break
                if isinstance(route, ServedModel):
                    if catalog is not refused_under:
                        answer = (await self._infer_with_retry({0: (waiting.event, route)}))[0]
                        if isinstance(answer, Inference):
                            outcome = self._outcome(waiting.record, waiting.event, route, answer, None)
                            break
                        if isinstance(answer, ContractError):
                            outcome = self._dead_letter(waiting.record, answer)
                            break
                        reason, refused_under = str(answer), catalog
                else:
                    reason = route.reason
                    if not catalog.reachable:
                        deadline = max(deadline, self.clock() + wait_s)
                if self.clock() >= deadline:
                    unavailable = ContractError(
                        DeadLetterReason.MODEL_UNAVAILABLE, f"{reason} (waited {wait_s:g} s)"
                    )
                    outcome = self._dead_letter(waiting.record, unavailable)
                    break
                await self.sleep(WAIT_POLL_S)
            await self._send_with_retry([outcome])
        finally:
            self.metrics.waiting.dec()

    async def _infer_with_retry(
        self, pending: dict[int, tuple[RequestEvent, ServedModel]]
    ) -> dict[int, Answer]:
        results: dict[int, Answer] = {}
        todo = dict(pending)
        delay: float | None = None  # set once this stage waits
        while todo:
            requests = self._requests(todo)
            began = time.monotonic()
            answers = await asyncio.gather(
                *(self._infer_request(model, [todo[i][0] for i in indices]) for model, indices in requests)
            )
            self.metrics.triton_seconds.observe(time.monotonic() - began)
            transient = []
            for (_, indices), request_answers in zip(requests, answers, strict=True):
                for i, answer in zip(indices, request_answers, strict=True):
                    if isinstance(answer, TransientError) and not isinstance(answer, ModelUnavailable):
                        transient.append(str(answer))
                    else:
                        results[i] = answer
                        del todo[i]
            if todo:
                delay = await self._back_off(delay, "inference.retry", events=len(todo), error=transient[0])
        if delay is not None:
            self.state.end_wait()
        return results

    def _requests(
        self, todo: dict[int, tuple[RequestEvent, ServedModel]]
    ) -> list[tuple[ServedModel, list[int]]]:
        """The Triton requests for ``todo``: its indices grouped by model, in near-equal requests of at most
        ``request_size`` (and the model's ``max_batch_size``), in order."""
        by_model: dict[str, tuple[ServedModel, list[int]]] = {}
        for i, (_, model) in todo.items():
            by_model.setdefault(model.name, (model, []))[1].append(i)
        requests: list[tuple[ServedModel, list[int]]] = []
        for model, indices in by_model.values():
            size = min(self.settings.inference.request_size, model.card.max_batch_size)
            requests.extend((model, part) for part in near_equal_parts(indices, size))
        return requests

    async def _infer_request(
        self, model: ServedModel, events: list[RequestEvent]
    ) -> list[Answer | TransientError]:
        """Each event's answer from one request for ``events``. A request fails as a whole, so a rejected
        one is sent again event by event: a bad payload is dead-lettered alone."""
        card = model.card
        try:
            payloads = [event.data for event in events]
            return list(await self.infer(model.name, payloads, card.output_names(), card.payload_input))
        except PayloadRejected as error:
            if len(events) == 1:
                return [error]
            singles = await asyncio.gather(*(self._infer_request(model, [event]) for event in events))
            return [answer for (answer,) in singles]
        except (ContractError, TransientError) as error:
            return [error] * len(events)

    async def _back_off(self, delay: float | None, event: str, **fields: object) -> float:
        """Wait before a retry and return the wait that was used: the first one, then doubling up to the max.

        ``delay`` is None on a stage's first failure, which marks the worker as retrying until that stage
        gets through (``WorkerState.end_wait``).
        """
        retry = self.settings.retry
        delay = self.state.back_off(delay, initial_s=retry.initial_s, max_s=retry.max_s, now=time.monotonic())
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

    def _outcome(
        self,
        record: ConsumedRecord,
        event: RequestEvent,
        model: ServedModel,
        result: Inference,
        decision: Decision | None,
    ) -> tuple[str, KafkaRecord]:
        """The prediction of one inferred event (``decision``: its batch; None for an event that waited), or
        its dead letter when the model's output does not fit its card."""
        timing = self._timing(event, record.fetched_at, decision)
        try:
            prediction = task_prediction(
                event,
                model.card,
                result,
                timing=timing,
                k=self.settings.inference.top_k,
                full_probabilities_max_classes=self.settings.inference.full_probabilities_max_classes,
            )
        except ContractError as error:
            return self._dead_letter(record, error)
        self.metrics.predictions_out.labels(model=result.model).inc()
        return self.settings.topics.prediction(event.modality), prediction.to_kafka()

    @staticmethod
    def _timing(event: RequestEvent, fetched_at: float | None, decision: Decision | None) -> Timing:
        now = time.time()
        created = event.time.timestamp()
        total_ms = max(0.0, (now - created) * 1000)
        if decision is None:
            return Timing(queued_ms=total_ms, inference_ms=0.0, total_ms=total_ms)
        started, inference_ms = decision.inference_started, decision.inference_ms
        parts: dict[str, float] = {}
        if fetched_at is not None:
            parts = {
                "kafka_ms": max(0.0, (fetched_at - created) * 1000),
                "batch_ms": max(0.0, (started - fetched_at) * 1000),
                "outcome_ms": max(0.0, (now - started) * 1000 - inference_ms),
            }
        return Timing(
            queued_ms=max(0.0, (started - created) * 1000),
            inference_ms=inference_ms,
            total_ms=total_ms,
            **parts,
        )

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
