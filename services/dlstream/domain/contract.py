"""The wire contract: CloudEvents 1.0 over Kafka.

Requests use the Kafka *binary* content mode (value = raw payload, attributes in ``ce_*`` headers),
predictions the *structured* mode (value = one JSON CloudEvent), and dead letters keep the original
record with ``dlq-*`` headers added. Pure functions and value objects only: no I/O.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from dlstream.domain.errors import ContractError, DeadLetterReason

SPECVERSION = "1.0"
REQUEST_TYPE_PREFIX = "io.dlstream.request."
PREDICTION_TYPE = "io.dlstream.prediction.v1"
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"

Headers = Sequence[tuple[str, bytes]]

_REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "content-type")
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
DLQ_PREFIX = "dlq-"


class Modality(StrEnum):
    """The kinds of payload dlstream serves, one request topic each."""

    IMAGE = "image"
    AUDIO = "audio"
    TEXT = "text"


CONTENT_TYPES: dict[Modality, frozenset[str]] = {
    Modality.IMAGE: frozenset({"image/png", "image/jpeg"}),
    Modality.AUDIO: frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave"}),
    Modality.TEXT: frozenset({"text/plain"}),
}


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What a producer sends: key, value and headers, all bytes."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """A validated inference request."""

    id: str
    source: str
    type: str
    time: datetime
    content_type: str
    modality: Modality
    data: bytes
    model: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)

    def to_kafka(self, key: bytes | None = None) -> KafkaRecord:
        """Encode in binary content mode; the key defaults to the event id."""
        headers: list[tuple[str, bytes]] = [
            ("ce_specversion", SPECVERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_source", self.source.encode()),
            ("ce_type", self.type.encode()),
            ("ce_time", format_time(self.time).encode()),
            ("content-type", self.content_type.encode()),
        ]
        if self.model is not None:
            headers.append(("ce_model", self.model.encode()))
        headers.extend((f"ce_{name}", value.encode()) for name, value in sorted(self.extensions.items()))
        return KafkaRecord(key=self.id.encode() if key is None else key, value=self.data, headers=headers)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with millisecond precision and a ``Z`` suffix."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_request(
    modality: Modality,
    data: bytes,
    *,
    content_type: str,
    source: str,
    model: str | None = None,
    event_id: str | None = None,
    time: datetime | None = None,
) -> RequestEvent:
    """A request event with a fresh UUID id and the current time unless given."""
    return RequestEvent(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=f"{REQUEST_TYPE_PREFIX}{modality.value}",
        time=time or datetime.now(UTC),
        content_type=content_type,
        modality=modality,
        data=data,
        model=model,
    )


def header_map(headers: Headers | None) -> dict[str, list[bytes]]:
    """Headers grouped by lower-cased name, keeping repeats so they can be refused."""
    grouped: dict[str, list[bytes]] = {}
    for name, value in headers or ():
        grouped.setdefault(name.lower(), []).append(value or b"")
    return grouped


def _single_text(grouped: dict[str, list[bytes]], name: str, *, required: bool) -> str | None:
    values = grouped.get(name)
    if not values:
        if required:
            raise ContractError(DeadLetterReason.MISSING_HEADER, f"header {name!r} is missing")
        return None
    if len(values) > 1:
        raise ContractError(DeadLetterReason.BAD_HEADER, f"header {name!r} appears {len(values)} times")
    try:
        text = values[0].decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ContractError(DeadLetterReason.BAD_HEADER, f"header {name!r} is not UTF-8: {exc}") from None
    if not text:
        if required:
            raise ContractError(DeadLetterReason.MISSING_HEADER, f"header {name!r} is empty")
        return None
    return text


def parse_content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a media type into its lower-cased type and its parameters."""
    media, *params = (part.strip() for part in value.split(";"))
    parsed: dict[str, str] = {}
    for param in params:
        name, sep, val = param.partition("=")
        if sep:
            parsed[name.strip().lower()] = val.strip().strip('"')
    return media.lower(), parsed


