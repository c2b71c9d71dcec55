"""Several workers in one group under load: they share the partitions, and a worker killed, a worker added or
the broker itself killed loses nothing and dead-letters nothing."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from dlstream.adapters.faust.worker import EXIT_STOP_DEADLINE
from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality
from dlstream.tools.stack.local_stack import LocalStack
from tests.integration.drift import wait_for
from tests.integration.workers import (
    Sample,
    Worker,
    group_member,
    held_out_events,
    predicted_by,
    prediction_count,
    raw_outcomes,
    send_steadily,
    wait_for_predictions,
)

pytestmark = pytest.mark.integration


def join(deployed: Settings, tmp_path: Path, workers: list[Worker]) -> Worker:
    """Start one more worker of the group."""
    worker = group_member(deployed, tmp_path, len(workers)).start()
    workers.append(worker)
    return worker


def images_and_text(images: int, text: int) -> list[Sample]:
    """Digits and fortunes interleaved (the two fastest models, so that the run is about the group)."""
    pictures, fortunes = held_out_events(Modality.IMAGE, images), held_out_events(Modality.TEXT, text)
    every = max(1, images // max(1, text))
    out: list[Sample] = []
    for i, sample in enumerate(pictures):
        out.append(sample)
        if i % every == every - 1 and fortunes:
            out.append(fortunes.pop())
    return out + fortunes


def assert_every_event_predicted_once_after_dedup(deployed: Settings, samples: list[Sample]) -> int:
    """All events have a prediction and none a dead letter; returns the redelivered duplicates."""
    ids = {s.event.id for s in samples}
    found = wait_for_predictions(deployed, ids, idle_timeout_s=120)
    assert set(found) == ids, f"{len(ids - set(found))} events have no prediction"
    predictions, letters = raw_outcomes(deployed)
    assert letters == [], f"{len(letters)} dead letters: {letters[:3]}"
    repeats = Counter(p.data.request_id for p in predictions)
    assert set(repeats) == ids
    return sum(repeats.values()) - len(ids)


def test_three_workers_share_the_partitions_and_one_killed_one_added_loses_nothing(
    deployed: Settings, tmp_path: Path, workers: list[Worker]
) -> None:
    samples = images_and_text(4500, 500)
    assert len(samples) == 5000
    # About 40 s of traffic at 125 events/s; the kill and the join happen while it flows.
    traffic = threading.Thread(
        target=send_steadily, args=(deployed, samples), kwargs={"chunk": 125, "pause_s": 1.0}
    )
    for _ in range(3):
        join(deployed, tmp_path, workers)
    traffic.start()
    try:
        wait_for(
            lambda: all(predicted_by(w) > 0 for w in workers) and prediction_count(deployed) >= 1500,
            timeout_s=180,
            what="each of the three workers to predict (partitions shared), 1,500 in all",
        )
        shares = [predicted_by(w) for w in workers]
        workers[0].kill()
        killed_at = prediction_count(deployed)
        newcomer = join(deployed, tmp_path, workers)
        wait_for(lambda: predicted_by(newcomer) > 0, timeout_s=180, what="the added worker to predict")
    finally:
        traffic.join()
    duplicates = assert_every_event_predicted_once_after_dedup(deployed, samples)
    survivors = workers[1:]
    assert all(w.running for w in survivors), [w.log_path for w in survivors if not w.running]
    print(
        f"predictions per worker before the kill {shares}; killed at {killed_at} of {len(samples)}; "
        f"after: {[predicted_by(w) for w in survivors]}; {duplicates} redelivered duplicates"
    )


def test_broker_sigkilled_and_restarted_with_workers_running_loses_nothing(
    deployed: Settings, local_stack: LocalStack, tmp_path: Path, workers: list[Worker]
) -> None:
    """Three workers; the broker SIGKILLed mid-stream; one worker, SIGTERMed while the broker is away, must
    exit within the stack's stop timeout; the other two resume when the broker is back."""
    if local_stack.record("kafka") is None:
        pytest.skip("needs a stack started by the tests (not DLSTREAM_TEST_ATTACH)")
    samples = images_and_text(2700, 300)
    first, sent_later = samples[:1500], samples[1500:]
    for _ in range(2):
        join(deployed, tmp_path, workers)
    leaving = group_member(deployed, tmp_path, 2)
    leaving.extra_env["DLSTREAM_INFERENCE__DRAIN_TIMEOUT_S"] = "8"
    workers.append(leaving.start())
    send_steadily(deployed, first, chunk=500, pause_s=0.0)
    wait_for(lambda: prediction_count(deployed) >= 500, timeout_s=180, what="500 predictions")
    stop_timeout = local_stack.settings.stack.stop_timeout_s
    local_stack.kill("kafka")  # returns once the broker's process is gone
    killed = time.monotonic()
    try:
        code = leaving.terminate(timeout_s=stop_timeout)  # raises after SIGKILL if it does not exit in time
        sigterm_s = time.monotonic() - killed
        time.sleep(max(0.0, 5.0 - (time.monotonic() - killed)))  # the outage's least length, not a wait
    finally:
        local_stack.start("kafka")  # also when the test failed: the session's later tests need it
    restarted_s = time.monotonic() - killed
    # Its last commit cannot reach the broker: it either finishes without one or ends at its stop deadline,
    # saying so; what it did not commit is redelivered to the others.
    assert code in (0, EXIT_STOP_DEADLINE), f"exit code {code} on SIGTERM; see {leaving.log_path}"
    if code == EXIT_STOP_DEADLINE:
        assert "worker.stop_deadline" in leaving.log_path.read_text()
    send_steadily(deployed, sent_later, chunk=500, pause_s=0.0)
    duplicates = assert_every_event_predicted_once_after_dedup(deployed, samples)
    staying = [w for w in workers if w is not leaving]
    assert all(w.running for w in staying), [w.log_path for w in staying if not w.running]
    print(
        f"a worker exited ({code}) {sigterm_s:.1f} s after SIGTERM with the broker away "
        f"(limit {stop_timeout:.0f} s); "
        f"broker back after {restarted_s:.1f} s; {duplicates} redelivered duplicates"
    )
