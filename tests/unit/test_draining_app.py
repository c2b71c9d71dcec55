"""The Faust app's bounded wait for taken events: Faust's own wait, ended at the drain deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

import faust

from services.common.faust_app import DrainingApp


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


def test_a_wait_that_ends_by_itself_is_not_cut(tmp_path: Path) -> None:
    consumer = StuckConsumer(taken=0)
    began = time.monotonic()
    asyncio.run(app(tmp_path, 30.0)._consumer_wait_empty(consumer, logging.getLogger("test")))
    assert time.monotonic() - began < 5.0
    assert consumer.commits == 1