def parse_time(value: str) -> datetime:
    """Parse an RFC 3339 timestamp; a timestamp without an offset is refused."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ContractError(DeadLetterReason.BAD_HEADER, f"ce_time {value!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise ContractError(DeadLetterReason.BAD_HEADER, f"ce_time {value!r} has no UTC offset")
    return parsed


def parse_request(
    value: bytes | None,
    headers: Headers | None,
    *,
    modality: Modality,
    max_payload_bytes: int,
) -> RequestEvent:
    """Validate one consumed record of a request topic.

    Raises:
        ContractError: with the dead-letter reason and a message naming exactly what is wrong.
    """
    grouped = header_map(headers)
    attrs = {name: _single_text(grouped, name, required=True) or "" for name in _REQUIRED_HEADERS}
    if attrs["ce_specversion"] != SPECVERSION:
        raise ContractError(
            DeadLetterReason.UNSUPPORTED_SPECVERSION,
            f"ce_specversion is {attrs['ce_specversion']!r}, only {SPECVERSION!r} is supported",
        )
    time = parse_time(attrs["ce_time"])
    media, params = parse_content_type(attrs["content-type"])
    allowed = CONTENT_TYPES[modality]
    if media not in allowed:
        raise ContractError(
            DeadLetterReason.WRONG_CONTENT_TYPE,
            f"content-type {media!r} is not accepted on the {modality.value} topic "
            f"(accepted: {', '.join(sorted(allowed))})",
        )
    charset = params.get("charset", "utf-8").lower()
    if modality is Modality.TEXT and charset not in ("utf-8", "utf8"):
        raise ContractError(DeadLetterReason.WRONG_CONTENT_TYPE, f"text charset {charset!r} is not utf-8")
    model = _single_text(grouped, "ce_model", required=False)
    if model is not None and not _MODEL_NAME.match(model):
        raise ContractError(DeadLetterReason.BAD_HEADER, f"ce_model {model!r} is not a valid model name")
    data = value or b""
    if not data:
        raise ContractError(DeadLetterReason.EMPTY_PAYLOAD, "the payload is empty")
    if len(data) > max_payload_bytes:
        raise ContractError(
            DeadLetterReason.OVERSIZE,
            f"the payload is {len(data)} bytes, over the limit of {max_payload_bytes} bytes",
        )
    if modality is Modality.TEXT:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ContractError(
                DeadLetterReason.INVALID_UTF8, f"text payload is not valid UTF-8 at byte {exc.start}"
            ) from None
    extensions = {
        name[3:]: values[0].decode("utf-8", errors="replace")
        for name, values in grouped.items()
        if name.startswith("ce_") and name not in _REQUIRED_HEADERS and name != "ce_model"
    }
    return RequestEvent(
        id=attrs["ce_id"],
        source=attrs["ce_source"],
        type=attrs["ce_type"],
        time=time,
        content_type=attrs["content-type"],
        modality=modality,
        data=data,
        model=model,
        extensions=extensions,
    )


class ScoredLabel(BaseModel):
    """One of the top-k classes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str
    score: float = Field(ge=0.0, le=1.0)


class Timing(BaseModel):
    """Where the time of one prediction went, in milliseconds.

    ``kafka_ms + batch_ms + inference_ms + outcome_ms`` is ``total_ms`` (each part measured by the worker's
    clock; ``kafka_ms`` against the producer's ``ce_time``). The parts are absent in predictions of workers
    that did not measure them, and fields added later are ignored by readers that do not know them.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    queued_ms: float = Field(ge=0.0, description="From the event's ce_time to the start of inference.")
    inference_ms: float = Field(ge=0.0, description="Triton round trip of the batch holding the event.")
    total_ms: float = Field(ge=0.0, description="From ce_time to the prediction being produced.")
    kafka_ms: float | None = Field(
        None, ge=0.0, description="From ce_time until the worker fetched the event (producer, broker, fetch)."
    )
    batch_ms: float | None = Field(
        None, ge=0.0, description="From the fetch until the event's batch went to Triton."
    )
    outcome_ms: float | None = Field(
        None, ge=0.0, description="From Triton's answer until the prediction went to the producer."
    )


class _PredictionBase(BaseModel):
    """What every prediction carries, whatever the model's task. Readers ignore fields they do not know, so
    fields added later do not break them."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    request_id: str
    modality: Modality
    model: str
    model_version: str
    embedding: list[float] = Field(default_factory=list, description="Compact projection used for drift.")
    timing: Timing


class PredictionData(_PredictionBase):
    """A classifier's prediction: the most probable class, the top k, and every probability for small label
    sets."""

    task: Literal["classification"] = "classification"
    label: str
    score: float = Field(ge=0.0, le=1.0)
    top_k: list[ScoredLabel]
    probabilities: list[float] | None = None


class MultilabelPrediction(_PredictionBase):
    """A multi-label tagger's prediction: the labels whose score reached their threshold, best first, and
    every label's score."""

    task: Literal["multilabel"] = "multilabel"
    labels: list[ScoredLabel] = Field(description="The labels present, best first.")
    scores: dict[str, float] = Field(description="Every label's score (0..1), in label order.")


