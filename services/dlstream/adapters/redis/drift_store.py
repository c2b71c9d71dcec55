"""The monitor's state in Redis: windows of rows, detector state, accuracy, feedback, alerts, retraining runs.

Every method is one round trip (one command or one pipeline) and counts it, so the benchmark can report the
monitor's round trips per prediction. Keys live under ``<prefix>:`` and expire when a version goes idle; the
rows of a version's windows are trimmed, so memory stays bounded whatever the traffic.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from dlstream.adapters.redis.connection import connection_options, redis_failure
from dlstream.adapters.redis.drift_scripts import LOOKUP_SEEN, RECORD_PREDICTIONS, SAVE_WINDOW_OUTCOMES
from dlstream.config.settings import DriftSettings, RedisSettings, Settings
from dlstream.domain.contract import DriftAlert
from dlstream.domain.errors import TransientError
from dlstream.domain.feedback import metric, score
from dlstream.domain.monitoring import (
    ModelOverview,
    RetrainContext,
    RetrainingRun,
    VersionSummary,
    overview_json,
)

HISTORY = 1000  # alerts and retraining runs kept for `dlstream drift alerts`
T = TypeVar("T")


def async_redis(settings: RedisSettings, *, timeout_s: float = 5.0) -> aioredis.Redis:
    """An asyncio client for the configured Redis."""
    return aioredis.Redis(**connection_options(settings, timeout_s, asyncio=True))


LENGTH = struct.Struct(">I")


def length_prefixed(fields: Sequence[bytes]) -> bytes:
    """``fields`` as one string, each preceded by its length (4 bytes, big-endian): what the scripts read
    back with ``struct.unpack('>I4c0', ...)``."""
    return b"".join(LENGTH.pack(len(field)) + field for field in fields)


class Seen(NamedTuple):
    """A prediction as remembered for its label: which model version said what (a named tuple: one is made
    per prediction, and a frozen dataclass costs several times more to build)."""

    model: str
    version: str
    label: str  # what the prediction said (:func:`dlstream.domain.drift_signals.summary`)
    modality: str
    task: str = "classification"

    def encode(self) -> str:
        """Compact form for Redis (a classifier's without its task, as before tasks existed)."""
        fields = [self.model, self.version, self.label, self.modality]
        return "\t".join(fields if self.task == "classification" else [*fields, self.task])

    @classmethod
    def decode(cls, raw: bytes) -> Seen:
        """Parse :meth:`encode`'s form."""
        return cls(*raw.decode().split("\t"))


@dataclass(frozen=True)
class PeekedWindows:
    """The rows of a version's oldest full windows (one string of rows of ``width`` bytes), with the state
    and open alert they are judged with, and how many windows of the version had been judged when they
    were read."""

    rows: bytes
    width: int
    state: bytes | None
    open_alert: bytes | None
    cooling_down: bool
    windows: int = 0

    @property
    def count(self) -> int:
        """The number of rows."""
        return len(self.rows) // self.width if self.width else 0

    def window(self, k: int, size: int) -> bytes:
        """The rows of the ``k``-th window of ``size`` rows."""
        step = size * self.width
        return self.rows[k * step : (k + 1) * step]


class Recorded(NamedTuple):
    """One prediction for :meth:`DriftStore.record_predictions`: its row, or None when it has no window
    (its version has no reference statistics, or its label is not the reference's)."""

    request_id: str
    seen: Seen
    row: bytes | None


@dataclass(frozen=True)
class Recording:
    """What recording a batch found: per prediction, whether it was new and the label that arrived before
    it; per version of the batch that has windows, the length of its window list afterwards, and the full
    windows it holds with their judging context (also when every prediction was seen before: a retried
    batch still judges the windows it filled)."""

    fresh: list[bool]
    early_labels: list[str | None]
    lengths: dict[tuple[str, str], int]
    full: dict[tuple[str, str], PeekedWindows] = field(default_factory=dict)


def _run(fields: dict[bytes, bytes]) -> RetrainingRun:
    """A retraining run's Redis hash, decoded (every field empty when the model never had one)."""
    return RetrainingRun.model_validate({k.decode(): v.decode() for k, v in fields.items()})


def _ids_and_seen(batch: Sequence[Recorded], order: Sequence[int]) -> bytes:
    """The request id and seen encoding of each prediction, in ``order``, as one length-prefixed string;
    a seen encoding is made once per distinct model, version, label and modality."""
    encoded: dict[Seen, bytes] = {}
    fields: list[bytes] = []
    for i in order:
        item = batch[i]
        seen = encoded.get(item.seen)
        if seen is None:
            seen = encoded[item.seen] = item.seen.encode().encode()
        fields += [item.request_id.encode(), seen]
    return length_prefixed(fields)


class DriftStore:
    """Redis access of the drift monitor and of retraining jobs."""

    def __init__(self, client: aioredis.Redis, settings: DriftSettings) -> None:
        self.client = client
        self.settings = settings
        self.prefix = settings.key_prefix
        self.roundtrips = 0

    def key(self, *parts: str) -> str:
        """``<prefix>:<part>:<part>...``"""
        return ":".join([self.prefix, *parts])

    async def _execute(self, pipe: Any) -> list[Any]:
        self.roundtrips += 1
        try:
            result: list[Any] = await pipe.execute()
        except RedisError as exc:
            raise redis_failure(exc, "Redis") from exc
        return result

    async def close(self) -> None:
        """Release the connections."""
        await self.client.aclose()

    async def reference(self, model: str, version: str) -> bytes | None:
        """The reference statistics published for a model version (JSON), if any."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.key("reference", model, version))
        raw: bytes | None = (await self._execute(pipe))[0]
        return raw

    async def publish_references(self, references: dict[tuple[str, str], str]) -> None:
        """Store the reference statistics (JSON) of model versions; a version's replaces what it had."""
        pipe = self.client.pipeline(transaction=False)
        for (model, version), document in references.items():
            pipe.set(self.key("reference", model, version), document)
        await self._execute(pipe)

    async def delete_references(self, model: str) -> int:
        """Forget the reference statistics of every version of a removed model; how many there were."""
        keys = [key async for key in self.client.scan_iter(match=self.key("reference", model, "*"))]
        if not keys:
            return 0
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(*keys)
        await self._execute(pipe)
        return len(keys)

    async def record_predictions(self, batch: Sequence[Recorded]) -> Recording:
        """Remember a batch of predictions, append the rows of the new ones to their versions' windows and
        read back every full window, in one atomic round trip: a prediction seen before (a redelivery, or a
        batch retried after Redis went away mid-way) adds no row, so no row is lost or counted twice.

        A version's rows are trimmed to its newest ``2 * window_size + max_batch`` rows, in case windows stop
        being taken off it (a version without reference statistics); a batch never loses rows to the trim.
        """
        settings = self.settings
        cap = 2 * settings.window_size + settings.max_batch
        keys = [self.key("versions"), self.key("counted"), self.key("row-widths")]
        # Predictions without a window first, then those of each version together, their rows joined.
        bare: list[int] = []
        by_version: dict[tuple[str, str], list[int]] = {}
        for i, item in enumerate(batch):
            if item.row is None:
                bare.append(i)
            else:
                seen = item.seen
                by_version.setdefault((seen.model, seen.version), []).append(i)
        order = bare + [i for members in by_version.values() for i in members]
        # One argument for the ids: packing thousands of arguments cost more than the script.
        args: list[Any] = [len(batch), settings.label_ttl_s, settings.state_ttl_s, cap, self.prefix]
        args += [settings.window_size, _ids_and_seen(batch, order), len(bare)]
        for (model, version), members in by_version.items():
            rows = [batch[i].row or b"" for i in members]
            args += [model, version, len(members), len(rows[0]), b"".join(rows)]
        pipe = self.client.pipeline(transaction=False)
        pipe.eval(RECORD_PREDICTIONS, len(keys), *keys, *args)
        fresh, early, lengths, full = (await self._execute(pipe))[0]
        widths = {name: len(batch[members[0]].row or b"") for name, members in by_version.items()}
        counts: dict[tuple[str, str], int] = {}
        for name, length in zip(lengths[0::2], lengths[1::2], strict=True):
            model, version = name.decode().rsplit(":", 1)
            counts[(model, version)] = min(int(length), cap)
        windows: dict[tuple[str, str], PeekedWindows] = {}
        for at in range(0, len(full), 6):
            name, rows, state, open_alert, cooling, judged = full[at : at + 6]
            model, version = name.decode().rsplit(":", 1)
            windows[(model, version)] = PeekedWindows(
                rows, widths[(model, version)], state, open_alert, bool(cooling), int(judged)
            )
        is_fresh = [False] * len(batch)
        for position, flag in zip(order, fresh, strict=True):
            is_fresh[position] = flag == ord("1")
        early_labels: list[str | None] = [None] * len(batch)
        for index, label in zip(early[0::2], early[1::2], strict=True):
            early_labels[order[int(index) - 1]] = label.decode()
        return Recording(fresh=is_fresh, early_labels=early_labels, lengths=counts, full=windows)

    def _lookup_seen(self, pipe: Any, request_ids: Sequence[str]) -> None:
        """Queue the lookup of the predictions ``request_ids`` name (see :data:`LOOKUP_SEEN`)."""
        pipe.eval(LOOKUP_SEEN, 0, self.settings.label_ttl_s, self.prefix, *request_ids)

    async def park_labels(self, labels: Sequence[tuple[str, str]]) -> list[Seen | None]:
        """Keep ``(request id, label)`` whose prediction was not seen yet, to be joined when it is.

        Returns, per label, the prediction if it was seen meanwhile and this call took the label back (the
        caller joins it then); the predictions side takes a waiting label with GETDEL: one side joins it.
        """
        pipe = self.client.pipeline(transaction=False)
        # The marker goes first: whenever a parked label exists, the recording script looks for it.
        pipe.set(self.key("early-labels-parked"), 1, ex=self.settings.label_ttl_s)
        for request_id, label in labels:
            pipe.set(self.key("early-label", request_id), label, ex=self.settings.label_ttl_s)
        self._lookup_seen(pipe, [request_id for request_id, _ in labels])
        found = (await self._execute(pipe))[-1]
        seen = [Seen.decode(r) if r else None for r in found]
        raced = [i for i, s in enumerate(seen) if s is not None]
        if not raced:
            return seen
        pipe = self.client.pipeline(transaction=False)
        for i in raced:
            pipe.delete(self.key("early-label", labels[i][0]))
        taken = await self._execute(pipe)
        for i, removed in zip(raced, taken, strict=True):
            if not removed:
                seen[i] = None
        return seen

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
        """Take ``judged`` windows off the list and store the version's state and summary, a record of each
        window for the report (the newest ``HISTORY`` are kept), and the alerts they raised or resolved
        (``(status, alert JSON)`` in order), atomically; only if no outcome was saved since the windows were
        read (False then: an earlier attempt whose answer was lost saved them)."""
        keys = [
            self.key("windows", model, version),
            self.key("window-rows", model, version),
            self.key("state", model, version),
            self.key("versions"),
            self.key("alert", "open", model),
            self.key("alerts"),
            self.key("alert", "cooldown", model),
            self.key("history", model, version),
            self.key("row-widths"),
        ]
        cooldown = max(1, int(self.settings.alert_cooldown_s)) if self.settings.alert_cooldown_s > 0 else 0
        args: list[str | int] = [
            peeked.windows,
            judged,
            judged * self.settings.window_size,
            state,
            self.settings.state_ttl_s,
            f"{model}:{version}",
            summary.model_dump_json(),
            cooldown,
            HISTORY,
            len(records),
            *(json.dumps(record) for record in records),
        ]
        for status, alert in alerts:
            args += [status, alert]
        pipe = self.client.pipeline(transaction=False)
        pipe.eval(SAVE_WINDOW_OUTCOMES, len(keys), *keys, *args)
        (saved,) = await self._execute(pipe)
        return bool(saved)

    async def lookup_seen(self, request_ids: Sequence[str]) -> list[Seen | None]:
        """The predictions that labels refer to (None where unknown or expired)."""
        pipe = self.client.pipeline(transaction=False)
        self._lookup_seen(pipe, request_ids)
        (found,) = await self._execute(pipe)
        return [Seen.decode(r) if r else None for r in found]

    async def add_feedback(self, matched: Sequence[tuple[str, str, Seen]]) -> None:
        """Count ``(request id, true label, prediction)`` in accuracy and keep them for retraining."""
        pipe = self.client.pipeline(transaction=False)
        models: set[str] = set()
        for request_id, label, seen in matched:
            accuracy = self.key("accuracy", seen.model, seen.version)
            for counter, value in score(seen.task, label, seen.label).items():
                pipe.hincrbyfloat(accuracy, counter, value)
            pipe.hset(accuracy, "task", seen.task)
            pipe.expire(accuracy, self.settings.state_ttl_s)
            record = {
                "request_id": request_id,
                "label": label,
                "predicted": seen.label,
                "version": seen.version,
                "modality": seen.modality,
            }
            pipe.rpush(self.key("feedback", seen.model), json.dumps(record))
            models.add(seen.model)
        for model in models:
            pipe.ltrim(self.key("feedback", model), -self.settings.max_feedback, -1)
        await self._execute(pipe)

    async def feedback(self, model: str) -> list[dict[str, Any]]:
        """The labelled feedback kept for ``model``, oldest first."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(self.key("feedback", model), 0, -1)
        (raw,) = await self._execute(pipe)
        return [json.loads(r) for r in raw]

    async def retrain_context(self, model: str) -> RetrainContext:
        """A model's open alert, how much feedback it has, and its last retraining run."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.key("alert", "open", model))
        pipe.llen(self.key("feedback", model))
        pipe.hgetall(self.key("retrain", model))
        open_alert, feedback, run = await self._execute(pipe)
        return RetrainContext(
            open_alert=DriftAlert.model_validate_json(open_alert) if open_alert else None,
            feedback=int(feedback),
            run=_run(run),
        )

    async def lock_retraining(self, model: str, owner: str) -> bool:
        """Take the model's retraining lock (False when a job holds it)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key("retrain", "lock", model), owner, nx=True, ex=self.settings.retrain_lock_ttl_s)
        (ok,) = await self._execute(pipe)
        return bool(ok)

    async def unlock_retraining(self, model: str, owner: str) -> None:
        """Release the lock if ``owner`` still holds it."""
        key = self.key("retrain", "lock", model)
        pipe = self.client.pipeline(transaction=False)
        pipe.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1,
            key,
            owner,
        )
        await self._execute(pipe)

    async def record_run(self, model: str, fields: dict[Any, Any], *, history: bool = False) -> None:
        """Update a model's last retraining run (and append it to the run history when it ends)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(self.key("retrain", model), mapping=fields)
        if history:
            pipe.hgetall(self.key("retrain", model))
        results = await self._execute(pipe)
        if history:
            run = {k.decode(): v.decode() for k, v in results[-1].items()}
            pipe = self.client.pipeline(transaction=False)
            pipe.lpush(self.key("runs"), json.dumps({"model": model, **run}))
            pipe.ltrim(self.key("runs"), 0, HISTORY - 1)
            await self._execute(pipe)

    async def overview(self) -> dict[str, ModelOverview]:
        """Everything `dlstream drift status` shows: versions, accuracy, open alerts, retraining runs."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key("versions"))
        pipe.hgetall(self.key("counted"))
        versions, counted = await self._execute(pipe)
        summaries = {k.decode(): json.loads(v) for k, v in versions.items()}
        for name, count in counted.items():
            if name.decode() in summaries:
                summaries[name.decode()]["predictions"] = int(count)
        models = sorted({name.rsplit(":", 1)[0] for name in summaries})
        pipe = self.client.pipeline(transaction=False)
        for name in summaries:
            model, version = name.rsplit(":", 1)
            pipe.hgetall(self.key("accuracy", model, version))
        for model in models:
            pipe.get(self.key("alert", "open", model))
            pipe.hgetall(self.key("retrain", model))
            pipe.llen(self.key("feedback", model))
            pipe.exists(self.key("retrain", "lock", model))
        results = await self._execute(pipe)
        for i, name in enumerate(summaries):
            fields = {k.decode(): v.decode() for k, v in results[i].items()}
            task = fields.pop("task", "classification")
            counts = {k: float(v) for k, v in fields.items()}
            if counts.get("labelled"):
                summaries[name]["labelled"] = int(counts["labelled"])
                summaries[name]["accuracy"] = round(counts.get("correct", 0) / counts["labelled"], 4)
                metric_name, value = metric(task, counts)
                if value is not None:
                    summaries[name]["metric"] = {"name": metric_name, "value": round(value, 4)}
        rest = results[len(summaries) :]
        overview: dict[str, ModelOverview] = {}
        for j, model in enumerate(models):
            open_alert, run, feedback, locked = rest[4 * j : 4 * j + 4]
            overview[model] = ModelOverview(
                versions={
                    name.rsplit(":", 1)[1]: VersionSummary.model_validate(summary)
                    for name, summary in summaries.items()
                    if name.rsplit(":", 1)[0] == model
                },
                open_alert=DriftAlert.model_validate_json(open_alert) if open_alert else None,
                feedback=int(feedback),
                retraining=_run(run) if run else None,
                retraining_locked=bool(locked),
            )
        return overview

    async def report_data(self, model: str | None = None) -> dict[str, Any]:
        """What the drift report draws: :meth:`overview` (of ``model`` alone if given) with each version's
        window records and its reference's class counts and confidence histogram, and the alert and
        retraining-run histories of those models, oldest first."""
        overview: dict[str, Any] = overview_json(await self.overview())
        if model is not None:
            overview = {name: info for name, info in overview.items() if name == model}
        versions = [(name, v) for name, info in overview.items() for v in info["versions"]]
        pipe = self.client.pipeline(transaction=False)
        for name, version in versions:
            pipe.lrange(self.key("history", name, version), 0, -1)
            pipe.get(self.key("reference", name, version))
        pipe.lrange(self.key("alerts"), 0, -1)
        pipe.lrange(self.key("runs"), 0, -1)
        results = await self._execute(pipe)
        for i, (name, version) in enumerate(versions):
            history, reference = results[2 * i], results[2 * i + 1]
            summary = overview[name]["versions"][version]
            summary["history"] = [json.loads(r) for r in history]
            if reference:
                document = json.loads(reference)
                summary["reference"] = {
                    "labels": document["labels"],
                    "class_counts": document["predicted_class_counts"],
                    "confidence_histogram": document.get("confidence_histogram", {}).get("counts"),
                }
        alerts = [json.loads(r) for r in reversed(results[-2])]
        runs = [json.loads(r) for r in reversed(results[-1])]
        return {
            "models": overview,
            "alerts": [a for a in alerts if a.get("model") in overview],
            "runs": [r for r in runs if r.get("model") in overview],
        }

    async def alerts(self, limit: int) -> list[dict[str, Any]]:
        """The newest alert records (raised and resolved), newest first."""
        pipe = self.client.pipeline(transaction=False)
        pipe.lrange(self.key("alerts"), 0, limit - 1)
        (raw,) = await self._execute(pipe)
        return [json.loads(r) for r in raw]


def with_store(settings: Settings, action: Callable[[DriftStore], Awaitable[T]]) -> T:
    """Run ``action`` on a store of its own from synchronous code (the CLI, a retraining job, tests)."""

    async def run() -> T:
        store = DriftStore(async_redis(settings.redis), settings.drift)
        try:
            return await action(store)
        except TransientError as exc:
            if isinstance(exc.__cause__, RedisError):  # a refusal by TLS looks like a lost connection
                raise redis_failure(exc.__cause__, "Redis", settings.redis) from exc.__cause__
            raise
        finally:
            await store.close()

    return asyncio.run(run())
