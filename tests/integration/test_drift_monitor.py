"""The drift monitor against the real Kafka, Redis and Triton, fed by a real inference worker.

Windows are 50 predictions and an alert needs 2 flagged windows in a row, so drifted traffic raises its alert
within 100 events of a model version (the production default, 200 x 2, within 400).
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dlstream.client.publisher import Publisher
from dlstream.config.settings import Settings
from dlstream.domain.contract import DriftAlert, Modality
from dlstream.models.samples import held_out_payloads
from dlstream.models.zoo.drifted import drifted_digits, noisy_speech, unseen_topic_texts
from dlstream.tools.stack.local_stack import LocalStack
from tests.integration.conftest import PROJECT_ROOT, TopicFactory, copy_models
from tests.integration.drift import (
    MONITOR_ARGV,
    WINDOW,
    after_promotion,
    alerts_on_kafka,
    drift_settings,
    events_of,
    overview,
    retraining_outcome,
    shuffled_clean,
    wait_for,
)
from tests.integration.triton_models import private_triton
from tests.integration.workers import (
    MODELS,
    Sample,
    Worker,
    dlstream,
    send_and_flush,
    wait_for_predictions,
)

pytestmark = pytest.mark.integration

CLEAN_WINDOWS = 20
NOBODY = 65534


@contextmanager
def unreadable(folder: Path) -> Iterator[None]:
    """``folder`` closed to every user but its owner (root) for the block."""
    mode = folder.stat().st_mode
    folder.chmod(0o700)
    try:
        yield
    finally:
        folder.chmod(mode)


def test_clean_held_out_traffic_raises_no_alert_over_20_windows_per_modality(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    # The worker and the monitor run as an unprivileged user that cannot read the model repository: they
    # learn the models from Triton and the reference statistics from Redis.
    deployed = drift_settings(settings, topics, group_id)
    shared = Path(tempfile.mkdtemp(prefix="dlstream-nobody-"))
    shared.chmod(0o777)
    repository = PROJECT_ROOT / settings.triton.model_repository
    with unreadable(repository):
        denied = subprocess.run(["ls", str(repository)], user=NOBODY, capture_output=True, check=False)
        assert denied.returncode != 0, "the unprivileged user can read the repository"
        worker = Worker(deployed, tmp_path / "worker.log", user=NOBODY, data_dir=shared / "w").start()
        monitor = Worker(
            deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV, user=NOBODY, data_dir=shared / "m"
        ).start()
        try:
            _clean_traffic_raises_no_alert(deployed)
        finally:
            monitor.stop()
            worker.stop()
            shutil.rmtree(shared, ignore_errors=True)


def _clean_traffic_raises_no_alert(deployed: Settings) -> None:
    samples = [s for m in Modality for s in shuffled_clean(m, CLEAN_WINDOWS * WINDOW, seed=7)]
    random.Random(1).shuffle(samples)
    send_and_flush(deployed, samples)

    def all_windows() -> dict[str, object] | None:
        state = overview(deployed)
        done = all(
            state.get(model, {}).get("versions", {}).get("1", {}).get("windows", 0) >= CLEAN_WINDOWS
            for model in MODELS.values()
        )
        return state if done else None

    state = wait_for(all_windows, timeout_s=480, what=f"{CLEAN_WINDOWS} windows of each model")
    for model in MODELS.values():
        info = state[model]
        assert isinstance(info, dict)
        assert info["open_alert"] is None, info
        summary = info["versions"]["1"]
        # A flagged window is allowed (that is the false-alarm rate); two in a row would be an alert.
        print(f"{model}: {summary['windows']} windows, {summary['flagged_windows']} flagged")
    assert alerts_on_kafka(deployed) == []


def test_drifted_traffic_of_each_modality_raises_an_alert_within_100_events(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    deployed = drift_settings(settings, topics, group_id)
    digits, digit_labels = held_out_payloads("digits", 0)
    speech, speech_labels = held_out_payloads("speech_digits", 0)
    assert digit_labels is not None
    assert speech_labels is not None
    pick = random.Random(3).sample
    image_index = pick(range(len(digits)), 150)
    audio_index = pick(range(len(speech)), 150)
    samples = [
        *events_of(
            Modality.IMAGE,
            drifted_digits([digits[i] for i in image_index], "inverted"),
            [digit_labels[i] for i in image_index],
        ),
        *events_of(
            Modality.AUDIO,
            noisy_speech([speech[i] for i in audio_index], snr_db=0.0),
            [speech_labels[i] for i in audio_index],
        ),
        *events_of(Modality.TEXT, unseen_topic_texts(150), [-1] * 150),
    ]
    random.Random(4).shuffle(samples)
    worker = Worker(deployed, tmp_path / "worker.log").start()
    monitor = Worker(deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV).start()
    try:
        send_and_flush(deployed, samples)

        def one_per_model() -> list[DriftAlert] | None:
            alerts = [a for a in alerts_on_kafka(deployed) if a.status == "open"]
            return alerts if {a.model for a in alerts} == set(MODELS.values()) else None

        wait_for(one_per_model, timeout_s=300, what="an alert of each model")
        for alert in alerts_on_kafka(deployed):
            assert alert.status == "open"
            assert alert.version == "1"
            assert alert.predictions_seen <= 2 * WINDOW, alert
            assert alert.p_value < deployed.drift.false_alarm_rate
            assert sum(alert.counts.values()) == WINDOW
            assert alert.moved, alert
        assert len(alerts_on_kafka(deployed)) == 3  # one open alert per model, no repeats

        status = dlstream(deployed, "drift", "status").stdout
        for model in MODELS.values():
            assert f"{model}: OPEN ALERT" in status, status
        listed = [json.loads(line) for line in dlstream(deployed, "drift", "alerts").stdout.splitlines()]
        assert {a["model"] for a in listed} == set(MODELS.values())
    finally:
        monitor.stop()
        worker.stop()


def _private_triton(settings: Settings, tmp_path: Path) -> tuple[LocalStack, Path]:
    """A Triton of this test alone, on a copy of the digits model (version 1): retraining writes into it."""
    source = PROJECT_ROOT / settings.triton.model_repository
    repository = copy_models(source, ("digits",), tmp_path / "repo")
    return private_triton(settings, repository, tmp_path / "stack"), repository


@pytest.mark.timeout(1500)  # a retraining job on a busy 2-core machine
@pytest.mark.slow(reason="retrains the built-in digits network on its full training set")
def test_a_partial_shift_retrains_digits_and_version_2_takes_the_shifted_and_the_base_traffic_without_alerts(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    """Half of the traffic turns to inverted digits: an alert, retraining on the labelled traffic, version 2
    promoted; version 2 serves the same traffic better and resolves the alert, and 20 windows of base-only
    traffic raise no alert on it. (The whole loop under a full shift runs on the small plugin model, in
    test_model_plugin.)"""
    triton, repository = _private_triton(settings, tmp_path)
    triton.up()
    try:
        deployed = drift_settings(
            triton.settings,
            topics,
            group_id,
            retrain_launcher="local",
            retrain_min_feedback=150,
            alert_cooldown_s=0.0,  # so that version 2 could raise an alert of its own at once
            log_dir=tmp_path / "retrain",
        )
        # Three epochs show the loop (at two, the gain on held-out feedback was +0.093 against the 0.02
        # required: too thin). They can cost the network more on the base data than the default gate allows
        # (0.964 against 0.986 served, measured at three), and the gate has tests of its own.
        retrain = deployed.retrain.model_copy(update={"epochs": 3, "max_base_drop": 0.1})
        deployed = deployed.model_copy(update={"retrain": retrain})
        payloads, labels = held_out_payloads("digits", 0)
        assert labels is not None
        order = random.Random(5).sample(range(len(payloads)), len(payloads))
        first, second, base = order[:300], order[300:600], order[600:]

        def events(index: list[int], *, inverted: bool) -> list[Sample]:
            chosen = [payloads[i] for i in index]
            sent = drifted_digits(chosen, "inverted") if inverted else chosen
            return events_of(Modality.IMAGE, sent, [labels[i] for i in index])

        worker = Worker(deployed, tmp_path / "worker.log", repository=repository).start()
        monitor = Worker(deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV, repository=repository).start()

        def shifted_traffic(index: list[int]) -> tuple[list[Sample], list[Sample]]:
            """The inverted events, and all the events in send order, inverted and upright alternating."""
            shifted = events(index[: len(index) // 2], inverted=True)
            unshifted = events(index[len(index) // 2 :], inverted=False)
            return shifted, [s for pair in zip(shifted, unshifted, strict=True) for s in pair]

        try:
            shifted, mixed = shifted_traffic(first)
            send_and_flush(deployed, mixed)
            predicted = wait_for_predictions(deployed, {s.event.id for s in mixed})
            assert len(predicted) == len(mixed)
            assert {p.data.model_version for p in predicted.values()} == {"1"}
            right_v1 = sum(predicted[s.event.id].data.label == str(s.label) for s in shifted)
            accuracy_v1 = right_v1 / len(shifted)

            # The labels arrive later, as they would from people checking the predictions.
            with Publisher(deployed) as publisher:
                for sample in mixed:
                    publisher.publish_label(sample.event.id, str(sample.label))

            run = retraining_outcome(deployed, "digits", timeout_s=900)
            assert run["state"] == "promoted", run
            report = json.loads(run["detail"])
            assert report["new_version"] == 2
            assert (repository / "digits" / "2" / "reference.json").exists()

            # The same shifted traffic goes on, now served by version 2.
            shifted, after = shifted_traffic(second)
            send_and_flush(deployed, after)
            predicted = wait_for_predictions(deployed, {s.event.id for s in after})
            assert len(predicted) == len(after)
            assert {p.data.model_version for p in predicted.values()} == {"2"}
            right_v2 = sum(predicted[s.event.id].data.label == str(s.label) for s in shifted)
            accuracy_v2 = right_v2 / len(shifted)
            print(f"inverted digits: v1 accuracy {accuracy_v1:.3f}, v2 {accuracy_v2:.3f}; {report}")
            assert accuracy_v2 >= accuracy_v1 + 0.10

            version_2 = after_promotion(deployed, "digits", lambda: events(base, inverted=False))
            print(f"version 2 after base traffic: {version_2}")
        finally:
            monitor.stop()
            worker.stop()
    finally:
        triton.down()
