"""The Faust worker that runs a dlstream service: it exits within a deadline after SIGTERM, whatever hangs."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
from typing import Any

import faust
import structlog

log = structlog.get_logger("dlstream.faust")

# Exit code of a service that outlived its stop deadline (its unfinished events stay uncommitted).
EXIT_STOP_DEADLINE = 3
# What the shutdown may take after the drain: committing, leaving the group, flushing and closing clients.
STOP_MARGIN_S = 8.0


class DeadlineWorker(faust.Worker):
    """A Faust worker that exits at most ``stop_deadline_s`` after SIGTERM or SIGINT.

    Faust's shutdown awaits each service in turn; with the broker away, a consumer leaving its group or a
    producer flushing can wait for Kafka's request timeouts, longer than the stop timeout the worker is given.
    At the deadline the worker logs the tasks still running (where each one waits) and exits with code
    ``EXIT_STOP_DEADLINE``. Nothing is lost: events without an acknowledged outcome were never committed.
    """

    def __init__(self, app: faust.App, *, stop_deadline_s: float, **options: Any) -> None:
        super().__init__(app, **options)
        self.stop_deadline_s = stop_deadline_s
        self._deadline: threading.Timer | None = None

    def _on_sigterm(self) -> None:
        self._arm_deadline()
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self._arm_deadline()
        super()._on_sigint()

    def _arm_deadline(self) -> None:
        if self._deadline is None:
            # A thread, so that it fires even when the event loop itself is stuck.
            self._deadline = threading.Timer(self.stop_deadline_s, self._give_up)
            self._deadline.daemon = True
            self._deadline.start()

    def _give_up(self) -> None:
        log.error(
            "worker.stop_deadline",
            seconds=self.stop_deadline_s,
            waiting=pending_tasks(self.loop),
            exit_code=EXIT_STOP_DEADLINE,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_STOP_DEADLINE)


def pending_tasks(loop: asyncio.AbstractEventLoop, limit: int = 20) -> list[str]:
    """``coroutine at file:line`` of up to ``limit`` unfinished tasks of ``loop``: the innermost coroutine
    each one awaits, which says what it waits for."""
    described = []
    for task in list(asyncio.all_tasks(loop))[:limit]:
        awaited: Any = task.get_coro()
        while True:
            inner = getattr(awaited, "cr_await", None) or getattr(awaited, "ag_await", None)
            if inner is None or not (hasattr(inner, "cr_frame") or hasattr(inner, "ag_frame")):
                break
            awaited = inner
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "ag_frame", None)
        where = f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame is not None else "?"
        described.append(f"{getattr(awaited, '__qualname__', task.get_name())} at {where}")
    return sorted(described)
