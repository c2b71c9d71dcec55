"""Events whose model is not served wait apart from their batch, for a bounded time (fakes, no I/O)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from dlstream.adapters.triton.client import Inference, PayloadRejected
from dlstream.config.settings import load_settings
from dlstream.domain.card import ModelCard
from dlstream.domain.catalog import ModelCatalog, catalog_from_triton
from dlstream.domain.contract import DeadLetter, KafkaRecord, Modality, PredictionEvent, new_request
from dlstream.domain.errors import ModelUnavailable
from dlstream.inference.metrics import InferenceMetrics
from dlstream.inference.processor import ConsumedRecord, InferenceProcessor
from tests.cards import card, config_of

pytestmark = pytest.mark.unit

DIGITS = card("digits", labels=2, default=True)
TOPICS = card("topics", Modality.TEXT, labels=2)


def catalog(*models: ModelCard, reachable: bool = True) -> ModelCatalog:
    index = [{"name": m.name, "version": "1", "state": "READY"} for m in models]
    found = catalog_from_triton(index, {m.name: config_of(m) for m in models})
    return found if reachable else ModelCatalog(models=found.models, reachable=False)


class Sink:
    """Keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, KafkaRecord]] = []

    async def send_all(self, records: Sequence[tuple[str, KafkaRecord]]) -> None:
        self.sent.extend(records)


def answer(model: str) -> Inference:
    """What the fake Triton answers for one payload."""
    return Inference(
        model, "1", {"PROBABILITIES": np.array([0.3, 0.7], np.float32), "EMBEDDING": np.zeros(8, np.float32)}
    )


class World:
    """A processor over a catalog that the test changes, with a clock that sleeping advances."""

    def __init__(self, current: ModelCatalog, *, wait_s: float = 10.0) -> None:
        self.current = current
        self.now = 0.0
        self.sink = Sink()
        self.calls: list[str] = []
        self.unloaded: set[str] = set()
        self.on_sleep: list[tuple[float, ModelCatalog]] = []
        settings = load_settings(inference={"model_wait_s": wait_s})
        self.processor = InferenceProcessor(
            settings,
            self.infer,
            self.sink,
            InferenceMetrics(),
            catalog=lambda: self.current,
            sleep=self.sleep,
            clock=lambda: self.now,
        )

    async def infer(
        self, model: str, payloads: list[bytes], outputs: Sequence[str], input_name: str
    ) -> list[Inference]:
        self.calls.append(model)
        if model in self.unloaded:
            raise ModelUnavailable(f"Request for unknown model: '{model}' is not found")
        return [answer(model) for _ in payloads]

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        while self.on_sleep and self.on_sleep[0][0] <= self.now:
            self.current = self.on_sleep.pop(0)[1]

    def record(self, modality: Modality, model: str | None, offset: int) -> ConsumedRecord:
        content = "text/plain" if modality is Modality.TEXT else "image/png"
        event = new_request(modality, b"x", content_type=content, source="t", model=model).to_kafka()
        topic = f"events.{modality.value}"
        return ConsumedRecord(topic, 0, offset, event.key, event.value, event.headers)

    def outcomes(self) -> list[tuple[str, str]]:
        """(topic, model or dead-letter reason) per outcome, in order."""
        result = []
        for topic, record in self.sink.sent:
            if topic == "events.dlq":
                letter = DeadLetter.from_kafka(record.key, record.value, record.headers)
                result.append((topic, letter.reason.value))
            else:
                result.append((topic, PredictionEvent.from_kafka(record.value).data.model))
        return result


def test_an_event_for_a_missing_model_waits_apart_while_the_batch_is_delivered() -> None:
    world = World(catalog(DIGITS, TOPICS))
    records = [
        world.record(Modality.IMAGE, None, 0),
        world.record(Modality.IMAGE, "shapes", 1),
        world.record(Modality.TEXT, None, 2),
    ]

    async def run() -> list[tuple[str, str]]:
        decision = await world.processor.decide(records)
        assert [w.index for w in decision.waiting] == [1]
        await world.processor.deliver(decision)
        delivered = world.outcomes()
        await world.processor.settle(decision.waiting[0])
        return delivered

    delivered = asyncio.run(run())
    assert delivered == [("predictions.image", "digits"), ("predictions.text", "topics")]
    assert world.outcomes()[-1] == ("events.dlq", "model-unavailable")
    assert 10.0 <= world.now < 10.6


