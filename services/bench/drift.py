"""``dlstream bench drift``: the monitor's false-alarm rate as measured, its cost per prediction, its power.

Predictions are real: the model's held-out samples run through Triton once. Held-out samples that are part of
the version's reference sample are left out, so clean windows are independent of what they are compared
with. Windows are drawn at random from that clean pool (each prediction a new request id) and fed through the
monitor's own code (parsing, Redis, detectors) against the real Redis, in the batches its agent takes.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import numpy as np
import structlog

from pipelines.drifted import drifted_digits
from pipelines.samples import held_out_payloads
from services.common.contract import Modality, PredictionData, PredictionEvent, Timing, new_request
from services.common.discovery import discover_once
from services.common.settings import Settings
from services.common.triton_client import AsyncTriton
from services.drift.metrics import P_VALUE_BUCKETS, DriftMetrics
from services.drift.monitor import DriftMonitor
from services.drift.store import DriftStore, async_redis, with_store
from services.inference.predictions import build_prediction

log = structlog.get_logger("dlstream.bench")
# A held-out sample whose embedding lies this close to a reference row is that row.
SAME_SAMPLE = 1e-3


async def _predict(settings: Settings, model: str, payloads: list[bytes], labels: list[str]) -> list[bytes]:
    triton = AsyncTriton(settings.triton)
    try:
        results = await asyncio.gather(*(triton.infer(model, p) for p in payloads))
    finally:
        await triton.close()
    timing = Timing(queued_ms=0.0, inference_ms=0.0, total_ms=0.0)
    return [
        build_prediction(
            new_request(Modality.IMAGE, p, content_type="image/png", source="bench/drift"),
            model=r.model,
            model_version=r.model_version,
            labels=labels,
            probabilities=r.probabilities,
            embedding=r.embedding,
            timing=timing,
            k=settings.inference.top_k,
            full_probabilities_max_classes=settings.inference.full_probabilities_max_classes,
        )
        .to_kafka()
        .value
        for p, r in zip(payloads, results, strict=True)
    ]


def _outside_reference(values: list[bytes], reference: dict[str, Any]) -> list[bytes]:
    rows = np.asarray(reference["embedding_sample"])
    kept = []
    for value in values:
        embedding = np.asarray(PredictionEvent.from_kafka(value).data.embedding)
        if np.min(np.linalg.norm(rows - embedding, axis=1)) > SAME_SAMPLE:
            kept.append(value)
    return kept


def _stream(pool: list[bytes], windows: int, size: int, seed: int) -> list[bytes]:
    """``windows * size`` predictions drawn from ``pool``, each window without repeats, each with a new id."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(windows):
        for i in rng.choice(len(pool), size=size, replace=False):
            event = json.loads(pool[i])
            request_id = str(uuid.uuid4())
            event["subject"] = event["data"]["request_id"] = request_id
            out.append(json.dumps(event).encode())
    return out


async def _run_monitor(
    settings: Settings, references: dict[tuple[str, str], str], model: str, stream: list[bytes]
) -> dict[str, Any]:
    metrics = DriftMetrics()
    alerts: list[Any] = []

    async def publish(records: Any) -> None:
        alerts.extend(records)

    store = DriftStore(async_redis(settings.redis), settings.drift)
    await store.publish_references(references)
    monitor = DriftMonitor(settings, store, metrics=metrics, publish=publish)
    commands_before = int((await store.client.info("stats"))["total_commands_processed"])
    batch = settings.drift.max_batch
    started = time.perf_counter()
    for start in range(0, len(stream), batch):
        parsed: list[PredictionData] = [
            PredictionEvent.from_kafka(v).data for v in stream[start : start + batch]
        ]
        await monitor.observe(parsed)
    elapsed = time.perf_counter() - started
    roundtrips = store.roundtrips
    commands = int((await store.client.info("stats"))["total_commands_processed"]) - commands_before - 1
    state = await store.overview()
    keys = [k async for k in store.client.scan_iter(match=f"{settings.drift.key_prefix}:*")]
    if keys:
        await store.client.delete(*keys)
    await store.close()
    windows = metrics.registry.get_sample_value("dlstream_drift_window_p_value_count", {"model": model}) or 0
    rates = (
        {
            str(bound): (
                metrics.registry.get_sample_value(
                    "dlstream_drift_window_p_value_bucket", {"model": model, "le": str(bound)}
                )
                or 0
            )
            / windows
            for bound in P_VALUE_BUCKETS[:4]
        }
        if windows
        else {}
    )
    detector_seconds = metrics.registry.get_sample_value("dlstream_drift_window_seconds_sum") or 0.0
    return {
        "rates": rates,
        "detector_seconds": detector_seconds,
        "seconds": elapsed,
        "roundtrips": roundtrips,
        "commands": commands,
        "overview": state,
        "alerts": len(alerts),
    }


