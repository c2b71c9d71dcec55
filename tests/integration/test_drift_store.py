"""The drift store's atomic steps against the real Redis: a batch or a window applied twice counts once."""

from __future__ import annotations

import pytest

from dlstream.adapters.redis.drift_store import DriftStore, Recorded, Seen, with_store
from dlstream.config.settings import Settings
from dlstream.domain.monitoring import VersionSummary

pytestmark = pytest.mark.integration


def _settings(settings: Settings, unique_name: str) -> Settings:
    drift = settings.drift.model_copy(update={"key_prefix": f"test:{unique_name}", "window_size": 4})
    return settings.model_copy(update={"drift": drift})


async def _forget(store: DriftStore) -> None:
    """Delete every key of the test's prefix."""
    await store.client.delete(*[k async for k in store.client.scan_iter(match=store.key("*"))])


def test_a_batch_recorded_twice_adds_its_rows_once_and_reports_the_lengths_again(
    settings: Settings, unique_name: str
) -> None:
    deployed = _settings(settings, unique_name)
    seen = Seen("m", "1", "a", "image")
    batch = [Recorded(f"r{i}", seen, f"row{i}".encode()) for i in range(6)]
    batch.append(Recorded("no-window", Seen("m", "2", "a", "image"), None))
    batch.append(Recorded("r0", seen, b"row0"))  # the same request twice in one batch

    async def run(store: DriftStore) -> None:
        first = await store.record_predictions(batch)
        again = await store.record_predictions(batch)  # a retry after the answer was lost
        assert first.fresh == [True] * 7 + [False]
        assert again.fresh == [False] * 8
        assert first.lengths == again.lengths == {("m", "1"): 6}
        assert await store.client.hget(store.key("counted"), "m:1") == b"6"
        assert await store.lookup_seen(["r5", "no-window", "unknown"]) == [seen, batch[6].seen, None]
        # Remembered in the hash of the current half label ttl, kept for one to one and a half ttl; a label
        # still finds a prediction of two periods before, and a redelivery of it is no new row.
        (key,) = [k async for k in store.client.scan_iter(match=store.key("seen", "*"))]
        ttl = deployed.drift.label_ttl_s
        assert ttl - 10 <= await store.client.ttl(key) <= 1.5 * ttl
        older = store.key("seen", str(int(key.decode().rsplit(":", 1)[1]) - 2))
        await store.client.hset(older, "old", seen.encode())
        assert await store.lookup_seen(["old"]) == [seen]
        assert (await store.record_predictions([Recorded("old", seen, b"row9")])).fresh == [False]
        await _forget(store)

    with_store(deployed, run)


def test_a_label_parked_before_its_prediction_is_joined_once_by_whichever_side_comes_second(
    settings: Settings, unique_name: str
) -> None:
    deployed = _settings(settings, unique_name)
    seen = Seen("m", "1", "a", "image")

    async def run(store: DriftStore) -> None:
        # Nothing parked yet: predictions are recorded without looking for labels.
        plain = await store.record_predictions([Recorded("plain", seen, b"row0")])
        assert plain.early_labels == [None]
        assert await store.park_labels([("early", "b")]) == [None]
        recorded = await store.record_predictions(
            [Recorded("early", seen, b"row1"), Recorded("other", seen, b"row2")]
        )
        assert recorded.early_labels == ["b", None]
        # The prediction first: parking its label finds it and takes the label back.
        assert await store.park_labels([("plain", "c")]) == [seen]
        assert await store.client.exists(store.key("early-label", "plain")) == 0
        again = await store.record_predictions([Recorded("early", seen, b"row1")])
        assert again.early_labels == [None]
        assert again.fresh == [False]
        await _forget(store)

    with_store(deployed, run)


def test_window_outcomes_are_saved_once_however_often_they_are_retried(
    settings: Settings, unique_name: str
) -> None:
    deployed = _settings(settings, unique_name)
    seen = Seen("m", "1", "a", "image")

    async def run(store: DriftStore) -> None:
        recording = await store.record_predictions(
            [Recorded(f"r{i}", seen, f"row{i}".encode()) for i in range(6)]
        )
        peeked = recording.full[("m", "1")]  # the one full window of the six rows
        assert peeked.rows == b"row0row1row2row3"
        assert (peeked.count, peeked.windows, peeked.state, peeked.open_alert) == (4, 0, None, None)
        alert = '{"id": "a"}'
        for attempt in range(2):  # the second is a retry whose first answer was lost: saved already
            saved = await store.save_window_outcomes(
                "m",
                "1",
                peeked,
                judged=1,
                state="{}",
                summary=VersionSummary(windows=1),
                alerts=[("open", alert)],
            )
            assert saved is (attempt == 0)
        assert await store.client.get(store.key("window-rows", "m", "1")) == b"row4row5"
        assert await store.client.lrange(store.key("alerts"), 0, -1) == [alert.encode()]
        assert await store.client.get(store.key("alert", "open", "m")) == alert.encode()
        more = await store.record_predictions([Recorded(f"r{i}", seen, f"row{i}".encode()) for i in (6, 7)])
        nxt = more.full[("m", "1")]
        assert (nxt.rows, nxt.windows, nxt.state) == (b"row4row5row6row7", 1, b"{}")
        assert nxt.open_alert == alert.encode()
        summary = await store.client.hget(store.key("versions"), "m:1")
        assert summary is not None
        assert VersionSummary.model_validate_json(summary) == VersionSummary(windows=1)
        await _forget(store)

    with_store(deployed, run)
