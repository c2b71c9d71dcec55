"""The SDK's producer: request events in CloudEvents binary mode, acknowledged by every in-sync replica."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from tqdm import tqdm

from dlstream.adapters.kafka.bootstrap import BOOTSTRAP_TIMEOUT_S, bootstrapped
from dlstream.adapters.kafka.connection import client_options
from dlstream.adapters.kafka.refusals import KafkaRefusals
from dlstream.client.files import content_type_for
from dlstream.client.pacing import Pacer
from dlstream.config.settings import Settings
from dlstream.domain.contract import FeedbackLabel, Modality, RequestEvent, new_request
from dlstream.domain.errors import TransientError

SOURCE = "dlstream/client"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One payload to publish and what it is."""

    data: bytes
    content_type: str
    origin: str


def file_payloads(paths: Iterable[Path], modality: Modality, *, lines: bool = False) -> Iterator[Outgoing]:
    """One payload per file, or per non-empty line of each text file when ``lines`` is set."""
    for path in paths:
        content_type = content_type_for(path, modality)
        data = path.read_bytes()
        if lines:
            for number, line in enumerate(data.splitlines(), start=1):
                if line.strip():
                    yield Outgoing(line, content_type, f"{path}:{number}")
        else:
            yield Outgoing(data, content_type, str(path))


class Publisher:
    """Publishes request events to the modality's topic; use as a context manager (flushes on exit)."""

    def __init__(self, settings: Settings, *, source: str = SOURCE) -> None:
        self.settings = settings
        self.source = source
        self._failures: list[BaseException] = []
        self._refusals = KafkaRefusals(settings.kafka).attach()
        try:
            self._producer = bootstrapped(
                lambda bootstrap: KafkaProducer(
                    **client_options(settings.kafka),
                    **bootstrap,
                    acks="all",
                    enable_idempotence=True,
                    linger_ms=settings.kafka.publisher_linger_ms,
                    max_request_size=max(1024 * 1024, 2 * settings.contract.max_payload_bytes),
                    client_id="dlstream-publisher",
                ),
                self._refusals,
                BOOTSTRAP_TIMEOUT_S,
            )
        except KafkaError as exc:
            self._refusals.detach()
            raise self._refusals.explain(exc, "connecting the publisher failed") from exc

    def topic(self, modality: Modality) -> str:
        """The request topic of ``modality``."""
        return self.settings.topics.request(modality)

    def publish(
        self,
        modality: Modality,
        data: bytes,
        *,
        content_type: str,
        model: str | None = None,
        event_id: str | None = None,
    ) -> RequestEvent:
        """Send one request (asynchronously; :meth:`flush` waits for the acknowledgements)."""
        event = new_request(
            modality, data, content_type=content_type, source=self.source, model=model, event_id=event_id
        )
        record = event.to_kafka()
        self.send_record(self.topic(modality), record.key, record.value, record.headers)
        return event

    def publish_label(self, request_id: str, label: str) -> FeedbackLabel:
        """Send the true label of an earlier request to the labels topic (feedback for the drift monitor)."""
        feedback = FeedbackLabel(request_id=request_id, label=label)
        record = feedback.to_kafka()
        self.send_record(self.settings.topics.labels, record.key, record.value, record.headers)
        return feedback

    def send_record(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        """Send a raw record (e.g. a replayed dead letter)."""
        try:
            future: Any = self._producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError as exc:
            raise self._refusals.explain(exc, f"publishing to {topic} failed") from exc
        future.add_errback(self._failures.append)

    def publish_all(
        self,
        modality: Modality,
        payloads: Iterable[Outgoing],
        *,
        rate: float | None = None,
        model: str | None = None,
        total: int | None = None,
        progress: bool = True,
    ) -> list[tuple[RequestEvent, Outgoing]]:
        """Send every payload at ``rate`` events per second (or flat out), with a progress bar."""
        pacer = Pacer(rate)
        sent: list[tuple[RequestEvent, Outgoing]] = []
        with tqdm(total=total, desc=f"publish {modality.value}", unit="ev", disable=not progress) as bar:
            for item in payloads:
                pacer.wait()
                sent.append(
                    (self.publish(modality, item.data, content_type=item.content_type, model=model), item)
                )
                bar.update()
        self.flush()
        return sent

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every record sent so far is acknowledged.

        Raises:
            AccessDenied: Kafka denied this user a right (e.g. to write the topic).
            TransientError: Kafka refused a record or did not acknowledge in time.
        """
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            raise self._refusals.explain(exc, "flushing the publisher failed") from exc
        if self._failures:
            first, count = self._failures[0], len(self._failures)
            self._failures.clear()
            doing = f"{count} records were not acknowledged; first error"
            if isinstance(first, KafkaError):  # a right denied becomes AccessDenied
                raise self._refusals.explain(first, doing) from first
            raise TransientError(f"{doing}: {first}")

    def close(self) -> None:
        """Flush and disconnect."""
        try:
            self.flush()
        finally:
            self._producer.close(timeout=10)
            self._refusals.detach()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