class Box(BaseModel):
    """One detected object: its class, score and box (``xyxy`` pixels of the original image)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    label: str
    score: float = Field(ge=0.0, le=1.0)
    box: list[float] = Field(min_length=4, max_length=4, description="x_min, y_min, x_max, y_max in pixels.")


class DetectionPrediction(_PredictionBase):
    """A detector's prediction: the objects found, best first."""

    task: Literal["detection"] = "detection"
    detections: list[Box]


class EmbeddingPrediction(_PredictionBase):
    """An embedder's prediction: the vector (L2-normalised when the card says so)."""

    task: Literal["embedding"] = "embedding"
    vector: list[float]


class RegressionPrediction(_PredictionBase):
    """A regressor's prediction: each named value."""

    task: Literal["regression"] = "regression"
    values: dict[str, float]


class SequencePrediction(_PredictionBase):
    """A sequence model's prediction (OCR, speech recognition): the decoded text and the mean confidence of
    the steps that made it."""

    task: Literal["sequence"] = "sequence"
    text: str
    confidence: float = Field(ge=0.0, le=1.0)


def prediction_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each task's prediction ``data`` (``docs/schemas/``, written by ``make docs``)."""
    return {task: model.model_json_schema() for task, model in PREDICTION_MODELS.items()}


def _task_of(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("task", "classification"))
    return str(getattr(value, "task", "classification"))


# A prediction of any task (``AnyPrediction`` is the same, tagged by ``task`` for parsing).
AnyPredictionData = (
    PredictionData
    | MultilabelPrediction
    | DetectionPrediction
    | EmbeddingPrediction
    | RegressionPrediction
    | SequencePrediction
)
AnyPrediction = Annotated[
    Annotated[PredictionData, Tag("classification")]
    | Annotated[MultilabelPrediction, Tag("multilabel")]
    | Annotated[DetectionPrediction, Tag("detection")]
    | Annotated[EmbeddingPrediction, Tag("embedding")]
    | Annotated[RegressionPrediction, Tag("regression")]
    | Annotated[SequencePrediction, Tag("sequence")],
    Discriminator(_task_of),
]
PREDICTION_MODELS: dict[str, type[_PredictionBase]] = {
    "classification": PredictionData,
    "multilabel": MultilabelPrediction,
    "detection": DetectionPrediction,
    "embedding": EmbeddingPrediction,
    "regression": RegressionPrediction,
    "sequence": SequencePrediction,
}


class PredictionEvent(BaseModel):
    """A prediction as a structured-mode CloudEvent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specversion: str = SPECVERSION
    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    source: str
    type: str = PREDICTION_TYPE
    time: str = Field(default_factory=lambda: format_time(datetime.now(UTC)))
    subject: str = Field(description="The request id.")
    datacontenttype: str = "application/json"
    data: AnyPrediction

    @property
    def classification(self) -> PredictionData:
        """The data of a classifier's prediction.

        Raises:
            ValueError: the prediction is of another task.
        """
        if not isinstance(self.data, PredictionData):
            raise ValueError(f"this prediction is of task {self.data.task}: it has no class; read its data")
        return self.data

    def to_kafka(self) -> KafkaRecord:
        """Encode in structured content mode, keyed by the request id."""
        return KafkaRecord(
            key=self.data.request_id.encode(),
            value=self.model_dump_json().encode(),
            headers=[("content-type", STRUCTURED_CONTENT_TYPE.encode())],
        )

    @classmethod
    def from_kafka(cls, value: bytes) -> PredictionEvent:
        """Decode a structured-mode prediction.

        Raises:
            ContractError: when the value is not a valid prediction event.
        """
        try:
            return cls.model_validate_json(value)
        except ValidationError as exc:
            raise ContractError(DeadLetterReason.BAD_HEADER, f"not a prediction event: {exc}") from None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record of ``events.dlq``: the original record and why it failed."""

    reason: DeadLetterReason
    error: str
    source_topic: str
    source_partition: int
    source_offset: int
    time: str
    key: bytes | None
    value: bytes
    original_headers: list[tuple[str, bytes]]

    def to_kafka(self) -> KafkaRecord:
        """The original value and headers with the ``dlq-*`` headers appended."""
        headers = [*self.original_headers]
        headers += [
            ("dlq-reason", self.reason.value.encode()),
            ("dlq-error", self.error.encode()),
            ("dlq-source-topic", self.source_topic.encode()),
            ("dlq-source-partition", str(self.source_partition).encode()),
            ("dlq-source-offset", str(self.source_offset).encode()),
            ("dlq-time", self.time.encode()),
        ]
        return KafkaRecord(key=self.key, value=self.value, headers=headers)

    @classmethod
    def from_kafka(cls, key: bytes | None, value: bytes | None, headers: Headers | None) -> DeadLetter:
        """Decode a dead-letter record.

        Raises:
            ContractError: when a ``dlq-*`` header is missing or malformed.
        """
        grouped = header_map(headers)

        def text(name: str) -> str:
            return _single_text(grouped, name, required=True) or ""

        try:
            reason = DeadLetterReason(text("dlq-reason"))
            partition = int(text("dlq-source-partition"))
            offset = int(text("dlq-source-offset"))
        except ValueError as exc:
            raise ContractError(DeadLetterReason.BAD_HEADER, f"not a dead letter: {exc}") from None
        return cls(
            reason=reason,
            error=text("dlq-error"),
            source_topic=text("dlq-source-topic"),
            source_partition=partition,
            source_offset=offset,
            time=text("dlq-time"),
            key=key,
            value=value or b"",
            original_headers=strip_dead_letter_headers(headers or ()),
        )


