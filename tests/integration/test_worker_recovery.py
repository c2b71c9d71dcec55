"""Crashes and outages around a real worker: at-least-once delivery, nothing lost, nothing dead-lettered."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality
from dlstream.tools.stack.local_stack import LocalStack
from tests.integration.conftest import PROJECT_ROOT, TopicFactory, copy_models
from tests.integration.drift import wait_for
from tests.integration.triton_models import private_triton, running
from tests.integration.workers import (
    Sample,
    Worker,
    deployment_settings,
    group_member,
    held_out_events,
    prediction_count,
    producer,
    raw_outcomes,
    send_samples,
    send_steadily,
    wait_for_predictions,
    worker_page,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def small_triton(settings: Settings, tmp_path: Path) -> Iterator[LocalStack]:
    """A Triton of the test's own serving the digit models: killing and restarting it reloads two small
    models, not the session's four (the text encoder alone costs about 25 CPU seconds to load)."""
    built = PROJECT_ROOT / settings.triton.model_repository
    repository = copy_models(built, ("digits", "speech_digits"), tmp_path / "repository")
    with running(private_triton(settings, repository, tmp_path / "triton")) as triton:
        yield triton


def start_worker(deployed: Settings, tmp_path: Path, workers: list[Worker]) -> Worker:
    worker = Worker(deployed, tmp_path / f"worker-{len(workers)}.log").start()
    workers.append(worker)
    return worker


def mixed(images: int, audio: int, text: int) -> list[Sample]:
    """Events of all three modalities, interleaved."""
    streams = [
        held_out_events(Modality.IMAGE, images),
        held_out_events(Modality.AUDIO, audio),
        held_out_events(Modality.TEXT, text),
    ]
    out: list[Sample] = []
    for i in range(max(images, audio, text)):
        out += [s[i] for s in streams if i < len(s)]
    return out


def produce(deployed: Settings, samples: list[Sample]) -> None:
    kafka = producer(deployed)
    try:
        send_samples(kafka, deployed, samples)
        kafka.flush(timeout=60)
    finally:
        kafka.close(timeout=10)


def wait_for_count(deployed: Settings, at_least: int, timeout_s: float = 120.0) -> int:
    """Block until the test's prediction topics hold ``at_least`` records; returns the count seen."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        count = prediction_count(deployed)
        if count >= at_least:
            return count
        time.sleep(0.5)
    raise AssertionError(f"fewer than {at_least} predictions after {timeout_s}s")


def test_sigterm_finishes_the_batch_in_flight_commits_and_exits(
    deployed: Settings, tmp_path: Path, workers: list[Worker]
) -> None:
    samples = mixed(images=2000, audio=500, text=0)
    ids = {s.event.id for s in samples}
    produce(deployed, samples)
    first = start_worker(deployed, tmp_path, workers)
    wait_for_count(deployed, 500)
    began = time.monotonic()
    assert first.terminate(timeout_s=60) == 0
    drained_s = time.monotonic() - began
    done_before = prediction_count(deployed)
    assert done_before < len(samples), "the worker finished before the signal"

    start_worker(deployed, tmp_path, workers)
    found = wait_for_predictions(deployed, ids)
    assert set(found) == ids
    predictions, letters = raw_outcomes(deployed)
    assert letters == []
    # Everything the first worker took was finished and committed, so nothing is delivered twice.
    repeats = Counter(p.data.request_id for p in predictions)
    assert max(repeats.values()) == 1, f"{sum(repeats.values()) - len(ids)} duplicates after a graceful stop"
    print(f"SIGTERM after {done_before} predictions; exit 0 in {drained_s:.1f}s; no duplicates")


def test_triton_sigkilled_mid_stream_loses_nothing_and_sigterm_still_stops_a_worker(
    small_triton: LocalStack, topics: TopicFactory, group_id: str, tmp_path: Path, workers: list[Worker]
) -> None:
    """Two workers; Triton SIGKILLed mid-stream; one worker, SIGTERMed while both wait for Triton, must
    exit within the stack's stop timeout; the other resumes when Triton is back and takes over the group. The
    outage lasts until both workers wait and the SIGTERMed one has exited (its drain timeout is 8 s)."""
    deployed = deployment_settings(small_triton.settings, topics, group_id)
    samples = mixed(images=1300, audio=400, text=0)
    ids = {s.event.id for s in samples}
    staying, leaving = (group_member(deployed, tmp_path, i) for i in range(2))
    for member in (staying, leaving):
        member.repository = small_triton.repository
    # Shorter than the default (20 s) so the outage stays short; the stop timeout checked is the stack's.
    leaving.extra_env["DLSTREAM_INFERENCE__DRAIN_TIMEOUT_S"] = "8"
    workers += [staying.start(), leaving.start()]

    # About 20 s of traffic, the outage in the middle.
    traffic = threading.Thread(
        target=send_steadily, args=(deployed, samples), kwargs={"chunk": 50, "pause_s": 0.6}
    )
    traffic.start()
    try:
        wait_for_count(deployed, 200)
        small_triton.kill("triton")  # its whole process group, backend stubs included; returns once gone
        stopped = time.monotonic()
        stopped_with = prediction_count(deployed)
        wait_for(
            lambda: all('"retrying"' in worker_page(w, "health") for w in (staying, leaving)),
            timeout_s=60,
            what="both workers to report that they wait for Triton",
            interval_s=0.5,
        )
        began = time.monotonic()
        stop_timeout = small_triton.settings.stack.stop_timeout_s
        code = leaving.terminate(timeout_s=stop_timeout)  # raises after SIGKILL if it does not exit in time
        sigterm_s = time.monotonic() - began
        during = prediction_count(deployed)
        outage_s = time.monotonic() - stopped
    finally:
        small_triton.start("triton")
        back = time.monotonic()
        traffic.join()
    assert code == 0, f"exit code {code} on SIGTERM during the outage; see {leaving.log_path}"
    wait_for_count(deployed, during + 1, timeout_s=300)
    resumed_s = time.monotonic() - back
    found = wait_for_predictions(deployed, ids)
    assert staying.running, f"the worker died; see {staying.log_path}"
    assert set(found) == ids, f"{len(ids - set(found))} events have no prediction"
    assert raw_outcomes(deployed)[1] == [], "a Triton outage must never dead-letter an event"
    retries = [
        x
        for x in worker_page(staying, "metrics").splitlines()
        if x.startswith("dlstream_inference_retries_total")
    ]
    assert retries
    assert float(retries[0].split()[-1]) > 0, retries
    print(
        f"outage: {stopped_with} predictions at stop, {during} after {outage_s:.1f} s, "
        f"all {len(ids)} in the end; "
        f"a worker waiting for Triton exited 0 {sigterm_s:.1f} s after SIGTERM (limit {stop_timeout:.0f} s); "
        f"predictions again {resumed_s:.1f} s after Triton was ready"
    )
