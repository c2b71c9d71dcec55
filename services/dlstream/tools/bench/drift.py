"""``dlstream bench drift``: per model and window size, the monitor's false-alarm rate as measured against the
configured one, its power and detection delay on drifted traffic, and its cost per prediction.

Predictions are real: every held-out sample of a model runs through Triton once. The false-alarm rate is
cross-fitted: in each of many random splits of those predictions, a part is set aside as undrifted traffic (a
third, and at least two windows) and the rest becomes a reference and a calibration sample, exactly as a build
writes them; a few disjoint windows are cut from the part set aside and fed through the monitor's own code
(rows, Redis, calibration, tests, alert policy) against the real Redis, in the batches its agent takes. Every
window's p-value is kept, so one stream gives the observed rate at every configured rate.

A single reference's own rate scatters around the configured one by how far that sample happens to lie from
the traffic, and the windows of one split share that offset. The rate a user can expect is the rate over
references, so the windows are spread over as many splits as the cost allows: at most ``windows_per_split``
(5) each, and as many as the part set aside holds without a prediction in two windows. The exact binomial
interval over all windows assumes independent windows; how far the splits' windows are from that is measured
(``design_effect``: the variance of the splits' flagged counts over the binomial one), and the t-interval of
the splits' mean, which does not assume it, is reported beside it. (Five windows of 200 drawn from the same
400 predictions shared half of them, and the design effect was 1.45-1.87.)

The cost per prediction is the monitor's wall time over each split's stream; the median over the splits is
the figure (a stall of a shared machine hits a few splits, not the median), with the mean and spread
beside it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
from scipy import stats
from tqdm import tqdm

from dlstream.adapters.redis.drift_store import DriftStore, PeekedWindows, async_redis
from dlstream.adapters.triton.answers import task_prediction
from dlstream.adapters.triton.client import AsyncTriton
from dlstream.adapters.triton.discovery import discover_once
from dlstream.config.settings import Settings
from dlstream.domain.catalog import ServedModel
from dlstream.domain.contract import PredictionData, PredictionEvent, Timing, new_request
from dlstream.drift.calibration import expected_windows_to_false_alert
from dlstream.drift.metrics import DriftMetrics
from dlstream.drift.monitor import DriftMonitor
from dlstream.models.reference import reference_statistics
from dlstream.models.samples import held_out_payloads
from dlstream.models.zoo.drifted import drifted_digits, noisy_speech, unseen_topic_texts

log = structlog.get_logger("dlstream.bench")
MODELS = ("digits", "speech_digits", "text_topics")
RATES = (0.01, 0.05)
MIN_REFERENCE_SHARE = 0.5  # of the held-out predictions, kept for the reference and calibration
CONTENT_TYPES = {"image": "image/png", "audio": "audio/wav", "text": "text/plain"}


def drifted_sets(model: str, payloads: list[bytes]) -> dict[str, list[bytes]]:
    """The drifted traffic of each built-in model, made from its evaluation payloads."""
    if model == "digits":
        return {
            "inverted": drifted_digits(payloads, "inverted"),
            "rotated": drifted_digits(payloads, "rotated"),
        }
    if model == "speech_digits":
        return {"noisy_0db": noisy_speech(payloads, snr_db=0.0)}
    if model == "text_topics":
        return {"unseen_topics": unseen_topic_texts(len(payloads))}
    raise ValueError(f"no drifted traffic is defined for {model}; the benchmark covers {', '.join(MODELS)}")


async def _predict(settings: Settings, served: ServedModel, payloads: list[bytes]) -> list[PredictionEvent]:
    triton = AsyncTriton(settings.triton)
    try:
        results = []
        for start in range(0, len(payloads), 64):
            part = payloads[start : start + 64]
            names = served.card.output_names()
            results += await asyncio.gather(*(triton.infer(served.name, p, names) for p in part))
    finally:
        await triton.close()
    timing = Timing(queued_ms=0.0, inference_ms=0.0, total_ms=0.0)
    modality = served.card.modality
    return [
        task_prediction(
            new_request(modality, p, content_type=CONTENT_TYPES[modality.value], source="bench/drift"),
            served.card,
            r,
            timing=timing,
            k=settings.inference.top_k,
            full_probabilities_max_classes=settings.inference.full_probabilities_max_classes,
        )
        for p, r in zip(payloads, results, strict=True)
    ]


class RecordingStore(DriftStore):
    """The monitor's store, also keeping every window record it saves (the benchmark's p-values)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.records: list[dict[str, Any]] = []

    async def save_window_outcomes(
        self, model: str, version: str, peeked: PeekedWindows, **kwargs: Any
    ) -> bool:
        saved = await super().save_window_outcomes(model, version, peeked, **kwargs)
        if saved:
            self.records += list(kwargs.get("records", ()))
        return saved


