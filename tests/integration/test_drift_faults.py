"""The drift monitor through faults, a Redis outage (it waits, says so, resumes) and its own SIGKILL
mid-window: either way it counts every prediction once."""

from __future__ import annotations

import random
import threading
import time
import urllib.request
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from dlstream.adapters.redis.drift_store import DriftStore, with_store
from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality
from dlstream.models.samples import held_out_payloads
from dlstream.models.zoo.drifted import drifted_digits
from dlstream.tools.stack.local_stack import LocalStack
from tests.integration.conftest import TopicFactory
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
from tests.integration.workers import Worker, prediction_count, send_steadily, wait_for_predictions

pytestmark = pytest.mark.integration


OUTAGE_S = 8.0


def _retrying(port: int) -> str | None:
    """The monitor's health while it says it is retrying, else None."""
    health = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read().decode()
    return health if '"retrying"' in health else None


async def pending_rows(store: DriftStore, model: str, version: str) -> int:
    """Rows of a version waiting for its next window."""
    rows = await store.client.strlen(store.key("window-rows", model, version))
    width = await store.client.hget(store.key("row-widths"), f"{model}:{version}")
    return int(rows) // int(width) if width else 0


def test_redis_stopped_for_8s_loses_no_window_row_and_no_alert(
    settings: Settings, local_stack: LocalStack, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    if "redis" not in local_stack.services or local_stack.record("redis") is None:
        pytest.skip("needs a stack started by the tests (not DLSTREAM_TEST_ATTACH)")
    deployed = drift_settings(settings, topics, group_id)
    digits, labels = held_out_payloads("digits", 0)
    assert labels is not None
    index = random.Random(5).sample(range(len(digits)), 600)
    clean = events_of(Modality.IMAGE, [digits[i] for i in index[:300]], [labels[i] for i in index[:300]])
    inverted = drifted_digits([digits[i] for i in index[300:]], "inverted")
    samples = clean + events_of(Modality.IMAGE, inverted, [labels[i] for i in index[300:]])
    ids = {s.event.id for s in samples}
    worker = Worker(deployed, tmp_path / "worker.log").start()
    monitor = Worker(deployed, tmp_path / "monitor.log", argv=MONITOR_ARGV).start()

    # About 20 s of traffic, the outage in the middle.
    traffic = threading.Thread(
        target=send_steadily, args=(deployed, samples), kwargs={"chunk": 30, "pause_s": 1.0}
    )
    try:
        traffic.start()
        wait_for(lambda: prediction_count(deployed) >= 150, timeout_s=180, what="150 predictions")
        local_stack.stop("redis")
        stopped = time.monotonic()
        try:
            # The monitor says so once a batch of predictions meets the outage (traffic comes in bursts).
            wait_for(
                lambda: _retrying(deployed.drift.web_port),
                timeout_s=60,
                what="the monitor's health to say it waits for Redis",
                interval_s=0.5,
            )
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage's length, not a wait
        finally:
            local_stack.start("redis")
        traffic.join()
        found = wait_for_predictions(deployed, ids)
        assert set(found) == ids
        made = Counter(p.data.model_version for p in found.values() if p.data.model == "digits")

        versions = wait_for(
            lambda: accounted(deployed, made),
            timeout_s=180,
            what=f"every digits prediction {dict(made)} in a judged window or waiting for one",
        )

        def raised() -> list[str] | None:
            state = overview(deployed).get("digits", {})
            return [state["open_alert"]["id"]] if state.get("open_alert") else None

        open_id = wait_for(raised, timeout_s=120, what="the alert of the inverted digits")[0]
        assert open_id in {a.id for a in alerts_on_kafka(deployed)}, "the open alert never reached Kafka"
        assert monitor.running, f"the monitor died; see {monitor.log_path}"
        print(f"Redis away {OUTAGE_S:.0f} s: {made} predictions, windows {versions}")
    finally:
        if traffic.is_alive():
            traffic.join()
        monitor.stop()
        worker.stop()


def accounted(deployed: Settings, made: Counter[str]) -> dict[str, Any] | None:
    """The digits versions' monitor summaries once each counts as many predictions as the version made,
    every one of them in a judged window or in the rows waiting for the next.

    Recording a batch and saving the windows it filled are two steps, so the two figures are polled until
    they agree: the summary is read before the rows, so a save in between can only make them fall short.
    """
    versions: dict[str, Any] = overview(deployed).get("digits", {}).get("versions", {})
    done = {v: s for v, s in versions.items() if s.get("predictions") == made.get(v)}
    if len(done) != len(made):
        return None
    for version, summary in versions.items():
        pending = with_store(deployed, partial(pending_rows, model="digits", version=version))
        if summary["windows"] * WINDOW + pending != made[version]:
            return None
    return versions


def test_monitor_sigkilled_mid_window_counts_every_prediction_once_after_restart(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    deployed = drift_settings(settings, topics, group_id)
    samples = shuffled_clean(Modality.IMAGE, 900, seed=11)
    ids = {s.event.id for s in samples}
    worker = Worker(deployed, tmp_path / "worker.log").start()
    monitor = Worker(deployed, tmp_path / "monitor-0.log", argv=MONITOR_ARGV).start()
    restarted: Worker | None = None
    traffic = threading.Thread(
        target=send_steadily, args=(deployed, samples), kwargs={"chunk": 30, "pause_s": 0.5}
    )
    try:
        traffic.start()

        def mid_window() -> int | None:
            versions = overview(deployed).get("digits", {}).get("versions", {})
            counted = sum(int(s.get("predictions", 0)) for s in versions.values())
            return counted if counted >= 2 * WINDOW and counted % WINDOW else None

        counted_at_kill = wait_for(mid_window, timeout_s=180, what="the monitor part-way through a window")
        monitor.kill()
        restarted = Worker(deployed, tmp_path / "monitor-1.log", argv=MONITOR_ARGV).start()
        traffic.join()
        found = wait_for_predictions(deployed, ids)
        assert set(found) == ids
        made = Counter(p.data.model_version for p in found.values())
        versions = wait_for(
            lambda: accounted(deployed, made),
            timeout_s=180,
            what=f"every prediction {dict(made)} counted once, in a judged window or waiting for one",
        )
        assert restarted.running, f"the restarted monitor died; see {restarted.log_path}"
        windows = {v: s["windows"] for v, s in versions.items()}
        print(f"monitor killed at {counted_at_kill} counted; made {dict(made)}, windows {windows}")
    finally:
        if traffic.is_alive():
            traffic.join()
        for process in (restarted, worker):
            if process is not None:
                process.stop()
