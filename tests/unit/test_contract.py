"""The wire contract: every rule says exactly what is wrong."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dlstream.domain.contract import (
    DeadLetter,
    Modality,
    PredictionData,
    PredictionEvent,
    ScoredLabel,
    Timing,
    dead_letter,
    new_request,
    parse_request,
    strip_dead_letter_headers,
)
from dlstream.domain.errors import ContractError, DeadLetterReason

pytestmark = pytest.mark.unit

LIMIT = 1024
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def _headers(**overrides: bytes | None) -> list[tuple[str, bytes]]:
    base: dict[str, bytes | None] = {
        "ce_specversion": b"1.0",
        "ce_id": b"req-1",
        "ce_source": b"tests/unit",
        "ce_type": b"io.dlstream.request.image",
        "ce_time": b"2026-11-21T10:00:00.000Z",
        "content-type": b"image/png",
    }
    base.update(overrides)
    return [(k, v) for k, v in base.items() if v is not None]


def _parse(value: bytes | None = PNG, modality: Modality = Modality.IMAGE, **headers: bytes | None) -> object:
    return parse_request(value, _headers(**headers), modality=modality, max_payload_bytes=LIMIT)


def test_request_round_trips_through_binary_mode() -> None:
    event = new_request(
        Modality.AUDIO,
        b"RIFF....WAVE",
        content_type="audio/wav",
        source="tests",
        model="speech_digits",
        time=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    )
    record = event.to_kafka()
    assert record.key == event.id.encode()
    assert ("ce_time", b"2026-01-02T03:04:05.678Z") in record.headers
    parsed = parse_request(record.value, record.headers, modality=Modality.AUDIO, max_payload_bytes=LIMIT)
    assert parsed == event


def test_producer_may_choose_another_partition_key() -> None:
    event = new_request(Modality.TEXT, b"hi", content_type="text/plain; charset=utf-8", source="s")
    assert event.to_kafka(key=b"user-42").key == b"user-42"


@pytest.mark.parametrize(
    ("headers", "value", "modality", "reason", "fragment"),
    [
        ({"ce_id": None}, PNG, Modality.IMAGE, DeadLetterReason.MISSING_HEADER, "'ce_id' is missing"),
        ({"ce_source": b"  "}, PNG, Modality.IMAGE, DeadLetterReason.MISSING_HEADER, "'ce_source' is empty"),
        ({"content-type": None}, PNG, Modality.IMAGE, DeadLetterReason.MISSING_HEADER, "'content-type'"),
        ({"ce_specversion": b"0.3"}, PNG, Modality.IMAGE, DeadLetterReason.UNSUPPORTED_SPECVERSION, "'0.3'"),
        ({"ce_time": b"yesterday"}, PNG, Modality.IMAGE, DeadLetterReason.BAD_HEADER, "not RFC 3339"),
        (
            {"ce_time": b"2026-11-21T10:00:00"},
            PNG,
            Modality.IMAGE,
            DeadLetterReason.BAD_HEADER,
            "no UTC offset",
        ),
        ({"ce_id": b"\xff\xfe"}, PNG, Modality.IMAGE, DeadLetterReason.BAD_HEADER, "not UTF-8"),
        (
            {"content-type": b"image/gif"},
            PNG,
            Modality.IMAGE,
            DeadLetterReason.WRONG_CONTENT_TYPE,
            "image/gif",
        ),
        (
            {"content-type": b"image/png"},
            b"x",
            Modality.TEXT,
            DeadLetterReason.WRONG_CONTENT_TYPE,
            "text topic",
        ),
        (
            {"content-type": b"text/plain; charset=latin-1"},
            b"x",
            Modality.TEXT,
            DeadLetterReason.WRONG_CONTENT_TYPE,
            "latin-1",
        ),
        (
            {"ce_model": b"../etc/passwd"},
            PNG,
            Modality.IMAGE,
            DeadLetterReason.BAD_HEADER,
            "valid model name",
        ),
        ({}, b"", Modality.IMAGE, DeadLetterReason.EMPTY_PAYLOAD, "empty"),
        ({}, None, Modality.IMAGE, DeadLetterReason.EMPTY_PAYLOAD, "empty"),
        ({}, b"x" * (LIMIT + 1), Modality.IMAGE, DeadLetterReason.OVERSIZE, f"{LIMIT + 1} bytes"),
        (
            {"content-type": b"text/plain"},
            b"caf\xc3",
            Modality.TEXT,
            DeadLetterReason.INVALID_UTF8,
            "byte 3",
        ),
    ],
)
def test_each_broken_rule_has_its_own_reason_and_message(
    headers: dict[str, bytes | None],
    value: bytes | None,
    modality: Modality,
    reason: DeadLetterReason,
    fragment: str,
) -> None:
    with pytest.raises(ContractError) as caught:
        _parse(value, modality, **headers)
    assert caught.value.reason is reason
    assert fragment in caught.value.message


def test_a_repeated_header_is_refused() -> None:
    headers = [*_headers(), ("ce_id", b"req-2")]
    with pytest.raises(ContractError, match="appears 2 times") as caught:
        parse_request(PNG, headers, modality=Modality.IMAGE, max_payload_bytes=LIMIT)
    assert caught.value.reason is DeadLetterReason.BAD_HEADER


def test_payload_exactly_at_the_limit_is_accepted() -> None:
    parsed = _parse(b"x" * LIMIT)
    assert isinstance(parsed, object)


def test_extension_attributes_and_model_are_kept() -> None:
    parsed = parse_request(
        PNG,
        [*_headers(ce_model=b"digits"), ("ce_traceparent", b"00-abc-def-01")],
        modality=Modality.IMAGE,
        max_payload_bytes=LIMIT,
    )
    assert parsed.model == "digits"
    assert parsed.extensions == {"traceparent": "00-abc-def-01"}


def test_content_type_parameters_and_case_are_tolerated() -> None:
    parsed = _parse(b"hello", Modality.TEXT, **{"content-type": b"Text/Plain; charset=UTF-8"})
    assert parsed is not None


def _prediction() -> PredictionEvent:
    return PredictionEvent(
        source="dlstream/inference",
        subject="req-1",
        data=PredictionData(
            request_id="req-1",
            modality=Modality.IMAGE,
            model="digits",
            model_version="1",
            label="7",
            score=0.93,
            top_k=[ScoredLabel(label="7", score=0.93), ScoredLabel(label="1", score=0.05)],
            probabilities=[0.0] * 10,
            embedding=[0.1, -0.2],
            timing=Timing(queued_ms=1.0, inference_ms=2.5, total_ms=4.0),
        ),
    )


def test_prediction_round_trips_in_structured_mode_keyed_by_request_id() -> None:
    event = _prediction()
    record = event.to_kafka()
    assert record.key == b"req-1"
    assert record.headers == [("content-type", b"application/cloudevents+json; charset=utf-8")]
    assert PredictionEvent.from_kafka(record.value) == event


def test_a_broken_prediction_is_refused() -> None:
    with pytest.raises(ContractError, match="not a prediction event"):
        PredictionEvent.from_kafka(b'{"specversion": "1.0"}')


def test_dead_letter_keeps_the_original_record_and_says_why() -> None:
    original = _headers()
    error = ContractError(DeadLetterReason.OVERSIZE, "too big")
    letter = dead_letter(
        key=b"req-1",
        value=PNG,
        headers=[*original, ("dlq-reason", b"stale")],
        error=error,
        source_topic="events.image",
        source_partition=3,
        source_offset=42,
        now=datetime(2026, 11, 21, tzinfo=UTC),
    )
    record = letter.to_kafka()
    assert record.value == PNG
    assert record.key == b"req-1"
    assert record.headers[: len(original)] == original
    assert dict(record.headers[len(original) :]) == {
        "dlq-reason": b"oversize",
        "dlq-error": b"too big",
        "dlq-source-topic": b"events.image",
        "dlq-source-partition": b"3",
        "dlq-source-offset": b"42",
        "dlq-time": b"2026-11-21T00:00:00.000Z",
    }
    decoded = DeadLetter.from_kafka(record.key, record.value, record.headers)
    assert decoded == letter
    assert strip_dead_letter_headers(record.headers) == original


def test_a_record_without_dead_letter_headers_is_not_a_dead_letter() -> None:
    with pytest.raises(ContractError, match="dlq-reason"):
        DeadLetter.from_kafka(None, b"x", _headers())


def test_timing_without_its_parts_or_with_fields_added_later_still_parses() -> None:
    old = Timing.model_validate({"queued_ms": 1.0, "inference_ms": 2.0, "total_ms": 3.5})
    assert old.kafka_ms is None
    assert old.batch_ms is None
    assert old.outcome_ms is None
    newer = Timing.model_validate(
        {"queued_ms": 1.0, "inference_ms": 2.0, "total_ms": 3.5, "kafka_ms": 0.5, "gpu_ms": 1.0}
    )
    assert newer.kafka_ms == 0.5