@dataclass(frozen=True)
class Stream:
    """The monitor fed one stream: each window's p-value, what it cost, and the alerts it raised."""

    p_values: list[float]
    seconds: float
    roundtrips: int
    predictions: int
    alerts: int


def _windows(
    pool: Sequence[PredictionData], windows: int, size: int, *, seed: int, replace: bool
) -> list[PredictionData]:
    """``windows`` windows of ``size`` predictions from ``pool``, each with a new request id; ``replace``:
    a prediction may repeat, else no prediction is in two windows."""
    rng = np.random.default_rng(seed)
    if replace:
        picks = rng.integers(0, len(pool), size=windows * size).tolist()
    elif windows * size > len(pool):
        raise ValueError(f"{windows} disjoint windows of {size} need more than {len(pool)} predictions")
    else:
        picks = rng.permutation(len(pool))[: windows * size].tolist()
    return [pool[i].model_copy(update={"request_id": uuid.uuid4().hex}) for i in picks]


async def _feed(
    settings: Settings, references: dict[tuple[str, str], str], stream: list[PredictionData]
) -> Stream:
    alerts: list[Any] = []

    async def publish(records: Any) -> None:
        alerts.extend(records)

    store = RecordingStore(async_redis(settings.redis), settings.drift)
    try:
        await store.publish_references(references)
        monitor = DriftMonitor(settings, store, metrics=DriftMetrics(), publish=publish)
        batch = settings.drift.max_batch
        # The thresholds are measured once per version and kept: not part of the cost per prediction.
        for (model, version), document in references.items():
            reference = await monitor.reference(model, version)
            assert reference is not None, document[:80]
            await monitor.calibration(model, version, reference)
        roundtrips = store.roundtrips
        started = time.perf_counter()
        for start in range(0, len(stream), batch):
            await monitor.observe(stream[start : start + batch])
        elapsed = time.perf_counter() - started
        roundtrips = store.roundtrips - roundtrips
    finally:
        pattern = f"{settings.drift.key_prefix}:*"
        keys = [k async for k in store.client.scan_iter(match=pattern, count=1000)]
        for start in range(0, len(keys), 1000):
            await store.client.delete(*keys[start : start + 1000])
        await store.close()
    return Stream([r["p"] for r in store.records], elapsed, roundtrips, len(stream), len(alerts))


def false_alarms(
    p_values: Sequence[Sequence[float]], rate: float, alert_after: int, window_size: int
) -> dict[str, Any]:
    """The observed rate of flagged windows (``p_values``: each split's stream) with its exact
    (Clopper-Pearson) 95 % interval, and the false alerts the alert policy raised in the streams against
    the number independent windows flagged at the configured rate would raise in streams of those lengths."""
    streams = [np.asarray(stream) <= rate for stream in p_values]
    flags = np.concatenate(streams) if streams else np.zeros(0, dtype=bool)
    flagged = int(flags.sum())
    interval = stats.binomtest(flagged, len(flags), rate).proportion_ci(0.95)
    expected = expected_windows_to_false_alert(rate, alert_after)
    return {
        "configured_false_alarm_rate": rate,
        "windows": len(flags),
        "flagged_windows": flagged,
        "observed_false_alarm_rate": round(flagged / len(flags), 5),
        "observed_false_alarm_ci95": [round(interval.low, 5), round(interval.high, 5)],
        "configured_inside_ci95": bool(interval.low <= rate <= interval.high),
        "expected_windows_to_false_alert": round(expected, 1),
        "expected_predictions_to_false_alert": round(expected * window_size),
        "false_alerts": sum(len(_alert_delays(stream, alert_after)) for stream in streams),
        "expected_false_alerts": round(sum(expected_alerts(rate, alert_after, len(s)) for s in p_values), 2),
    }


def expected_alerts(rate: float, alert_after: int, windows: int) -> float:
    """Alerts expected in a stream of ``windows`` independent windows each flagged at ``rate``, under the
    policy of ``alert_after`` flagged windows in a row (the streak starting afresh after an alert)."""
    streak = np.zeros(alert_after)  # probability of each streak length before the window
    streak[0] = 1.0
    alerts = 0.0
    for _ in range(windows):
        moved = np.zeros(alert_after)
        moved[0] = (1.0 - rate) * streak.sum()
        moved[1:] = rate * streak[:-1]
        alerts += rate * streak[-1]
        moved[0] += rate * streak[-1]
        streak = moved
    return alerts