def strip_dead_letter_headers(headers: Iterable[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """The headers without any ``dlq-*`` entry, e.g. to replay a dead letter to its source topic."""
    return [(name, value) for name, value in headers if not name.lower().startswith(DLQ_PREFIX)]


def dead_letter(
    *,
    key: bytes | None,
    value: bytes | None,
    headers: Headers | None,
    error: ContractError,
    source_topic: str,
    source_partition: int,
    source_offset: int,
    now: datetime | None = None,
) -> DeadLetter:
    """The dead letter for a consumed record that failed with ``error``."""
    return DeadLetter(
        reason=error.reason,
        error=error.message,
        source_topic=source_topic,
        source_partition=source_partition,
        source_offset=source_offset,
        time=format_time(now or datetime.now(UTC)),
        key=key,
        value=value or b"",
        original_headers=strip_dead_letter_headers(headers or ()),
    )


class FeedbackLabel(BaseModel):
    """A record of ``feedback.labels``: the true label of an earlier request (key = the request id)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str = Field(min_length=1)
    label: str = Field(min_length=1, description="The true class, spelled as in the model's labels.")
    time: str = Field(default_factory=lambda: format_time(datetime.now(UTC)))

    def to_kafka(self) -> KafkaRecord:
        """JSON value keyed by the request id (so a request's labels stay in one partition)."""
        return KafkaRecord(
            key=self.request_id.encode(),
            value=self.model_dump_json().encode(),
            headers=[("content-type", b"application/json")],
        )

    @classmethod
    def from_kafka(cls, value: bytes | None) -> FeedbackLabel:
        """Decode a label record.

        Raises:
            ContractError: when the value is not a label record.
        """
        try:
            return cls.model_validate_json(value or b"")
        except ValidationError as exc:
            raise ContractError(DeadLetterReason.BAD_HEADER, f"not a feedback label: {exc}") from None


class DriftTestOutcome(BaseModel):
    """One drift test on one window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    test: str
    statistic: float
    p_value: float


class DriftAlert(BaseModel):
    """A record of ``drift.alerts`` (key = the model): raised when windows drift, resolved later."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    status: str = Field(description="open or resolved")
    model: str
    version: str
    test: str = Field(description="The test with the smallest p-value in the window that raised the alert.")
    statistic: float
    p_value: float = Field(description="The window's calibrated p-value over all its tests.")
    tests: list[DriftTestOutcome]
    window: int = Field(description="Index of the window (0-based) of this model version.")
    window_size: int
    predictions_seen: int = Field(description="Predictions of this version the monitor had seen.")
    counts: dict[str, int] = Field(description="Predicted-class counts of the window.")
    expected_counts: dict[str, float] = Field(description="The reference's class shares times the window.")
    moved: list[str] = Field(description="The classes that moved most, first.")
    raised_at: str = Field(default_factory=lambda: format_time(datetime.now(UTC)))
    resolved_at: str | None = None
    resolution: str | None = None

    def to_kafka(self) -> KafkaRecord:
        """JSON value keyed by the model."""
        return KafkaRecord(
            key=self.model.encode(),
            value=self.model_dump_json().encode(),
            headers=[("content-type", b"application/json")],
        )