def test_a_model_loaded_during_the_wait_serves_the_waiting_event() -> None:
    shapes = card("shapes", labels=2)
    world = World(catalog(DIGITS))
    world.on_sleep.append((3.0, catalog(DIGITS, shapes)))
    asyncio.run(world.processor.process([world.record(Modality.IMAGE, "shapes", 0)]))
    assert world.outcomes() == [("predictions.image", "shapes")]
    assert 3.0 <= world.now < 3.6


def test_the_clock_stops_while_triton_is_unreachable() -> None:
    shapes = card("shapes", labels=2)
    world = World(catalog(DIGITS, reachable=False), wait_s=5.0)
    world.on_sleep += [(20.0, catalog(DIGITS, reachable=False)), (40.0, catalog(DIGITS, shapes))]
    asyncio.run(world.processor.process([world.record(Modality.IMAGE, "shapes", 0)]))
    assert world.outcomes() == [("predictions.image", "shapes")]


def test_a_model_unloaded_after_routing_makes_its_events_wait_then_dead_letters() -> None:
    world = World(catalog(DIGITS), wait_s=2.0)
    world.unloaded.add("digits")
    world.on_sleep.append((0.5, catalog()))
    asyncio.run(world.processor.process([world.record(Modality.IMAGE, None, 0)]))
    assert world.outcomes() == [("events.dlq", "model-unavailable")]
    assert world.calls == ["digits"]


def test_a_model_with_the_wrong_number_of_outputs_is_a_dead_letter_not_a_crash() -> None:
    world = World(catalog(card("three", labels=3, default=True)))
    asyncio.run(world.processor.process([world.record(Modality.IMAGE, None, 0)]))
    assert world.outcomes() == [("events.dlq", "bad-model-output")]


def test_a_batch_goes_in_small_requests_per_model_and_a_rejected_request_again_event_by_event() -> None:
    digits = card("digits", labels=2, default=True).model_copy(update={"max_batch_size": 3})
    world = World(catalog(digits, TOPICS))
    requests: list[tuple[str, int]] = []

    async def infer(
        model: str, payloads: list[bytes], outputs: Sequence[str], input_name: str
    ) -> list[Inference]:
        requests.append((model, len(payloads)))
        if b"bad" in payloads:
            raise PayloadRejected("cannot identify image file")
        return [answer(model) for _ in payloads]

    world.processor.infer = infer
    records = [world.record(Modality.IMAGE, None, i) for i in range(5)]
    records.insert(1, world.record(Modality.TEXT, None, 5))
    bad = new_request(Modality.IMAGE, b"bad", content_type="image/png", source="t").to_kafka()
    records.insert(4, ConsumedRecord("events.image", 0, 6, bad.key, bad.value, bad.headers))
    asyncio.run(world.processor.process(records))
    # digits: 6 events in requests of at most 3; the request holding the bad payload is sent again one by one
    assert requests == [("digits", 3), ("digits", 3), ("topics", 1)] + [("digits", 1)] * 3
    outcomes = world.outcomes()
    assert len(outcomes) == len(records)
    assert outcomes[4] == ("events.dlq", "undecodable-payload")
    assert outcomes.count(("predictions.image", "digits")) == 5
    assert outcomes[1] == ("predictions.text", "topics")
    # At most ``request_size`` events per request, in near-equal requests
    requests.clear()
    settings = world.processor.settings
    inference = settings.inference.model_copy(update={"request_size": 2})
    world.processor.settings = settings.model_copy(update={"inference": inference})
    asyncio.run(world.processor.process(records[:4] + records[5:]))  # 5 digits, no bad one
    assert requests == [("digits", 2), ("digits", 2), ("digits", 1), ("topics", 1)]
