"""Per-test deployments of the inference worker: own topics, own group, own ports, a real worker process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from dlstream.adapters.kafka.connection import client_options
from dlstream.client.subscriber import subscribe
from dlstream.config.settings import Settings, settings_env
from dlstream.domain.contract import DeadLetter, Modality, PredictionEvent, RequestEvent, new_request
from dlstream.models.samples import held_out_payloads
from dlstream.runtime.launch import worker_argv, worker_env
from dlstream.runtime.net import free_ports
from dlstream.tools.demo import CONTENT_TYPES
from tests.integration.conftest import PROJECT_ROOT, TopicFactory

MODELS = {Modality.IMAGE: "digits", Modality.AUDIO: "speech_digits", Modality.TEXT: "text_topics"}


def deployment_settings(
    settings: Settings, topics: TopicFactory, group_id: str, **inference: Any
) -> Settings:
    """The session's settings with this test's request, prediction and dead-letter topics and group."""
    names = settings.topics.under(topics.prefix)
    topics.create_all(names.all())
    web, metrics = free_ports(2)
    return settings.model_copy(
        update={
            "topics": names,
            "inference": settings.inference.model_copy(
                update={"group_id": group_id, "web_port": web, "metrics_port": metrics, **inference}
            ),
        }
    )


@dataclass
class Worker:
    """``dlstream inference run`` (or another service's ``argv``) as its own process (own session, so a
    SIGKILL takes only it)."""

    settings: Settings
    log_path: Path
    argv: list[str] = field(default_factory=worker_argv)
    repository: Path = PROJECT_ROOT / "model_repo"
    extra_env: dict[str, str] = field(default_factory=dict)
    user: int | None = None  # run as this uid (and gid), e.g. one that cannot read the repository
    data_dir: Path | None = None  # Faust's folder (default: beside the log)
    proc: subprocess.Popen[bytes] | None = None
    _log: Any = field(default=None, repr=False)

    def start(self) -> Worker:
        """Start the process (not waiting for it to be ready: events wait in Kafka)."""
        data_dir = self.data_dir or self.log_path.parent / "faust"
        env = {**worker_env(self.settings, repository=self.repository, data_dir=data_dir), **self.extra_env}
        env["DLSTREAM_DRIFT__DATA_DIR"] = env["DLSTREAM_INFERENCE__DATA_DIR"]
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=PROJECT_ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=self.user,
            group=self.user,
            extra_groups=[] if self.user is not None else None,
        )
        return self

    @property
    def running(self) -> bool:
        """True while the process lives."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no drain, no commit."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._close_log()

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise
        finally:
            self._close_log()
        return code

    def stop(self) -> None:
        """Stop it if it still runs (test teardown)."""
        if self.running:
            self.terminate()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def group_member(settings: Settings, folder: Path, index: int) -> Worker:
    """Worker ``index`` of a group of several on this machine: its own web and metrics ports, Faust folder and
    log (not started)."""
    web, metrics = free_ports(2)
    return Worker(
        settings,
        folder / f"worker-{index}.log",
        data_dir=folder / f"faust-{index}",
        extra_env={
            "DLSTREAM_INFERENCE__WEB_PORT": str(web),
            "DLSTREAM_INFERENCE__METRICS_PORT": str(metrics),
        },
    )


