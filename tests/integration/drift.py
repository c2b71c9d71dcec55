"""Per-test deployments of the drift monitor beside an inference worker, and what the tests read back."""

from __future__ import annotations

import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from dlstream.adapters.redis.drift_store import with_store
from dlstream.client.reader import read_records
from dlstream.config.settings import Settings
from dlstream.domain.contract import DriftAlert, Modality, new_request
from dlstream.domain.monitoring import overview_json
from dlstream.repository.references import publish_references
from dlstream.runtime.net import free_ports
from dlstream.tools.demo import CONTENT_TYPES
from tests.integration.conftest import PROJECT_ROOT, TopicFactory
from tests.integration.workers import (
    Sample,
    deployment_settings,
    held_out_events,
    send_and_flush,
    wait_for_predictions,
)

T = TypeVar("T")
WINDOW = 50
# Windows of base traffic that must raise no alert after a promotion.
BASE_WINDOWS = 10
MONITOR_ARGV = [sys.executable, "-m", "dlstream.cli", "drift", "run"]


def drift_settings(
    settings: Settings, topics: TopicFactory, group_id: str, *, repository: Path | None = None, **drift: Any
) -> Settings:
    """The test's worker deployment plus a monitor of its own: group, Redis keys, ports, small windows; the
    repository's reference statistics are published under its keys, as a build does."""
    deployed = deployment_settings(settings, topics, group_id)
    web, metrics = free_ports(2)
    update = {
        "group_id": f"{group_id}.drift",
        "key_prefix": f"{topics.prefix}:drift",
        "web_port": web,
        "metrics_port": metrics,
        "window_size": WINDOW,
        "retrain_launcher": "none",
        **drift,
    }
    deployed = deployed.model_copy(update={"drift": deployed.drift.model_copy(update=update)})
    publish_references(deployed, repository or PROJECT_ROOT / deployed.triton.model_repository)
    return deployed


def overview(settings: Settings) -> dict[str, Any]:
    """What `dlstream drift status --json` shows."""
    return overview_json(with_store(settings, lambda store: store.overview()))


def retraining_outcome(settings: Settings, model: str, *, timeout_s: float) -> dict[str, str]:
    """The model's retraining run once it ended (promoted, rejected or failed), as `drift status` shows it."""

    def ended() -> dict[str, str] | None:
        run = overview(settings).get(model, {}).get("retraining") or {}
        return run if run.get("state") in ("promoted", "rejected", "failed") else None

    return wait_for(ended, timeout_s=timeout_s, what=f"the retraining job of {model}", interval_s=1.0)


def alerts_on_kafka(settings: Settings) -> list[DriftAlert]:
    """Every record of the test's alert topic."""
    return [
        DriftAlert.model_validate_json(r.value)
        for r in read_records(settings.kafka, [settings.topics.alerts])
    ]


def wait_for(check: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.5) -> T:
    """Poll ``check`` until it returns something; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def shuffled_clean(modality: Modality, count: int, seed: int) -> list[Sample]:
    """Held-out events drawn at random from the whole set, in random order, as real traffic mixes classes."""
    return held_out_events(modality, count, source="tests/drift-clean", seed=seed)


def events_of(modality: Modality, payloads: list[bytes], labels: list[int]) -> list[Sample]:
    """Events of these payloads with their true labels (-1 where unknown)."""
    return [
        Sample(
            modality, new_request(modality, p, content_type=CONTENT_TYPES[modality], source="tests/drift"), y
        )
        for p, y in zip(payloads, labels, strict=True)
    ]


def judged_windows(settings: Settings, model: str, version: str, count: int) -> None:
    """Wait until the monitor has judged ``count`` windows of ``model`` ``version`` in all."""

    def judged() -> int | None:
        windows = overview(settings).get(model, {}).get("versions", {}).get(version, {}).get("windows", 0)
        return windows if windows >= count else None

    wait_for(judged, timeout_s=120, what=f"{count} windows of {model} version {version} judged")


def after_promotion(settings: Settings, model: str, base: Callable[[], list[Sample]]) -> dict[str, Any]:
    """Once version 2 of ``model`` was promoted and served the shifted traffic: the alert on version 1 is
    resolved, the monitor's metrics count the promoted run, and 10 windows of base traffic on version 2 raise
    no alert (two flagged windows in a row have a chance of about 1e-3 at the 0.01 rate). ``base`` makes
    base events with new ids (called again until there are enough). Version 2's summary after that
    traffic."""

    def resolved() -> list[DriftAlert] | None:
        return [a for a in alerts_on_kafka(settings) if a.status == "resolved"] or None

    closing = wait_for(resolved, timeout_s=120, what="the alert to be resolved")
    assert [a.version for a in closing] == ["1"], closing

    def promoted_counted() -> str | None:
        url = f"http://127.0.0.1:{settings.drift.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text: str = response.read().decode()
        line = f'dlstream_retraining_runs_total{{model="{model}",outcome="promoted"}} 1.0'
        return text if line in text else None

    wait_for(promoted_counted, timeout_s=30, what="the promoted run in the monitor's metrics")

    judged = overview(settings)[model]["versions"]["2"]["windows"]
    clean: list[Sample] = []
    while len(clean) < BASE_WINDOWS * WINDOW:
        clean += base()
    clean = clean[: BASE_WINDOWS * WINDOW]
    send_and_flush(settings, clean)
    wait_for_predictions(settings, {s.event.id for s in clean})

    judged_windows(settings, model, "2", judged + BASE_WINDOWS)
    version_2: dict[str, Any] = overview(settings)[model]["versions"]["2"]
    raised = [a for a in alerts_on_kafka(settings) if a.status == "open" and a.version == "2"]
    assert raised == [], raised
    return version_2
