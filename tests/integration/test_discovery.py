"""Discovery: a running worker learns the models Triton serves; a model loaded while it runs is routed
within seconds, and events of a model that goes away wait a bounded time, then become ``model-unavailable``
dead letters while every other model keeps flowing."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from dlstream.config.settings import Settings
from dlstream.domain.contract import DeadLetter, Modality, PredictionEvent, new_request
from dlstream.domain.errors import DeadLetterReason
from dlstream.models.preprocess.image import encode_png
from dlstream.models.zoo.data.photos import PHOTOS, photo
from dlstream.tools.demo import CONTENT_TYPES
from tests.integration.conftest import TopicFactory
from tests.integration.drift import wait_for
from tests.integration.triton_models import load, unload
from tests.integration.workers import (
    Sample,
    Worker,
    deployment_settings,
    held_out_events,
    raw_outcomes,
    send_and_flush,
    wait_for_predictions,
)

pytestmark = pytest.mark.integration

# Five discovery intervals (2 s): long enough for a loaded model to be found on a busy machine.
WAIT_S = 10.0


def _photos(count: int) -> list[Sample]:
    payloads = [encode_png(photo(name)) for name in PHOTOS]
    return [
        Sample(
            Modality.IMAGE,
            new_request(
                Modality.IMAGE,
                payloads[i % len(payloads)],
                content_type=CONTENT_TYPES[Modality.IMAGE],
                source="tests/discovery",
                model="imagenet",
            ),
            -1,
        )
        for i in range(count)
    ]


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_models_loaded_and_unloaded_while_a_worker_runs(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    deployed = deployment_settings(settings, topics, group_id, model_wait_s=WAIT_S)
    unload(settings.triton, "imagenet")
    worker = Worker(deployed, tmp_path / "worker.log").start()
    try:
        warm = held_out_events(Modality.IMAGE, 5)
        send_and_flush(deployed, warm)
        assert len(wait_for_predictions(deployed, {s.event.id for s in warm})) == 5

        # Loaded into the running Triton: the running worker routes it, no restart. An event for a model
        # not in the worker's catalog yet waits at most WAIT_S and is then dead-lettered, so a prediction
        # means the refresh found the model within that bound; the time taken is printed, not asserted.
        first = _photos(1)
        load(settings.triton, "imagenet")
        loaded_at = time.monotonic()
        send_and_flush(deployed, first)
        found = wait_for_predictions(deployed, {first[0].event.id}, idle_timeout_s=WAIT_S + 60)
        routed_after = time.monotonic() - loaded_at
        assert first[0].event.id in found, "the loaded model was not routed"
        assert found[first[0].event.id].data.model == "imagenet"
        assert raw_outcomes(deployed)[1] == [], "the event for the loaded model was dead-lettered"
        print(f"imagenet routed {routed_after:.1f} s after Triton loaded it")

        # Unloaded: its events wait, then are dead-lettered; the other modalities flow during the wait.
        unload(settings.triton, "imagenet")
        orphans = _photos(5)
        sent_at = time.time()  # before the send: the worker may have them before the flush returns
        send_and_flush(deployed, orphans)
        others: list[Sample] = []
        while time.time() - sent_at < WAIT_S * 0.75:
            batch = [s for m in Modality for s in held_out_events(m, 4, source="tests/others")]
            send_and_flush(deployed, batch)
            others += batch
            time.sleep(2.0)

        orphan_ids = {s.event.id for s in orphans}

        def all_outcomes() -> tuple[list[PredictionEvent], list[DeadLetter]] | None:
            predictions, letters = raw_outcomes(deployed)
            dead = [d for d in letters if d.error and d.source_topic == deployed.topics.image]
            done = len(dead) >= len(orphans) and {p.data.request_id for p in predictions} >= {
                s.event.id for s in others
            }
            return (predictions, dead) if done else None

        predictions, letters = wait_for(all_outcomes, timeout_s=180, what="every outcome")
        assert {d.reason for d in letters} == {DeadLetterReason.MODEL_UNAVAILABLE}
        assert len(letters) == len(orphans)
        assert all("imagenet" in d.error for d in letters), letters[0].error
        first_dead = min(_at(d.time) for d in letters)
        assert first_dead - sent_at >= WAIT_S - 1.0, "dead-lettered before the bounded wait"
        flowing = [p for p in predictions if p.data.request_id in {s.event.id for s in others}]
        during = [p for p in flowing if _at(p.time) < first_dead]
        print(
            f"{len(flowing)} predictions of other models, {len(during)} of them while imagenet events "
            f"waited; first dead letter {first_dead - sent_at:.1f} s after they were sent"
        )
        assert {p.data.modality for p in during} == set(Modality)
        assert not orphan_ids & {p.data.request_id for p in predictions}
        assert worker.terminate() == 0
    finally:
        worker.stop()
        load(settings.triton, "imagenet")
