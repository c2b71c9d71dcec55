"""What the monitor's two Faust agents do with a batch they took, apart from Faust: parse the records, feed
the monitor, and wait out outages; the agents acknowledge the batch only after this returns.

A record that is not a prediction (or not a label) is logged and skipped: predictions are the workers'
output, not the monitor's to dead-letter. A transient failure (Redis or Kafka away) is retried with backoff
for as long as it lasts, the worker's health saying ``retrying`` meanwhile, so nothing is acknowledged, and
so committed, before its effect is stored.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from dlstream.config.settings import RetrySettings
from dlstream.domain.contract import AnyPredictionData, DriftAlert, FeedbackLabel, PredictionEvent
from dlstream.domain.errors import AccessDenied, ContractError, TransientError
from dlstream.drift.monitor import DriftMonitor
from dlstream.runtime.health import WorkerState

log = structlog.get_logger("dlstream.drift")
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


async def retrying(
    state: WorkerState,
    action: Callable[[], Awaitable[T]],
    what: str,
    retry: RetrySettings,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """Run ``action()`` until it gets through transient failures, backing off; health says retrying."""
    delay: float | None = None
    while True:
        try:
            result = await action()
        except (TransientError, AccessDenied) as error:
            # A refusal (a revoked ACL right, a changed password) waits too: once the server lets the
            # monitor in again it goes on, and nothing taken is lost meanwhile.
            delay = state.back_off(delay, initial_s=retry.initial_s, max_s=retry.max_s, now=time.monotonic())
            log.warning("drift.retry", stage=what, wait_s=round(delay, 2), error=str(error))
            await sleep(delay)
        else:
            if delay is not None:
                state.end_wait()
            return result


def parse_predictions(records: Sequence[tuple[str, bytes]]) -> list[AnyPredictionData]:
    """The predictions among ``(topic, value)`` records; others are logged and skipped."""
    parsed: list[AnyPredictionData] = []
    for topic, value in records:
        try:
            parsed.append(PredictionEvent.from_kafka(value).data)
        except ContractError as error:
            log.error("drift.bad_prediction", topic=topic, error=error.message)
    return parsed


def parse_labels(records: Sequence[tuple[int, bytes]]) -> list[FeedbackLabel]:
    """The labels among ``(offset, value)`` records; others are logged and skipped."""
    parsed = []
    for offset, value in records:
        try:
            parsed.append(FeedbackLabel.from_kafka(value))
        except ContractError as error:
            log.error("drift.bad_label", offset=offset, error=error.message)
    return parsed


async def take_predictions(
    monitor: DriftMonitor,
    state: WorkerState,
    records: Sequence[tuple[str, bytes]],
    retry: RetrySettings,
    sleep: Sleep = asyncio.sleep,
) -> list[DriftAlert]:
    """A batch of the prediction topics, observed once its effect is stored; the alerts it changed."""
    predictions = parse_predictions(records)
    changed = await retrying(state, lambda: monitor.observe(predictions), "predictions", retry, sleep)
    state.batches += 1
    state.last_batch_at = time.monotonic()
    return changed


async def take_labels(
    monitor: DriftMonitor,
    state: WorkerState,
    records: Sequence[tuple[int, bytes]],
    retry: RetrySettings,
    sleep: Sleep = asyncio.sleep,
) -> int:
    """A batch of the label topic, joined once its effect is stored; how many labels were joined now."""
    labels = parse_labels(records)
    return await retrying(state, lambda: monitor.observe_labels(labels), "labels", retry, sleep)
