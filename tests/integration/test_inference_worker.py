"""A real inference worker (Faust, own process) on the session's Kafka and Triton: every event one outcome."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlstream.config.settings import Settings
from dlstream.domain.card import read_card
from dlstream.domain.contract import DeadLetter, Modality, PredictionEvent, RequestEvent, new_request
from dlstream.tools.demo import CONTENT_TYPES
from tests.integration.conftest import PROJECT_ROOT, TopicFactory
from tests.integration.drift import wait_for
from tests.integration.workers import (
    MODELS,
    Worker,
    deployment_settings,
    held_out_events,
    producer,
    raw_outcomes,
    send_samples,
    wait_for_predictions,
)

pytestmark = pytest.mark.integration

PER_MODALITY = 1000
PAYLOAD_LIMIT = 256 * 1024
# The same held-out samples run through the pipeline as through the build's evaluation; batching and
# transport must not cost accuracy beyond the noise of repeating some samples to reach 1,000 per modality.
ACCURACY_TOLERANCE = 0.03


@pytest.fixture
def deployed(settings: Settings, topics: TopicFactory, group_id: str) -> Settings:
    limited = settings.model_copy(
        update={"contract": settings.contract.model_copy(update={"max_payload_bytes": PAYLOAD_LIMIT})}
    )
    # An event naming a model Triton does not serve waits this long for it, then is dead-lettered.
    return deployment_settings(limited, topics, group_id, model_wait_s=5.0)


@pytest.fixture
def worker(deployed: Settings, tmp_path: Path) -> Iterator[Worker]:
    running = Worker(deployed, tmp_path / "worker.log").start()
    try:
        yield running
    finally:
        running.stop()


def bad_inputs(
    settings: Settings,
) -> dict[str, tuple[str, RequestEvent, list[tuple[str, bytes]] | None, str]]:
    """Twelve kinds of bad input: name -> (modality topic, event, header override, expected dlq-reason)."""
    t = settings.topics

    def ev(
        modality: Modality, data: bytes, content_type: str | None = None, model: str | None = None
    ) -> RequestEvent:
        return new_request(
            modality,
            data,
            content_type=content_type or CONTENT_TYPES[modality],
            source="tests/bad",
            model=model,
        )

    def without(event: RequestEvent, name: str) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in event.to_kafka().headers if k != name]

    def replaced(event: RequestEvent, name: str, value: bytes) -> list[tuple[str, bytes]]:
        return [(k, value if k == name else v) for k, v in event.to_kafka().headers]

    png = ev(Modality.IMAGE, b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    wav = ev(Modality.AUDIO, b"RIFF\x24\x10\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00")
    empty = ev(Modality.IMAGE, b"")
    utf8 = ev(Modality.TEXT, b"caf\xc3 au lait")
    wrong_type = ev(Modality.IMAGE, b"GIF89a....", content_type="image/gif")
    oversize = ev(Modality.IMAGE, b"\x00" * (settings.contract.max_payload_bytes + 1))
    no_id = ev(Modality.TEXT, b"no id here")
    unknown_model = ev(Modality.IMAGE, b"\x89PNG", model="resnet9000")
    other_modality = ev(Modality.TEXT, b"a text for the digits model", model="digits")
    spec = ev(Modality.TEXT, b"old spec")
    naive_time = ev(Modality.TEXT, b"no offset")
    repeated = ev(Modality.TEXT, b"two ids")
    return {
        "corrupt-png": (t.image, png, None, "undecodable-payload"),
        "truncated-wav": (t.audio, wav, None, "undecodable-payload"),
        "zero-length": (t.image, empty, None, "empty-payload"),
        "invalid-utf8": (t.text, utf8, None, "invalid-utf8"),
        "wrong-content-type": (t.image, wrong_type, None, "wrong-content-type"),
        "oversize": (t.image, oversize, None, "oversize"),
        "missing-ce_id": (t.text, no_id, without(no_id, "ce_id"), "missing-header"),
        "unknown-model": (t.image, unknown_model, None, "model-unavailable"),
        "model-of-another-modality": (t.text, other_modality, None, "unknown-model"),
        "unsupported-specversion": (
            t.text,
            spec,
            replaced(spec, "ce_specversion", b"0.3"),
            "unsupported-specversion",
        ),
        "time-without-offset": (
            t.text,
            naive_time,
            replaced(naive_time, "ce_time", b"2026-01-01T00:00:00"),
            "bad-header",
        ),
        "repeated-header": (
            t.text,
            repeated,
            [*repeated.to_kafka().headers, ("ce_id", b"other")],
            "bad-header",
        ),
    }


def test_3000_events_and_12_kinds_of_bad_input_each_end_as_one_outcome(
    deployed: Settings, worker: Worker
) -> None:
    samples = [s for m in Modality for s in held_out_events(m, PER_MODALITY)]
    good = {s.event.id: s for s in samples}
    bad = bad_inputs(deployed)
    kafka = producer(deployed)
    try:
        # Bad inputs go in among the good ones, so good events before and after them share their batches.
        half = len(samples) // 2
        send_samples(kafka, deployed, samples[:half])
        for topic, event, headers, _ in bad.values():
            record = event.to_kafka()
            kafka.send(topic, key=record.key, value=record.value, headers=headers or record.headers)
        send_samples(kafka, deployed, samples[half:])
        kafka.flush(timeout=60)
    finally:
        kafka.close(timeout=10)

    found = wait_for_predictions(deployed, set(good))
    assert worker.running, f"the worker died; see {worker.log_path}"
    assert len(found) == len(good), f"{len(good) - len(found)} good events without a prediction"

    def every_letter() -> tuple[list[PredictionEvent], list[DeadLetter]] | None:
        outcomes = raw_outcomes(deployed)
        return outcomes if len(outcomes[1]) >= len(bad) else None

    predictions, letters = wait_for(every_letter, timeout_s=120, what="a dead letter per bad event")
    assert len(predictions) == len(good), "a prediction was produced twice without any crash"
    assert sorted(d.reason.value for d in letters) == sorted(reason for *_, reason in bad.values())
    assert all(d.error for d in letters)

    for modality in Modality:
        mine = [p for p in found.values() if good[p.data.request_id].modality is modality]
        assert len(mine) == PER_MODALITY
        assert {p.data.model for p in mine} == {MODELS[modality]}
        version_dir = PROJECT_ROOT / "model_repo" / MODELS[modality] / mine[0].data.model_version
        labels = read_card(version_dir).labels
        built = json.loads((version_dir / "metrics.json").read_text())["accuracy"]
        correct = sum(labels.index(p.classification.label) == good[p.data.request_id].label for p in mine)
        print(f"{modality.value}: top-1 {correct / len(mine):.4f} in the stream, {built:.4f} at build")
        assert correct / len(mine) >= built - ACCURACY_TOLERANCE, (
            f"{modality}: {correct}/{len(mine)} vs {built}"
        )
        counts = Counter(p.data.model_version for p in mine)
        assert len(counts) == 1, counts
