"""Which modality a request topic carries (the model is chosen by :meth:`ModelCatalog.route`)."""

from __future__ import annotations

from dlstream.domain.contract import Modality
from dlstream.domain.errors import ContractError, DeadLetterReason


def modality_of_topic(topic: str, topics: dict[str, str]) -> Modality:
    """The modality of a request topic, from ``{modality: topic}``.

    Raises:
        ContractError: UNKNOWN_TOPIC for any other topic.
    """
    for modality, name in topics.items():
        if name == topic:
            return Modality(modality)
    raise ContractError(DeadLetterReason.UNKNOWN_TOPIC, f"{topic!r} is not a request topic")
