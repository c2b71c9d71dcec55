"""The ``queue`` launcher (docker-compose): the monitor queues a retraining request in Redis, and
``dlstream models retrain-worker``, where the repository is mounted, runs it as a job that records how it
ended."""

from __future__ import annotations

import threading

import pytest

from dlstream.adapters.redis.drift_store import with_store
from dlstream.config.settings import Settings
from dlstream.domain.monitoring import RetrainingRun
from dlstream.retrain.launchers import QueueLauncher, serve_retrain_queue
from tests.integration.conftest import PROJECT_ROOT
from tests.integration.drift import wait_for

pytestmark = pytest.mark.integration


def test_a_queued_request_runs_as_a_job_and_its_outcome_is_recorded(
    settings: Settings, unique_name: str
) -> None:
    mine = settings.model_copy(
        update={"drift": settings.drift.model_copy(update={"key_prefix": f"test:{unique_name}"})}
    )
    handle = QueueLauncher(mine).launch("digits", "alert-1")
    assert handle == "queue:digits:alert-1"
    stop = threading.Event()
    ran: list[int] = []
    worker = threading.Thread(
        target=lambda: ran.append(
            serve_retrain_queue(mine, repository=PROJECT_ROOT / "model_repo", stop=stop, poll_s=1.0)
        )
    )
    worker.start()
    try:

        def finished() -> RetrainingRun | None:
            run = with_store(mine, lambda store: store.retrain_context("digits")).run
            return run if run is not None and run.state == "failed" else None

        # Nothing was labelled under this test's keys: the job starts, finds no feedback, and says so.
        run = wait_for(finished, timeout_s=180, what="the queued job's outcome")
        assert "no labelled feedback for digits" in run.detail
    finally:
        stop.set()
        worker.join(timeout=60)
    assert ran == [1]
