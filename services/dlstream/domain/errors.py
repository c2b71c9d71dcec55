"""The exception root of dlstream. Adapters translate library errors into these at the boundary."""

from __future__ import annotations

from enum import StrEnum


class DlstreamError(Exception):
    """Root of every error dlstream raises on purpose."""


class DeadLetterReason(StrEnum):
    """Why an event went to the dead-letter topic; the value is written to the ``dlq-reason`` header."""

    MISSING_HEADER = "missing-header"
    BAD_HEADER = "bad-header"
    UNSUPPORTED_SPECVERSION = "unsupported-specversion"
    WRONG_CONTENT_TYPE = "wrong-content-type"
    EMPTY_PAYLOAD = "empty-payload"
    OVERSIZE = "oversize"
    INVALID_UTF8 = "invalid-utf8"
    UNKNOWN_TOPIC = "unknown-topic"
    UNKNOWN_MODEL = "unknown-model"
    UNDECODABLE_PAYLOAD = "undecodable-payload"
    INFERENCE_REJECTED = "inference-rejected"
    MODEL_UNAVAILABLE = "model-unavailable"
    BAD_MODEL_OUTPUT = "bad-model-output"


class ContractError(DlstreamError):
    """An event breaks the wire contract; it is dead-lettered with ``reason`` and this message."""

    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.message}"


class TransientError(DlstreamError):
    """A dependency is unavailable for now; the work is retried, never dead-lettered."""


class ModelUnavailable(TransientError):
    """Triton answered that the model is not loaded (unknown, unloaded or without a ready version)."""


class StackError(DlstreamError):
    """The local stack could not be installed, started, checked or stopped."""


class AccessDenied(DlstreamError):
    """A server refused this client: its credentials, its rights, or its way of connecting (TLS or not).
    Retrying does not help; the configuration must change."""


class ClientError(DlstreamError):
    """A client command was given something it cannot send or read (a missing file, an unknown type)."""
