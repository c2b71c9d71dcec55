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

from dlstream.config.settings import Settings
from dlstream.domain.contract import DriftAlert, Modality
from dlstream.models.samples import held_out_payloads
from dlstream.models.zoo.drifted import drifted_digits, noisy_speech, unseen_topic_texts
from tests.integration.conftest import PROJECT_ROOT, TopicFactory
from tests.integration.drift import (
    MONITOR_ARGV,
    WINDOW,
    alerts_on_kafka,
    drift_settings,
    events_of,
    overview,
    shuffled_clean,
    wait_for,
)
from tests.integration.workers import (
    MODELS,
    Worker,
    dlstream,
    send_and_flush,
)

pytestmark = pytest.mark.integration

# Two flagged windows in a row make an alert; at the test's false-alarm rate (0.01 per window) clean traffic
# raises one in 10 windows with a chance of about 1e-3, while a reference that does not fit the served model
# flags most windows. The alarm rates themselves are measured by `dlstream bench drift`.
CLEAN_WINDOWS = 10
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


def test_clean_held_out_traffic_raises_no_alert_over_10_windows_per_modality(
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
