"""The worker's health report, lag arithmetic and retries of the outcome producer (fakes, no I/O)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import pytest

from dlstream.adapters.triton.client import Inference
from dlstream.config.settings import Settings, load_settings, settings_env
from dlstream.domain.catalog import catalog_from_triton
from dlstream.domain.contract import KafkaRecord, Modality, PredictionEvent, new_request, parse_request
from dlstream.domain.errors import TransientError
from dlstream.inference.metrics import InferenceMetrics
from dlstream.inference.processor import ConsumedRecord, InferenceProcessor
from dlstream.runtime.health import WorkerState, partition_lag
from tests.cards import card, config_of

pytestmark = pytest.mark.unit


def test_health_is_503_until_the_agent_runs_and_while_it_stops() -> None:
    state = WorkerState()
    assert state.health(0.0)[0] == 503
    state.started = True
    code, body = state.health(0.0)
    assert (code, body["status"]) == (200, "ok")
    state.stopping = True
    assert state.health(0.0) == (503, {**body, "status": "stopping"})


def test_a_worker_waiting_out_an_outage_is_alive_and_says_so() -> None:
    state = WorkerState(started=True, retrying_since=10.0, last_batch_at=4.0, lag={"t/0": 5, "t/1": 7})
    code, body = state.health(12.5)
    assert code == 200
    assert body["status"] == "retrying"
    assert body["retrying_for_s"] == 2.5
    assert body["seconds_since_last_batch"] == 8.5
    assert body["consumer_lag"] == 12


@pytest.mark.parametrize(
    ("end", "committed", "position", "lag"),
    [
        (100, 60, None, 40),
        (100, None, 90, 10),
        (100, 100, None, 0),
        (None, 5, 5, None),
        (50, None, None, None),
    ],
)
def test_lag_is_end_offset_minus_committed_offset(
    end: int | None, committed: int | None, position: int | None, lag: int | None
) -> None:
    assert partition_lag(end, committed, position) == lag


def test_settings_survive_the_trip_through_a_child_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = load_settings(
        redis={"password": "s3cret"},
        inference={"default_models": {"image": "imagenet", "audio": "a", "text": "t"}, "max_batch": 8},
        stack={"services": ("kafka", "redis")},
    )
    for name, value in settings_env(original).items():
        monkeypatch.setenv(name, value)
    assert load_settings() == original


class FlakySink:
    """Refuses the first ``failures`` sends, then keeps what it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[tuple[str, KafkaRecord]] = []

    async def send_all(self, records: Sequence[tuple[str, KafkaRecord]]) -> None:
        if self.failures:
            self.failures -= 1
            raise TransientError("broker unavailable")
        self.sent.extend(records)


def test_outcomes_are_resent_with_backoff_until_kafka_acknowledges() -> None:
    settings: Settings = load_settings()
    waits: list[float] = []
    topics = card("text_topics", Modality.TEXT, labels=2)
    catalog = catalog_from_triton(
        [{"name": "text_topics", "version": "1", "state": "READY"}], {"text_topics": config_of(topics)}
    )

    async def infer(
        model: str, payloads: list[bytes], outputs: Sequence[str], input_name: str
    ) -> list[Inference]:
        scores = np.array([0.2, 0.8], dtype=np.float32)
        return [
            Inference(model, "1", {"PROBABILITIES": scores, "EMBEDDING": np.zeros(8, np.float32)})
            for _ in payloads
        ]

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    sink = FlakySink(failures=3)
    state = WorkerState(started=True)
    processor = InferenceProcessor(
        settings, infer, sink, InferenceMetrics(), catalog=lambda: catalog, state=state, sleep=sleep
    )
    request = new_request(Modality.TEXT, b"hello", content_type="text/plain", source="t")
    record = request.to_kafka()
    fetched_at = time.time()
    consumed = ConsumedRecord("events.text", 0, 0, record.key, record.value, record.headers, fetched_at)
    asyncio.run(processor.process([consumed]))
    assert [topic for topic, _ in sink.sent] == ["predictions.text"]
    timing = PredictionEvent.from_kafka(sink.sent[0][1].value).data.timing
    sent_at = parse_request(record.value, record.headers, modality=Modality.TEXT, max_payload_bytes=100).time
    assert timing.kafka_ms == pytest.approx((fetched_at - sent_at.timestamp()) * 1000, abs=0.01)
    assert timing.kafka_ms is not None
    assert timing.batch_ms is not None
    assert timing.outcome_ms is not None
    parts = timing.kafka_ms + timing.batch_ms + timing.inference_ms + timing.outcome_ms
    assert parts == pytest.approx(timing.total_ms, abs=0.01)
    assert waits == [0.2, 0.4, 0.8]
    assert state.retrying_since is None
    assert state.batches == 1


def test_the_worker_stays_retrying_until_every_waiting_stage_got_through() -> None:
    state = WorkerState(started=True)
    state.begin_wait(5.0)  # Triton calls fail
    state.begin_wait(6.0)  # producing the previous batch's outcomes fails too
    state.end_wait()
    assert state.health(7.0)[1]["status"] == "retrying"
    assert state.retrying_since == 5.0
    state.end_wait()
    assert state.health(8.0)[1]["status"] == "ok"


def test_back_off_starts_waiting_then_doubles_up_to_the_maximum() -> None:
    state = WorkerState(started=True)
    first = state.back_off(None, initial_s=0.2, max_s=1.0, now=5.0)
    assert first == 0.2
    assert state.retrying_since == 5.0
    assert state.back_off(first, initial_s=0.2, max_s=1.0, now=6.0) == 0.4
    assert state.back_off(0.8, initial_s=0.2, max_s=1.0, now=7.0) == 1.0
    assert state.waiting_stages == 1


FREEZE_CHECK = """
import gc
from dlstream.runtime.heap import freeze_startup_heap
before_start = [[]]
freeze_startup_heap()
later = [[]]
# Frozen objects leave the generations the collector walks; what is created later is walked as before.
# (The frozen count itself may shrink: a frozen object is still freed when its last reference goes.)
walked = {id(obj) for obj in gc.get_objects()}
assert gc.get_freeze_count() > 0
assert id(before_start) not in walked
assert id(later) in walked
"""


def test_the_startup_heap_is_frozen_out_of_full_collections() -> None:
    # In a fresh interpreter, as at a service's start: in the test process, collecting and listing a heap that
    # holds torch took up to 1 s beside a busy process.
    done = subprocess.run([sys.executable, "-c", FREEZE_CHECK], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
