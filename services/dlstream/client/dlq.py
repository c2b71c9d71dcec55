"""Listing and replaying dead letters: each keeps the original record, so a replay sends it back unchanged."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import structlog

from dlstream.client.publisher import Publisher
from dlstream.client.reader import read_records
from dlstream.config.settings import Settings
from dlstream.domain.contract import DeadLetter, header_map
from dlstream.domain.errors import ContractError

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StoredLetter:
    """A dead letter and where it sits in the dead-letter topic."""

    partition: int
    offset: int
    letter: DeadLetter

    @property
    def request_id(self) -> str | None:
        """The ``ce_id`` of the original event, when it had exactly one."""
        values = header_map(self.letter.original_headers).get("ce_id", [])
        return values[0].decode("utf-8", errors="replace") if len(values) == 1 else None

    def summary(self) -> dict[str, Any]:
        """A JSON-ready view (the payload by size only)."""
        letter = self.letter
        return {
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "request_id": self.request_id,
            "reason": letter.reason.value,
            "error": letter.error,
            "source_topic": letter.source_topic,
            "source_partition": letter.source_partition,
            "source_offset": letter.source_offset,
            "time": letter.time,
            "payload_bytes": len(letter.value),
            "headers": {k: v.decode("utf-8", errors="replace") for k, v in letter.original_headers},
        }


def matches(stored: StoredLetter, *, reasons: Iterable[str] = (), ids: Iterable[str] = ()) -> bool:
    """True when the letter has one of ``reasons`` and one of ``ids`` (an empty filter matches all)."""
    reason_set, id_set = set(reasons), set(ids)
    if reason_set and stored.letter.reason.value not in reason_set:
        return False
    return not id_set or stored.request_id in id_set


def dead_letters(
    settings: Settings, *, reasons: Iterable[str] = (), ids: Iterable[str] = (), follow: bool = False
) -> Iterator[StoredLetter]:
    """The dead letters matching the filters, oldest first."""
    reason_list, id_list = list(reasons), list(ids)
    for record in read_records(settings.kafka, [settings.topics.dlq], follow=follow):
        try:
            letter = DeadLetter.from_kafka(record.key, record.value, record.headers)
        except ContractError as exc:
            log.warning("dlq.skipped", partition=record.partition, offset=record.offset, error=str(exc))
            continue
        stored = StoredLetter(record.partition, record.offset, letter)
        if matches(stored, reasons=reason_list, ids=id_list):
            yield stored


def replay(publisher: Publisher, letters: Iterable[StoredLetter]) -> int:
    """Send each letter's original record (key, value, headers without ``dlq-*``) back to its source topic.

    The request keeps its id, so a subscriber treats a prediction of a replayed event as that request's.
    Returns how many were sent; all are acknowledged when this returns.
    """
    count = 0
    for stored in letters:
        letter = stored.letter
        publisher.send_record(letter.source_topic, letter.key, letter.value, list(letter.original_headers))
        count += 1
    publisher.flush()
    return count
