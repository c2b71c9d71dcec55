"""Which model serves an event: the one it names (if allowed for its modality) or the modality's default."""

from __future__ import annotations

from services.common.contract import Modality, RequestEvent
from services.common.errors import ContractError, DeadLetterReason
from services.common.settings import InferenceSettings


def choose_model(event: RequestEvent, settings: InferenceSettings) -> str:
    """The model for ``event``.

    Raises:
        ContractError: UNKNOWN_MODEL when the event names a model not served for its modality.
    """
    allowed = settings.allowed_models.get(event.modality.value, [])
    if event.model is None:
        default = settings.default_models.get(event.modality.value)
        if default is None:
            raise ContractError(
                DeadLetterReason.UNKNOWN_MODEL, f"no default model for {event.modality.value}"
            )
        return default
    if event.model not in allowed:
        choices = ", ".join(allowed) or "none"
        raise ContractError(
            DeadLetterReason.UNKNOWN_MODEL,
            f"model {event.model!r} is not served for {event.modality.value} events (served: {choices})",
        )
    return event.model


def modality_of_topic(topic: str, topics: dict[str, str]) -> Modality:
    """The modality of a request topic, from ``{modality: topic}``.

    Raises:
        ContractError: UNKNOWN_TOPIC for any other topic.
    """
    for modality, name in topics.items():
        if name == topic:
            return Modality(modality)
    raise ContractError(DeadLetterReason.UNKNOWN_TOPIC, f"{topic!r} is not a request topic")
