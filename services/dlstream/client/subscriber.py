"""The SDK's subscriber: predictions as :class:`PredictionEvent`, each request id once."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import structlog

from dlstream.client.dedup import Deduplicator
from dlstream.client.reader import Start, read_records
from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality, PredictionEvent
from dlstream.domain.errors import ContractError

log = structlog.get_logger(__name__)


def prediction_topics(settings: Settings, modalities: Iterable[Modality]) -> list[str]:
    """The prediction topic of each modality."""
    return [settings.topics.prediction(m) for m in modalities]


def subscribe(
    settings: Settings,
    *,
    modalities: Iterable[Modality] = tuple(Modality),
    follow: bool = False,
    ids: Iterable[str] = (),
    start: Start = "beginning",
    idle_timeout_s: float | None = None,
    dedup: Deduplicator | None = None,
) -> Iterator[PredictionEvent]:
    """Yield predictions, dropping repeats of a request id (redeliveries after a worker crash).

    With ``ids`` only those requests are yielded, and the iteration ends once all of them have been seen.
    """
    wanted = set(ids)
    seen = dedup or Deduplicator()
    for record in read_records(
        settings.kafka,
        prediction_topics(settings, modalities),
        start=start,
        follow=follow,
        idle_timeout_s=idle_timeout_s,
    ):
        try:
            prediction = PredictionEvent.from_kafka(record.value)
        except ContractError as exc:
            log.warning("subscribe.skipped", topic=record.topic, offset=record.offset, error=str(exc))
            continue
        request_id = prediction.data.request_id
        if wanted and request_id not in wanted:
            continue
        if not seen.first_time(request_id):
            continue
        yield prediction
        if wanted:
            wanted.discard(request_id)
            if not wanted:
                return
