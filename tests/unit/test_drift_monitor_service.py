"""The drift monitor fed through a store in memory that keeps DriftStore's promises (no Redis): a batch
retried after a lost answer counts once, windows are judged once, alerts are raised and resolved once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from dlstream.adapters.redis.drift_store import PeekedWindows, Recorded, Recording, Seen
from dlstream.config.settings import load_settings
from dlstream.domain.contract import (
    FeedbackLabel,
)
from dlstream.domain.errors import TransientError
from dlstream.domain.monitoring import RetrainContext, VersionSummary
from dlstream.drift.intake import take_labels, take_predictions
from dlstream.drift.metrics import DriftMetrics
from dlstream.drift.monitor import DriftMonitor
from dlstream.runtime.health import WorkerState
from tests.drift_samples import Published, event_value, predictions, reference_document

pytestmark = pytest.mark.unit

WINDOW = 10


class MemoryStore:
    """DriftStore's contract in memory. ``lose_answer`` names methods whose next call is applied and then
    raises, as when Redis goes away before its answer arrives."""

    def __init__(self, references: dict[tuple[str, str], str]) -> None:
        self.references = references
        self.seen: dict[str, Seen] = {}
        self.rows: dict[tuple[str, str], list[bytes]] = {}
        self.counted: dict[tuple[str, str], int] = {}
        self.windows: dict[tuple[str, str], int] = {}
        self.state: dict[tuple[str, str], str] = {}
        self.summaries: dict[tuple[str, str], VersionSummary] = {}
        self.open_alert: dict[str, str] = {}
        self.alerts: list[str] = []
        self.lose_answer: set[str] = set()
        self.down_for = 0  # calls refused before anything is applied, as while Redis is stopped
        self.feedback: list[tuple[str, str, Seen]] = []
        self.history: dict[tuple[str, str], list[dict[str, Any]]] = {}

    def _answered(self, method: str) -> None:
        if method in self.lose_answer:
            self.lose_answer.discard(method)
            raise TransientError(f"Redis: connection lost during {method}")

    async def reference(self, model: str, version: str) -> bytes | None:
        found = self.references.get((model, version))
        return found.encode() if found else None

    async def record_predictions(self, batch: Sequence[Recorded]) -> Recording:
        if self.down_for:
            self.down_for -= 1
            raise TransientError("Redis: connection refused")
        fresh, lengths = [], {}
        for item in batch:
            new = item.request_id not in self.seen
            self.seen.setdefault(item.request_id, item.seen)
            fresh.append(new)
            if item.row is not None:
                key = (item.seen.model, item.seen.version)
                if new:
                    self.rows.setdefault(key, []).append(item.row)
                    self.counted[key] = self.counted.get(key, 0) + 1
                lengths[key] = len(self.rows.get(key, []))
        full = {}
        for key in lengths:
            rows = self.rows.get(key, [])
            if len(rows) >= WINDOW:
                model = key[0]
                full[key] = PeekedWindows(
                    rows=b"".join(rows[: len(rows) // WINDOW * WINDOW]),
                    width=len(rows[0]),
                    state=self.state.get(key, "").encode() or None,
                    open_alert=self.open_alert[model].encode() if model in self.open_alert else None,
                    cooling_down=False,
                    windows=self.windows.get(key, 0),
                )
        self._answered("record_predictions")
        return Recording(fresh=fresh, early_labels=[None] * len(batch), lengths=lengths, full=full)

    async def save_window_outcomes(
        self,
        model: str,
        version: str,
        peeked: PeekedWindows,
        *,
        judged: int,
        state: str,
        summary: VersionSummary,
        alerts: Sequence[tuple[str, str]] = (),
        records: Sequence[dict[str, Any]] = (),
    ) -> bool:
        key = (model, version)
        if self.windows.get(key, 0) != peeked.windows:
            return False
        self.windows[key] = peeked.windows + judged
        self.rows[key] = self.rows[key][judged * WINDOW :]
        self.state[key], self.summaries[key] = state, summary
        self.history.setdefault(key, []).extend(records)
        for status, alert in alerts:
            if status == "open":
                self.open_alert[model] = alert
            else:
                self.open_alert.pop(model, None)
            self.alerts.append(alert)
        self._answered("save_window_outcomes")
        return True

    async def lookup_seen(self, request_ids: Sequence[str]) -> list[Seen | None]:
        return [self.seen.get(request_id) for request_id in request_ids]

    async def park_labels(self, labels: Sequence[tuple[str, str]]) -> list[Seen | None]:
        return [None] * len(labels)

    async def add_feedback(self, matched: Sequence[tuple[str, str, Seen]]) -> None:
        self.feedback += matched

    async def retrain_context(self, model: str) -> RetrainContext:
        return RetrainContext()

    async def lock_retraining(self, model: str, owner: str) -> bool:
        return True

    async def unlock_retraining(self, model: str, owner: str) -> None:
        return None

    async def record_run(self, model: str, fields: dict[Any, Any], *, history: bool = False) -> None:
        return None

    async def report_data(self, model: str | None = None) -> dict[str, Any]:
        return {"models": {}, "alerts": [], "runs": []}

    async def close(self) -> None:
        return None


def monitor_with(store: MemoryStore, published: Published) -> DriftMonitor:
    settings = load_settings(
        drift={"window_size": WINDOW, "alert_after_windows": 2, "calibration_windows": 2000}
    )
    return DriftMonitor(settings, store, metrics=DriftMetrics(), publish=published)


def test_a_batch_retried_after_lost_answers_counts_every_prediction_once_and_judges_each_window_once() -> (
    None
):
    rng = np.random.default_rng(0)
    store = MemoryStore({("m", "1"): reference_document(rng)})
    published = Published()
    monitor = monitor_with(store, published)
    batch = predictions(rng, 25)

    async def run() -> None:
        store.lose_answer = {"record_predictions"}
        with pytest.raises(TransientError):
            await monitor.observe(batch)
        store.lose_answer = {"save_window_outcomes"}
        with pytest.raises(TransientError):
            await monitor.observe(batch)  # recorded before: only its windows are judged, and saved
        await monitor.observe(batch)  # saved before: nothing is judged or counted again

    asyncio.run(run())
    assert store.counted[("m", "1")] == 25
    assert store.windows[("m", "1")] == 2
    assert len(store.rows[("m", "1")]) == 5
    assert store.summaries[("m", "1")].windows == 2
    assert [r["window"] for r in store.history[("m", "1")]] == [0, 1]
    assert published.alerts == []


def test_drifted_windows_raise_one_alert_and_a_clean_window_of_a_new_version_resolves_it() -> None:
    rng = np.random.default_rng(1)
    store = MemoryStore({("m", "1"): reference_document(rng), ("m", "2"): reference_document(rng)})
    published = Published()
    monitor = monitor_with(store, published)

    async def run() -> None:
        for _ in range(2):
            await monitor.observe(predictions(rng, 20, shift=4.0))
        await monitor.observe(predictions(rng, WINDOW, version="2"))

    asyncio.run(run())
    assert [(a.status, a.version) for a in published.alerts] == [("open", "1"), ("resolved", "1")]
    assert published.alerts[0].window == 1  # the second flagged window in a row
    assert [json.loads(a)["status"] for a in store.alerts] == ["open", "resolved"]
    assert "m" not in store.open_alert


def test_the_prediction_agent_skips_what_is_not_a_prediction_and_waits_out_an_outage() -> None:
    rng = np.random.default_rng(2)
    store = MemoryStore({("m", "1"): reference_document(rng)})
    monitor = monitor_with(store, Published())
    state = WorkerState(started=True)
    records = [("predictions.image", event_value(p)) for p in predictions(rng, 12)]
    records.insert(3, ("predictions.image", b"{not a prediction"))
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        assert state.health(time.monotonic())[1]["status"] == "retrying"

    store.down_for = 3
    retry = load_settings().retry
    asyncio.run(take_predictions(monitor, state, records, retry, sleep))
    assert waits == [0.2, 0.4, 0.8]
    assert state.retrying_since is None
    assert state.batches == 1
    assert store.counted[("m", "1")] == 12
    assert store.windows[("m", "1")] == 1


def test_the_label_agent_joins_labels_with_their_predictions_and_skips_what_is_not_a_label() -> None:
    rng = np.random.default_rng(3)
    store = MemoryStore({("m", "1"): reference_document(rng)})
    monitor = monitor_with(store, Published())
    state = WorkerState(started=True)
    made = predictions(rng, 3)
    asyncio.run(
        take_predictions(monitor, state, [("p", event_value(p)) for p in made], load_settings().retry)
    )
    records = [(0, b"[]")] + [
        (i + 1, FeedbackLabel(request_id=p.request_id, label="a").to_kafka().value)
        for i, p in enumerate(made)
    ]
    joined = asyncio.run(take_labels(monitor, state, records, load_settings().retry))
    assert joined == 3
    assert [(rid, label, seen.label) for rid, label, seen in store.feedback] == [
        (p.request_id, "a", p.label) for p in made
    ]
