"""A real inference worker (Faust, own process) on the session's Kafka and Triton: every event one outcome."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer

from pipelines.samples import held_out_payloads
from services.common.contract import DeadLetter, Modality, PredictionEvent, RequestEvent, new_request
from services.common.kafka_admin import client_options
from services.common.settings import Settings
from tests.integration.conftest import PROJECT_ROOT, TopicFactory, free_ports

PER_MODALITY = 100
PAYLOAD_LIMIT = 256 * 1024
CONTENT_TYPES = {Modality.IMAGE: "image/png", Modality.AUDIO: "audio/wav", Modality.TEXT: "text/plain"}
MODELS = {Modality.IMAGE: "digits", Modality.AUDIO: "speech_digits", Modality.TEXT: "text_topics"}


@dataclass
class Deployment:
    """Per-test topics and the settings a worker for them needs, as environment variables."""

    settings: Settings
    env: dict[str, str]


@pytest.fixture
def deployment(settings: Settings, topics: TopicFactory, group_id: str) -> Deployment:
    names = {m: topics.create(f"events.{m}") for m in ("image", "audio", "text")}
    prefix = f"{topics.prefix}.predictions."
    for m in ("image", "audio", "text"):
        topics.create(f"predictions.{m}")
    dlq = topics.create("dlq")
    web, metrics = free_ports(2)
    test_settings = settings.model_copy(
        update={
            "topics": settings.topics.model_copy(
                update={
                    "image": names["image"],
                    "audio": names["audio"],
                    "text": names["text"],
                    "predictions_prefix": prefix,
                    "dlq": dlq,
                }
            ),
            "contract": settings.contract.model_copy(update={"max_payload_bytes": PAYLOAD_LIMIT}),
            "inference": settings.inference.model_copy(
                update={"group_id": group_id, "web_port": web, "metrics_port": metrics}
            ),
        }
    )
    t = test_settings.triton
    env = {
        **os.environ,
        "DLSTREAM_KAFKA__BOOTSTRAP_SERVERS": test_settings.kafka.bootstrap_servers,
        "DLSTREAM_TRITON__GRPC_PORT": str(t.grpc_port),
        "DLSTREAM_TRITON__HTTP_PORT": str(t.http_port),
        "DLSTREAM_TOPICS__IMAGE": names["image"],
        "DLSTREAM_TOPICS__AUDIO": names["audio"],
        "DLSTREAM_TOPICS__TEXT": names["text"],
        "DLSTREAM_TOPICS__PREDICTIONS_PREFIX": prefix,
        "DLSTREAM_TOPICS__DLQ": dlq,
        "DLSTREAM_INFERENCE__GROUP_ID": group_id,
        "DLSTREAM_INFERENCE__WEB_PORT": str(web),
        "DLSTREAM_INFERENCE__METRICS_PORT": str(metrics),
        "DLSTREAM_LOG__JSON_LOGS": "true",
        "DLSTREAM_CONTRACT__MAX_PAYLOAD_BYTES": str(PAYLOAD_LIMIT),
    }
    return Deployment(test_settings, env)


@pytest.fixture
def worker(deployment: Deployment, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "dlstream"), "inference", "run"],
        cwd=PROJECT_ROOT,
        env=deployment.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _send(
    producer: KafkaProducer, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
) -> None:
    producer.send(topic, key=key, value=value, headers=headers)


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
        "unknown-model": (t.image, unknown_model, None, "unknown-model"),
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


def test_every_event_ends_as_one_prediction_or_one_dead_letter(
    deployment: Deployment, worker: subprocess.Popen[bytes]
) -> None:
    settings = deployment.settings
    t = settings.topics
    good: dict[str, tuple[Modality, int]] = {}
    producer = KafkaProducer(
        **client_options(settings.kafka),
        acks="all",
        enable_idempotence=True,
        max_request_size=4 * 1024 * 1024,
    )
    try:
        for modality, topic in (
            (Modality.IMAGE, t.image),
            (Modality.AUDIO, t.audio),
            (Modality.TEXT, t.text),
        ):
            payloads, labels = held_out_payloads(MODELS[modality], 0)
            assert labels is not None
            for payload, label in list(zip(payloads, labels, strict=True))[:PER_MODALITY]:
                event = new_request(
                    modality, payload, content_type=CONTENT_TYPES[modality], source="tests/good"
                )
                record = event.to_kafka()
                _send(producer, topic, record.key, record.value, record.headers)
                good[event.id] = (modality, label)
        bad = bad_inputs(settings)
        expected_reason: dict[str, str] = {}
        for name, (topic, event, headers, reason) in bad.items():
            record = event.to_kafka()
            _send(
                producer, topic, record.key, record.value, headers if headers is not None else record.headers
            )
            expected_reason[name] = reason
        producer.flush(timeout=60)
    finally:
        producer.close(timeout=10)

    consumer = KafkaConsumer(
        f"{t.predictions_prefix}image",
        f"{t.predictions_prefix}audio",
        f"{t.predictions_prefix}text",
        t.dlq,
        **client_options(settings.kafka),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    predictions: list[PredictionEvent] = []
    letters: list[DeadLetter] = []
    deadline = time.monotonic() + 240
    try:
        while len(predictions) + len(letters) < len(good) + len(bad) and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker died"
            for message in consumer:
                if message.topic == t.dlq:
                    letters.append(DeadLetter.from_kafka(message.key, message.value, message.headers))
                else:
                    predictions.append(PredictionEvent.from_kafka(message.value))
        time.sleep(2)  # anything produced twice would show up now
        for message in consumer:
            if message.topic == t.dlq:
                letters.append(DeadLetter.from_kafka(message.key, message.value, message.headers))
            else:
                predictions.append(PredictionEvent.from_kafka(message.value))
    finally:
        consumer.close()

    ids = Counter(p.data.request_id for p in predictions)
    assert set(ids) == set(good), f"{len(set(good) - set(ids))} good events without a prediction"
    assert max(ids.values()) == 1
    assert len(letters) == len(bad), [(d.reason.value, d.error) for d in letters]
    assert sorted(d.reason.value for d in letters) == sorted(expected_reason.values())
    assert all(d.error for d in letters)
    for modality in (Modality.IMAGE, Modality.AUDIO, Modality.TEXT):
        mine = [p for p in predictions if good[p.data.request_id][0] is modality]
        version = mine[0].data.model_version
        labels = json.loads(
            (PROJECT_ROOT / "model_repo" / MODELS[modality] / version / "labels.json").read_text()
        )
        correct = sum(labels.index(p.data.label) == good[p.data.request_id][1] for p in mine)
        assert correct / len(mine) >= 0.8, f"{modality}: {correct}/{len(mine)}"
        assert all(p.data.model == MODELS[modality] for p in mine)
