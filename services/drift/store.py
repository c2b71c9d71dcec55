"""The monitor's state in Redis: windows of rows, detector state, accuracy, feedback, alerts, retraining runs.

Every method is one round trip (one command or one pipeline) and counts it, so the benchmark can report the
monitor's round trips per prediction. Keys live under ``<prefix>:`` and expire when a version goes idle; the
window lists are trimmed, so memory stays bounded whatever the traffic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.common.errors import TransientError
from services.common.redis_store import connection_options
from services.common.settings import DriftSettings, RedisSettings, Settings

HISTORY = 1000  # alerts and retraining runs kept for `dlstream drift alerts`
T = TypeVar("T")


def async_redis(settings: RedisSettings, *, timeout_s: float = 5.0) -> aioredis.Redis:
    """An asyncio client for the configured Redis."""
    return aioredis.Redis(**connection_options(settings, timeout_s))


@dataclass(frozen=True)
class Seen:
    """A prediction as remembered for its label: which model version said what."""

    model: str
    version: str
    label: str
    modality: str

    def encode(self) -> str:
        """Compact form for Redis."""
        return "\t".join([self.model, self.version, self.label, self.modality])

    @classmethod
    def decode(cls, raw: bytes) -> Seen:
        """Parse :meth:`encode`'s form."""
        model, version, label, modality = raw.decode().split("\t")
        return cls(model, version, label, modality)


