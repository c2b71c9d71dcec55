"""What ``dlstream fuzz`` and the property-based tests feed arbitrary bytes to: the contract's parsers and
every payload decoder, each with the only errors it may raise and valid inputs to start mutating from.

A target takes one ``bytes`` input. Targets that parse a whole Kafka record read it as headers and a value
(:func:`read_record`), so one byte-level fuzzer reaches header names, header values and payloads alike.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from dlstream.domain.contract import (
    DeadLetter,
    FeedbackLabel,
    Modality,
    PredictionEvent,
    new_request,
    parse_request,
)
from dlstream.domain.errors import ContractError
from dlstream.models.preprocess.errors import PayloadError

# Record layout of a fuzz input: parts separated by a blank line, "name=value" headers, the value last.
PART = b"\n\n"
MAX_PAYLOAD_BYTES = 64 * 1024
CONTENT_TYPES = {Modality.IMAGE: "image/png", Modality.AUDIO: "audio/wav", Modality.TEXT: "text/plain"}


@dataclass(frozen=True)
class Target:
    """One thing to fuzz: ``run`` an input; raising anything but ``expected`` is a finding."""

    name: str
    description: str
    run: Callable[[bytes], object]
    expected: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]


def read_record(data: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """Fuzz bytes as a Kafka record: every part but the last is a ``name=value`` header (the name decoded
    leniently, as the Kafka client hands over header names as text), the last part is the value."""
    *parts, value = data.split(PART)
    headers = []
    for part in parts:
        name, _, header_value = part.partition(b"=")
        headers.append((name.decode("utf-8", errors="replace"), header_value))
    return headers, value


def write_record(headers: list[tuple[str, bytes]], value: bytes) -> bytes:
    """The fuzz bytes :func:`read_record` reads back as this record."""
    return PART.join([*(name.encode() + b"=" + header for name, header in headers), value])


def _png(side: int = 8) -> bytes:
    from dlstream.models.preprocess.image import encode_png

    pixels = ((np.arange(side * side) * 7) % 256).astype(np.uint8).reshape(side, side)
    return encode_png(pixels)


def _wav(samples: int = 1600) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        tone = (np.sin(np.arange(samples) / 5.0) * 8000).astype("<i2")
        out.writeframes(tone.tobytes())
    return buffer.getvalue()


def _seed_payloads() -> dict[Modality, bytes]:
    return {Modality.IMAGE: _png(), Modality.AUDIO: _wav(), Modality.TEXT: b"a short text"}


def _request_target(modality: Modality) -> Target:
    def run(data: bytes) -> object:
        headers, value = read_record(data)
        return parse_request(value, headers, modality=modality, max_payload_bytes=MAX_PAYLOAD_BYTES)

    def seeds() -> list[bytes]:
        event = new_request(
            modality,
            _seed_payloads()[modality],
            content_type=CONTENT_TYPES[modality],
            source="fuzz",
            model="digits",
            time=datetime(2026, 1, 1, tzinfo=UTC),
        )
        record = event.to_kafka()
        return [write_record(record.headers, record.value)]

    return Target(
        f"request-{modality.value}",
        f"the request contract of the {modality.value} topic (headers and payload)",
        run,
        (ContractError,),
        seeds,
    )


def _decoder_target(name: str, description: str, make: Callable[[], Callable[[bytes], object]]) -> Target:
    decode: list[Callable[[bytes], object]] = []

    def run(data: bytes) -> object:
        if not decode:  # built on first use: no work at import
            decode.append(make())
        return decode[0](data)

    return Target(name, description, run, (PayloadError,), lambda: [_seed_payloads()[Modality(name)]])


def _image_decoder() -> Callable[[bytes], object]:
    from dlstream.domain.card import ImagePreprocessing
    from dlstream.models.preprocess.declared import preprocessor

    return preprocessor(ImagePreprocessing(colour="L", width=28, height=28)).decode


def _audio_decoder() -> Callable[[bytes], object]:
    from dlstream.domain.card import AudioPreprocessing
    from dlstream.models.preprocess.declared import preprocessor

    return preprocessor(AudioPreprocessing()).decode


def _text_decoder() -> Callable[[bytes], object]:
    from dlstream.models.preprocess.text import decode_text

    return decode_text


def _prediction_seed() -> list[bytes]:
    from dlstream.domain.contract import PredictionData, ScoredLabel, Timing

    data = PredictionData(
        request_id="r",
        modality=Modality.IMAGE,
        model="digits",
        model_version="1",
        label="7",
        score=0.9,
        top_k=[ScoredLabel(label="7", score=0.9)],
        probabilities=[0.1, 0.9],
        embedding=[0.5, -0.5],
        timing=Timing(queued_ms=1.0, inference_ms=2.0, total_ms=3.0),
    )
    event = PredictionEvent(id="p", source="fuzz", time="2026-01-01T00:00:00.000Z", subject="r", data=data)
    return [event.model_dump_json().encode()]


def _dead_letter(data: bytes) -> object:
    headers, value = read_record(data)
    return DeadLetter.from_kafka(b"key", value, headers)


def _dead_letter_seed() -> list[bytes]:
    headers = [
        ("dlq-reason", b"bad-header"),
        ("dlq-error", b"ce_time is missing"),
        ("dlq-source-topic", b"events.image"),
        ("dlq-source-partition", b"3"),
        ("dlq-source-offset", b"42"),
        ("dlq-time", b"2026-01-01T00:00:00.000Z"),
        ("ce_id", b"e"),
    ]
    return [write_record(headers, b"payload")]


def targets() -> dict[str, Target]:
    """Every fuzz target by name."""
    found = [
        *(_request_target(modality) for modality in Modality),
        _decoder_target("image", "the image decoder (PNG/JPEG to a 28x28 grey tensor)", _image_decoder),
        _decoder_target("audio", "the audio decoder (WAV to a log-mel spectrogram)", _audio_decoder),
        _decoder_target("text", "the text decoder (strict UTF-8)", _text_decoder),
        Target(
            "prediction",
            "prediction events as the drift monitor reads them",
            PredictionEvent.from_kafka,
            (ContractError,),
            _prediction_seed,
        ),
        Target(
            "label",
            "feedback labels as the drift monitor reads them",
            FeedbackLabel.from_kafka,
            (ContractError,),
            lambda: [json.dumps({"request_id": "r", "label": "7", "time": "2026-01-01T00:00:00Z"}).encode()],
        ),
        Target(
            "dead-letter",
            "dead letters as `dlstream dlq` reads them",
            _dead_letter,
            (ContractError,),
            _dead_letter_seed,
        ),
    ]
    return {target.name: target for target in found}
