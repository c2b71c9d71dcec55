"""A service's bounded stop: Faust's wait for taken events ended at the drain deadline, and the whole
process ended at its stop deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import time
from pathlib import Path

import faust
import pytest

from dlstream.adapters.faust.app import DrainingApp
from dlstream.adapters.faust.worker import EXIT_STOP_DEADLINE, pending_tasks

pytestmark = pytest.mark.unit

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class StuckConsumer:
    """A consumer whose taken events are never acknowledged, waiting as Faust's does: until its set of
    unacknowledged events is empty, polling, and swallowing cancellation while it polls."""

    def __init__(self, taken: int) -> None:
        self._unacked_messages = set(range(taken))
        self.commits = 0

    async def wait_empty(self) -> None:
        while self._unacked_messages:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)
        self.commits += 1

    async def commit(self) -> None:
        self.commits += 1


def app(tmp_path: Path, drain_timeout_s: float) -> DrainingApp:
    draining = DrainingApp("unit-drain", datadir=str(tmp_path), stream_wait_empty=True)
    draining.drain_timeout_s = drain_timeout_s
    return draining


def test_faust_still_has_the_wait_this_app_bounds() -> None:
    assert callable(getattr(faust.App, "_consumer_wait_empty", None)), (
        "Faust renamed its wait; see DrainingApp"
    )


def test_the_wait_ends_at_the_deadline_and_commits(tmp_path: Path) -> None:
    consumer = StuckConsumer(taken=3)
    began = time.monotonic()
    asyncio.run(app(tmp_path, 0.3)._consumer_wait_empty(consumer, logging.getLogger("test")))
    assert 0.3 <= time.monotonic() - began < 5.0
    assert consumer.commits == 1  # Faust's loop commits what was acknowledged once its set is empty


class KeepingConsumer(StuckConsumer):
    """A stuck consumer that, like the transport's, keeps the events a drain stopped waiting for."""

    def __init__(self, taken: int) -> None:
        super().__init__(taken)
        self.abandoned: set[int] = set()

    def abandon_unacked(self) -> int:
        self.abandoned |= self._unacked_messages
        count = len(self._unacked_messages)
        self._unacked_messages.clear()
        return count


def test_at_the_deadline_the_events_in_work_are_handed_to_the_consumer_not_forgotten(tmp_path: Path) -> None:
    consumer = KeepingConsumer(taken=3)
    asyncio.run(app(tmp_path, 0.3)._consumer_wait_empty(consumer, logging.getLogger("test")))
    assert consumer.abandoned == {0, 1, 2}
    assert consumer.commits == 1


def test_a_wait_that_ends_by_itself_is_not_cut(tmp_path: Path) -> None:
    consumer = StuckConsumer(taken=0)
    began = time.monotonic()
    asyncio.run(app(tmp_path, 30.0)._consumer_wait_empty(consumer, logging.getLogger("test")))
    assert time.monotonic() - began < 5.0
    assert consumer.commits == 1


def test_pending_tasks_name_the_innermost_wait() -> None:
    async def held(gate: asyncio.Event) -> None:
        await gate.wait()

    async def outer(gate: asyncio.Event) -> None:
        await held(gate)

    async def main() -> list[str]:
        gate = asyncio.Event()
        task = asyncio.create_task(outer(gate))
        await asyncio.sleep(0.01)
        described = pending_tasks(asyncio.get_running_loop())
        gate.set()
        await task
        return described

    described = asyncio.run(main())
    assert any(d.startswith("Event.wait at ") for d in described), described


@pytest.mark.slow(reason="waits out a stuck worker's 1 s drain deadline")
def test_a_worker_stuck_after_sigterm_exits_at_its_deadline(tmp_path: Path) -> None:
    # The deadline's thread ends the process even while its main thread (the event loop) is blocked.
    script = (
        "import time, faust\n"
        "from dlstream.adapters.faust.worker import DeadlineWorker\n"
        f"app = faust.App('unit-deadline', datadir={str(tmp_path)!r})\n"
        "worker = DeadlineWorker(app, stop_deadline_s=0.5, quiet=True)\n"
        "worker._arm_deadline()\n"
        "time.sleep(60)\n"
    )
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == EXIT_STOP_DEADLINE, done.stderr
    assert time.monotonic() - began < 30
    assert "worker.stop_deadline" in done.stdout + done.stderr


def test_aiokafka_still_has_the_sender_the_sink_stops_first() -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.producer.sender import Sender

    assert callable(getattr(Sender, "close", None)), "aiokafka changed its sender; see KafkaSink.stop"
    assert "_sender" in AIOKafkaProducer.__init__.__code__.co_names, "see KafkaSink.stop"