@dataclass(frozen=True)
class TakenWindow:
    """A full window taken off a version's list, with the state and open alert it is judged with."""

    rows: list[bytes]
    state: bytes | None
    open_alert: bytes | None
    cooling_down: bool


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
            raise TransientError(f"Redis: {exc}") from exc
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

    async def mark_seen(self, seen: Sequence[tuple[str, Seen]]) -> tuple[list[bool], list[str | None]]:
        """Remember each ``(request id, prediction)``: per id, False when it was seen already (a redelivery),
        and the label that arrived before its prediction, if one did."""
        pipe = self.client.pipeline(transaction=False)
        for request_id, what in seen:
            pipe.set(self.key("seen", request_id), what.encode(), nx=True, ex=self.settings.label_ttl_s)
            pipe.getdel(self.key("early-label", request_id))
        results = await self._execute(pipe)
        fresh = [bool(r) for r in results[0::2]]
        early = [r.decode() if r else None for r in results[1::2]]
        return fresh, early

    async def park_labels(self, labels: Sequence[tuple[str, str]]) -> list[Seen | None]:
        """Keep ``(request id, label)`` whose prediction was not seen yet, to be joined when it is.

        Returns, per label, the prediction if it was seen meanwhile and this call took the label back (the
        caller joins it then); the predictions side takes a waiting label with GETDEL: one side joins it.
        """
        pipe = self.client.pipeline(transaction=False)
        for request_id, label in labels:
            pipe.set(self.key("early-label", request_id), label, ex=self.settings.label_ttl_s)
            pipe.get(self.key("seen", request_id))
        results = await self._execute(pipe)
        seen = [Seen.decode(r) if r else None for r in results[1::2]]
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

    async def push_rows(self, rows: dict[tuple[str, str], list[bytes]]) -> dict[tuple[str, str], int]:
        """Append rows to their versions' windows; the length of each list afterwards.

        A list is trimmed to its newest ``2 * window_size + max_batch`` rows, in case windows stop being taken
        off it (a version without reference statistics); a batch never loses rows to the trim.
        """
        pipe = self.client.pipeline(transaction=False)
        cap = 2 * self.settings.window_size + self.settings.max_batch
        for (model, version), values in rows.items():
            key = self.key("rows", model, version)
            pipe.rpush(key, *values)
            pipe.ltrim(key, -cap, -1)
            pipe.expire(key, self.settings.state_ttl_s)
            pipe.hsetnx(self.key("versions"), f"{model}:{version}", "{}")
        results = await self._execute(pipe)
        return {mv: min(int(results[4 * i]), cap) for i, mv in enumerate(rows)}

    async def take_window(self, model: str, version: str) -> TakenWindow:
        """Take the oldest full window off the version's list, atomically, with its judging context."""
        key = self.key("rows", model, version)
        size = self.settings.window_size
        pipe = self.client.pipeline(transaction=True)
        pipe.lrange(key, 0, size - 1)
        pipe.ltrim(key, size, -1)
        pipe.get(self.key("state", model, version))
        pipe.get(self.key("alert", "open", model))
        pipe.exists(self.key("alert", "cooldown", model))
        rows, _, state, open_alert, cooling = await self._execute(pipe)
        return TakenWindow(list(rows), state, open_alert, bool(cooling))

    async def save_window_outcome(
        self,
        model: str,
        version: str,
        *,
        state: str,
        summary: dict[str, Any],
        raised: str | None = None,
        resolved: str | None = None,
    ) -> None:
        """Store a version's state and summary, and an alert raised or resolved by its window."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.key("state", model, version), state, ex=self.settings.state_ttl_s)
        pipe.hset(self.key("versions"), f"{model}:{version}", json.dumps(summary))
        if raised is not None:
            pipe.set(self.key("alert", "open", model), raised)
            pipe.lpush(self.key("alerts"), raised)
        if resolved is not None:
            pipe.delete(self.key("alert", "open", model))
            pipe.lpush(self.key("alerts"), resolved)
            if self.settings.alert_cooldown_s > 0:
                pipe.set(
                    self.key("alert", "cooldown", model), "1", ex=max(1, int(self.settings.alert_cooldown_s))
                )
        if raised is not None or resolved is not None:
            pipe.ltrim(self.key("alerts"), 0, HISTORY - 1)
        await self._execute(pipe)

    async def lookup_seen(self, request_ids: Sequence[str]) -> list[Seen | None]:
        """The predictions that labels refer to (None where unknown or expired)."""
        pipe = self.client.pipeline(transaction=False)
        for request_id in request_ids:
            pipe.get(self.key("seen", request_id))
        return [Seen.decode(r) if r else None for r in await self._execute(pipe)]

    async def add_feedback(self, matched: Sequence[tuple[str, str, Seen]]) -> None:
        """Count ``(request id, true label, prediction)`` in accuracy and keep them for retraining."""
        pipe = self.client.pipeline(transaction=False)
        models: set[str] = set()
        for request_id, label, seen in matched:
            accuracy = self.key("accuracy", seen.model, seen.version)
            pipe.hincrby(accuracy, "labelled", 1)
            pipe.hincrby(accuracy, "correct", int(label == seen.label))
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

    async def retrain_context(self, model: str) -> tuple[bytes | None, int, dict[bytes, bytes]]:
        """A model's open alert, how much feedback it has, and its last retraining run."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.key("alert", "open", model))
        pipe.llen(self.key("feedback", model))
        pipe.hgetall(self.key("retrain", model))
        open_alert, feedback, run = await self._execute(pipe)
        return open_alert, int(feedback), run

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

    async def overview(self) -> dict[str, Any]:
        """Everything `dlstream drift status` shows: versions, accuracy, open alerts, retraining runs."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key("versions"))
        (versions,) = await self._execute(pipe)
        summaries = {k.decode(): json.loads(v) for k, v in versions.items()}
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
            counts = {k.decode(): int(v) for k, v in results[i].items()}
            if counts.get("labelled"):
                summaries[name]["labelled"] = counts["labelled"]
                summaries[name]["accuracy"] = round(counts.get("correct", 0) / counts["labelled"], 4)
        rest = results[len(summaries) :]
        overview: dict[str, Any] = {}
        for j, model in enumerate(models):
            open_alert, run, feedback, locked = rest[4 * j : 4 * j + 4]
            overview[model] = {
                "versions": {
                    name.rsplit(":", 1)[1]: summary
                    for name, summary in summaries.items()
                    if name.rsplit(":", 1)[0] == model
                },
                "open_alert": json.loads(open_alert) if open_alert else None,
                "feedback": int(feedback),
                "retraining": {k.decode(): v.decode() for k, v in run.items()} or None,
                "retraining_locked": bool(locked),
            }
        return overview

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
        finally:
            await store.close()

    return asyncio.run(run())