def _alert_delays(flags: Sequence[bool] | np.ndarray[Any, Any], alert_after: int) -> list[int]:
    """Windows from the start (or the last alert) to each alert of the policy (``alert_after`` flagged
    windows in a row), the state starting afresh after each alert."""
    delays, streak, since = [], 0, 0
    for flagged in flags:
        since += 1
        streak = streak + 1 if flagged else 0
        if streak >= alert_after:
            delays.append(since)
            streak = since = 0
    return delays


def detection(p_values: Sequence[float], rate: float, alert_after: int, window_size: int) -> dict[str, Any]:
    """On drifted traffic: the share of windows flagged and the mean events from drift to alert."""
    flags = np.asarray(p_values) <= rate
    delays = _alert_delays(flags, alert_after)
    return {
        "windows": len(flags),
        "detection_rate": round(float(flags.mean()), 4),
        "alerts": len(delays),
        "mean_detection_delay_events": round(float(np.mean(delays)) * window_size, 1) if delays else None,
    }


def _reference_document(
    pool: Sequence[PredictionData], indices: Sequence[int], labels: list[str], seed: int
) -> str:
    """The ``reference.json`` a build would write from these predictions (reference and calibration)."""
    probabilities = np.array([pool[i].probabilities for i in indices], dtype=np.float32)
    embedding = np.array([pool[i].embedding for i in indices], dtype=np.float32).reshape(len(indices), -1)
    return json.dumps(reference_statistics(probabilities, embedding, labels, seed))


def _split_rates(p_values: Sequence[Sequence[float]], rate: float) -> dict[str, Any]:
    """Each split's observed rate, the 95 % t-interval of their mean (windows of one split share a
    reference and a pool of traffic, so the splits, not the windows, are the independent draws), and the
    design effect: the variance of the flagged count over the splits against the binomial variance that
    independent windows would give (1 when they are independent; the binomial interval is then honest)."""
    flagged = np.array([float((np.asarray(p) <= rate).sum()) for p in p_values])
    sizes = np.array([float(len(p)) for p in p_values])
    rates = flagged / sizes
    share = flagged.sum() / sizes.sum()
    binomial = sizes.sum() * share * (1.0 - share)
    clustered = len(sizes) / max(len(sizes) - 1, 1) * float(((flagged - sizes * share) ** 2).sum())
    sd = float(rates.std(ddof=1)) if len(rates) > 1 else 0.0
    half = float(stats.t.ppf(0.975, len(rates) - 1)) * sd / np.sqrt(len(rates)) if len(rates) > 1 else 0.0
    low, high = float(rates.mean()) - half, float(rates.mean()) + half
    return {
        "per_split": [round(float(r), 4) for r in rates],
        "between_split_sd": round(sd, 4),
        "split_mean_ci95": [round(max(0.0, low), 4), round(high, 4)],
        "configured_inside_split_ci95": bool(low <= rate <= high),
        "design_effect": round(clustered / binomial, 2) if binomial > 0 else None,
    }