def _flagged(result: dict[str, Any], model: str) -> tuple[int, int]:
    versions = result["overview"][model]["versions"]
    return (
        sum(v.get("flagged_windows", 0) for v in versions.values()),
        sum(v.get("windows", 0) for v in versions.values()),
    )


def bench_drift(
    settings: Settings, *, model: str, windows: int, window_size: int, drifted_windows: int
) -> dict[str, Any]:
    """Measure the monitor on ``windows`` clean windows and ``drifted_windows`` of inverted digits, against
    the serving version's labels (from Triton) and reference statistics (from Redis)."""
    if model != "digits":
        raise ValueError("the drift benchmark draws its drifted windows from digits (inverted)")
    served = discover_once(settings.triton).models.get(model)
    if served is None:
        raise ValueError(f"Triton does not serve {model}")
    version = served.versions[-1]
    labels = served.labels
    raw = with_store(settings, lambda store: store.reference(model, version))
    if raw is None:
        raise ValueError(
            f"no reference statistics of {model} v{version} in Redis; run `dlstream models publish`"
        )
    reference = json.loads(raw)
    references = {(model, version): raw.decode()}
    payloads, _ = held_out_payloads(model, 0)
    predictions = asyncio.run(_predict(settings, model, payloads, labels))
    clean_pool = _outside_reference(predictions, reference)
    drifted_pool = asyncio.run(_predict(settings, model, drifted_digits(payloads, "inverted"), labels))
    log.info("bench.drift_pools", clean=len(clean_pool), reference=len(reference["embedding_sample"]))

    prefix = f"dlstream:bench:{uuid.uuid4().hex[:8]}"
    drift = settings.drift.model_copy(
        update={"window_size": window_size, "key_prefix": prefix, "retrain_launcher": "none"}
    )
    bench_settings = settings.model_copy(update={"drift": drift})
    clean = asyncio.run(
        _run_monitor(bench_settings, references, model, _stream(clean_pool, windows, window_size, 1))
    )
    flagged, evaluated = _flagged(clean, model)
    shifted = asyncio.run(
        _run_monitor(
            bench_settings.model_copy(
                update={"drift": drift.model_copy(update={"key_prefix": prefix + ":drifted"})}
            ),
            references,
            model,
            _stream(drifted_pool, drifted_windows, window_size, 2),
        )
    )
    detected, drifted_evaluated = _flagged(shifted, model)
    predictions_fed = windows * window_size
    return {
        "model": model,
        "version": version,
        "window_size": window_size,
        "clean_pool": len(clean_pool),
        "configured_false_alarm_rate": settings.drift.false_alarm_rate,
        "clean_windows": evaluated,
        "flagged_clean_windows": flagged,
        "observed_false_alarm_rate": flagged / evaluated if evaluated else None,
        "observed_rate_at_p_below": clean["rates"],
        "alerts_on_clean_traffic": clean["alerts"],
        "drifted_windows": drifted_evaluated,
        "drifted_detection_rate": detected / drifted_evaluated if drifted_evaluated else None,
        "us_per_prediction": round(clean["seconds"] / predictions_fed * 1e6, 1),
        "detector_us_per_prediction": round(clean["detector_seconds"] / predictions_fed * 1e6, 1),
        "redis_roundtrips_per_prediction": round(clean["roundtrips"] / predictions_fed, 4),
        "redis_commands_per_prediction": round(clean["commands"] / predictions_fed, 3),
        "predictions": predictions_fed,
    }