def worker_page(worker: Worker, page: str) -> str:
    """A page of a worker started by ``group_member``: ``health`` (web port) or ``metrics``."""
    name = "WEB_PORT" if page == "health" else "METRICS_PORT"
    port = worker.extra_env[f"DLSTREAM_INFERENCE__{name}"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{page}", timeout=5) as response:
        return str(response.read().decode())


def predicted_by(worker: Worker) -> int:
    """Predictions a ``group_member`` produced so far (its Prometheus counter); 0 before it serves them."""
    try:
        text = worker_page(worker, "metrics")
    except OSError:
        return 0
    lines = text.splitlines()
    return int(
        sum(float(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("dlstream_predictions_out_total{"))
    )


@dataclass(frozen=True)
class Sample:
    """A held-out sample sent as an event, and its true label index."""

    modality: Modality
    event: RequestEvent
    label: int


@cache
def _held_out(modality: Modality) -> tuple[list[bytes], list[int]]:
    payloads, labels = held_out_payloads(MODELS[modality], 0)
    assert labels is not None
    return payloads, labels


def held_out_events(
    modality: Modality, count: int, *, source: str = "tests/good", seed: int | None = None
) -> list[Sample]:
    """``count`` events cycling through the model's held-out samples (each event its own id): in the set's
    order, or with ``seed`` in a random order of the whole set, so that fewer events than the set holds are
    still a fair sample of it (its first ones need not be)."""
    payloads, labels = _held_out(modality)
    order = list(range(len(payloads)))
    if seed is not None:
        random.Random(seed).shuffle(order)
    samples = []
    for i in range(count):
        j = order[i % len(payloads)]
        event = new_request(modality, payloads[j], content_type=CONTENT_TYPES[modality], source=source)
        samples.append(Sample(modality, event, labels[j]))
    return samples


def producer(settings: Settings) -> KafkaProducer:
    """An acks=all idempotent producer that can send oversize payloads (to test their dead letters)."""
    return KafkaProducer(
        **client_options(settings.kafka),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=4 * 1024 * 1024,
    )


def send_samples(kafka: KafkaProducer, settings: Settings, samples: Iterable[Sample]) -> None:
    """Produce the samples' events to their request topics (not flushed)."""
    for sample in samples:
        record = sample.event.to_kafka()
        kafka.send(
            settings.topics.request(sample.modality),
            key=record.key,
            value=record.value,
            headers=record.headers,
        )


def send_and_flush(settings: Settings, samples: Iterable[Sample]) -> None:
    """Produce the samples' events with a producer of its own and wait until Kafka has them all."""
    kafka = producer(settings)
    try:
        send_samples(kafka, settings, samples)
        kafka.flush()
    finally:
        kafka.close()


def send_steadily(settings: Settings, samples: Sequence[Sample], *, chunk: int, pause_s: float) -> None:
    """Produce the samples ``chunk`` at a time, each chunk flushed, with a pause between chunks: traffic that
    keeps coming while a test stops something."""
    kafka = producer(settings)
    try:
        for start in range(0, len(samples), chunk):
            send_samples(kafka, settings, samples[start : start + chunk])
            kafka.flush(timeout=60)
            time.sleep(pause_s)
    finally:
        kafka.close(timeout=10)


def raw_outcomes(settings: Settings) -> tuple[list[PredictionEvent], list[DeadLetter]]:
    """Every prediction (duplicates included) and dead letter in the test's topics right now."""
    from dlstream.client.reader import read_records

    t = settings.topics
    predictions: list[PredictionEvent] = []
    letters: list[DeadLetter] = []
    topics = [t.prediction(m) for m in Modality] + [t.dlq]
    for record in read_records(settings.kafka, topics):
        if record.topic == t.dlq:
            letters.append(DeadLetter.from_kafka(record.key, record.value, record.headers))
        else:
            predictions.append(PredictionEvent.from_kafka(record.value))
    return predictions, letters


def prediction_count(settings: Settings) -> int:
    """Predictions in the test's topics right now, duplicates included: their end offsets (the topics are the
    test's own, and nothing writes them transactionally). Cheap enough to poll, unlike :func:`raw_outcomes`,
    which decodes every record on each call."""
    consumer = KafkaConsumer(**client_options(settings.kafka), enable_auto_commit=False, group_id=None)
    try:
        topics = [settings.topics.prediction(m) for m in Modality]
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        return sum(consumer.end_offsets(partitions).values())
    finally:
        consumer.close()


def wait_for_predictions(
    settings: Settings, ids: set[str], *, idle_timeout_s: float = 60.0
) -> dict[str, PredictionEvent]:
    """One prediction per request id, as the SDK delivers them, until all ``ids`` arrived or none came for
    ``idle_timeout_s``."""
    found = subscribe(settings, ids=ids, follow=True, idle_timeout_s=idle_timeout_s)
    return {prediction.data.request_id: prediction for prediction in found}


def dlstream(settings: Settings, *args: str, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the CLI with ``settings`` in its environment; fails the test on a non-zero exit."""
    result = subprocess.run(
        [sys.executable, "-m", "dlstream.cli", *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **settings_env(settings)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert result.returncode == 0, f"dlstream {' '.join(args)} exited {result.returncode}:\n{result.stderr}"
    return result