def bench_model(
    settings: Settings,
    model: str,
    *,
    windows: int,
    windows_per_split: int,
    drifted_windows: int,
    window_sizes: Sequence[int],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """The figures of one model at each window size."""
    served = discover_once(settings.triton).models.get(model)
    if served is None:
        raise ValueError(f"Triton does not serve {model}")
    version = served.versions[-1]
    payloads, _ = held_out_payloads(model, int(served.card.metrics.get("seed", 0)))
    progress(f"{model}: predicting {len(payloads)} held-out samples and their drifted versions")
    events = asyncio.run(_predict(settings, served, payloads))
    pool = [event.classification for event in events]
    if any(p.probabilities is None for p in pool[:1]):
        raise ValueError(f"{model}'s predictions carry no full probabilities to build references from")
    drifted_pools = {
        name: [event.classification for event in asyncio.run(_predict(settings, served, drifted))]
        for name, drifted in drifted_sets(model, payloads).items()
    }
    alert_after = settings.drift.alert_after_windows
    by_size: dict[str, Any] = {}
    for size in window_sizes:
        prefix = f"dlstream:bench:{uuid.uuid4().hex[:8]}"
        drift = settings.drift.model_copy(
            update={"window_size": size, "retrain_launcher": "none", "alert_cooldown_s": 0.0}
        )
        aside = set_aside(len(pool), size)
        if aside is None:
            by_size[str(size)] = {
                "measured": False,
                "why": f"{len(pool)} held-out predictions cannot give two windows of {size} as traffic and "
                f"keep half for the reference and calibration",
            }
            continue
        per_split = max(1, min(windows_per_split, aside // size))
        splits = -(-windows // per_split)
        streams: list[Stream] = []
        first_document = ""
        bar = tqdm(range(splits), desc=f"{model} w{size}", unit="split", leave=False, disable=None)
        for k in bar:
            order = np.random.default_rng(1000 + k).permutation(len(pool))
            run = settings.model_copy(
                update={"drift": drift.model_copy(update={"key_prefix": f"{prefix}:{k}"})}
            )
            document = _reference_document(pool, order[aside:].tolist(), served.labels, k)
            first_document = first_document or document
            traffic = [pool[i] for i in order[:aside]]
            count = min(per_split, windows - k * per_split)
            stream = _windows(traffic, count, size, seed=k, replace=False)
            streams.append(asyncio.run(_feed(run, {(model, version): document}, stream)))
        p_values = [s.p_values for s in streams]
        drifted: dict[str, Any] = {}
        for name, drifted_pool in drifted_pools.items():
            progress(f"{model}: {drifted_windows} windows of {size} of {name}")
            run = settings.model_copy(
                update={"drift": drift.model_copy(update={"key_prefix": f"{prefix}:{name}"})}
            )
            stream = _windows(drifted_pool, drifted_windows, size, seed=size + 1, replace=True)
            result = asyncio.run(_feed(run, {(model, version): first_document}, stream))
            drifted[name] = {str(rate): detection(result.p_values, rate, alert_after, size) for rate in RATES}
        first = json.loads(first_document)
        seconds = sum(s.seconds for s in streams)
        predictions = sum(s.predictions for s in streams)
        costs = np.array([s.seconds / s.predictions * 1e6 for s in streams])
        by_size[str(size)] = {
            "measured": True,
            "predictions_per_split": {
                "undrifted": aside,
                "reference": len(first["softmax_sample"]),
                "calibration": len(first["calibration_softmax_sample"]),
            },
            "splits": splits,
            "windows_per_split": per_split,
            "false_alarms": {
                str(rate): {
                    **false_alarms(p_values, rate, alert_after, size),
                    **_split_rates(p_values, rate),
                }
                for rate in RATES
            },
            "drifted": drifted,
            # The median over splits: a split that a stall of the machine (another process, the
            # hypervisor) happened to hit does not set the figure; the mean and spread are beside it.
            "us_per_prediction": round(float(np.median(costs)), 1),
            "us_per_prediction_mean": round(seconds / predictions * 1e6, 1),
            "us_per_prediction_p10_p90": [round(float(v), 1) for v in np.percentile(costs, [10, 90])],
            "redis_roundtrips_per_prediction": round(sum(s.roundtrips for s in streams) / predictions, 5),
            "alerts_on_undrifted_traffic_at_configured_rate": sum(s.alerts for s in streams),
        }
    return {
        "version": version,
        "held_out_predictions": len(pool),
        "parse_us_per_prediction": parse_cost(events),
        "window_sizes": by_size,
    }


def set_aside(held_out: int, window_size: int) -> int | None:
    """How many of ``held_out`` predictions a split sets aside as traffic for windows of ``window_size``: a
    third, and at least two windows' worth so that a split gives two disjoint windows (one window per split
    would double the splits, each calibrated afresh); None when that would leave less than half for the
    reference and calibration."""
    aside = max(held_out // 3, 2 * window_size)
    return aside if held_out - aside >= MIN_REFERENCE_SHARE * held_out else None


def parse_cost(events: Sequence[PredictionEvent], count: int = 5000) -> float:
    """Microseconds the monitor's agent spends parsing one prediction event from its Kafka value."""
    values = [events[i % len(events)].to_kafka().value for i in range(count)]
    started = time.perf_counter()
    for value in values:
        PredictionEvent.from_kafka(value)
    return round((time.perf_counter() - started) / count * 1e6, 1)


def bench_drift(
    settings: Settings,
    *,
    models: Sequence[str] = MODELS,
    windows: int = 5000,
    windows_per_split: int = 5,
    drifted_windows: int = 100,
    window_sizes: Sequence[int] = (50, 200),
) -> dict[str, Any]:
    """The monitor's figures per model and window size (see the module's description)."""
    bar = tqdm(total=len(models), desc="bench drift", unit="model", disable=None)

    def progress(message: str) -> None:
        bar.set_postfix_str(message)
        log.info("bench.drift", step=message)

    results = {}
    try:
        for model in models:
            results[model] = bench_model(
                settings,
                model,
                windows=windows,
                windows_per_split=windows_per_split,
                drifted_windows=drifted_windows,
                window_sizes=window_sizes,
                progress=progress,
            )
            bar.update()
    finally:
        bar.close()
    return {
        "configured_false_alarm_rates": list(RATES),
        "alert_after_windows": settings.drift.alert_after_windows,
        "calibration_windows": settings.drift.calibration_windows,
        "windows": windows,
        "max_windows_per_split": windows_per_split,
        "models": results,
    }
