"""``dlstream models retrain``: one retraining job, from the monitor's feedback to a version Triton serves.

The job records its progress in the model's retraining run in Redis (the monitor counts the outcome from
there, whichever launcher started it) and releases the model's lock when it ends, whatever the outcome.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import structlog
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from pipelines.export import next_version
from pipelines.publish import publish_references
from pipelines.retrain import (
    decodable,
    export_candidate,
    retrainable_spec,
    serving_accuracy,
    split_feedback,
    train_candidate,
)
from services.client.reader import read_records
from services.common.contract import header_map
from services.common.errors import StackError
from services.common.settings import Settings, TritonSettings
from services.drift.store import with_store
from services.retrain.policy import promotion

log = structlog.get_logger("dlstream.retrain")
TRITON_LOAD_TIMEOUT_S = 300.0


def join_payloads(settings: Settings, feedback: list[dict[str, Any]]) -> list[tuple[bytes, str]]:
    """``(payload, true label)`` for each feedback record whose request is still in its request topic, in
    request-id order (so the seeded split depends only on which requests were labelled)."""
    wanted: dict[str, str] = {record["request_id"]: record["label"] for record in feedback}
    topics = sorted({settings.topics.request(record["modality"]) for record in feedback})
    joined: dict[str, tuple[bytes, str]] = {}
    for record in read_records(settings.kafka, topics):
        ids = header_map(record.headers).get("ce_id")
        request_id = ids[0].decode(errors="replace") if ids else None
        if request_id in wanted and request_id not in joined:
            joined[request_id] = (bytes(record.value or b""), wanted[request_id])
    return [joined[request_id] for request_id in sorted(joined)]  # an order that does not depend on Kafka's


def triton_endpoints(triton: TritonSettings) -> list[str]:
    """HTTP host:port of every Triton replica (``triton.replicas``; ``dns:NAME:PORT`` is resolved)."""
    if not triton.replicas.strip():
        return [triton.http_url]
    endpoints: list[str] = []
    for item in (part.strip() for part in triton.replicas.split(",")):
        if not item:
            continue
        if item.startswith("dns:"):
            host, _, port = item[len("dns:") :].rpartition(":")
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except OSError as exc:
                raise StackError(f"cannot resolve the Triton replicas {item!r}: {exc}") from exc
            endpoints += sorted({f"{info[4][0]}:{port}" for info in infos})
        else:
            endpoints.append(item)
    return endpoints


def load_in_triton(settings: Settings, model: str, version: int) -> float:
    """Ask every Triton replica to load the model's newest version and wait until each serves it; seconds
    it took. Replicas run in explicit model-control mode, so each must be asked (a Service would reach one).
    """
    started = time.monotonic()
    endpoints = triton_endpoints(settings.triton)
    clients = [triton_http.InferenceServerClient(url=url, network_timeout=600.0) for url in endpoints]
    try:
        for url, client in zip(endpoints, clients, strict=True):
            try:
                client.load_model(model)
            except InferenceServerException as exc:
                raise StackError(f"Triton at {url} could not load {model} version {version}: {exc}") from exc
        for url, client in zip(endpoints, clients, strict=True):
            while not _ready(client, model, version):
                if time.monotonic() - started > TRITON_LOAD_TIMEOUT_S:
                    raise StackError(f"Triton at {url} did not make {model} version {version} ready")
                time.sleep(0.5)
    finally:
        for client in clients:
            client.close()
    log.info("retrain.loaded", model=model, version=version, replicas=endpoints)
    return time.monotonic() - started


def _ready(client: Any, model: str, version: int) -> bool:
    try:
        return bool(client.is_model_ready(model, str(version)))
    except InferenceServerException:
        return False


def run_retraining(
    settings: Settings, *, model: str, alert_id: str | None, repository: Path
) -> dict[str, Any]:
    """Retrain ``model``; returns the run's report (also recorded in Redis). Raises on failure, after
    recording it and releasing the lock."""
    started = time.monotonic()
    run = with_store(settings, lambda s: s.retrain_context(model))[2]
    owner = run.get(b"lock", b"").decode()
    if not (alert_id and run.get(b"alert_id", b"").decode() == alert_id and owner):
        # Started by hand, not by the monitor: take the lock here.
        owner = f"manual:{uuid.uuid4().hex[:8]}"
        if not with_store(settings, lambda s: s.lock_retraining(model, owner)):
            raise StackError(f"a retraining job of {model} is running (its lock is held)")
        with_store(
            settings,
            lambda s: s.record_run(
                model,
                {
                    "alert_id": alert_id or "",
                    "state": "running",
                    "started_at": str(time.time()),
                    "job": "manual",
                },
            ),
        )
    try:
        report = _retrain(settings, model=model, repository=repository, started=started)
        fields = {
            "state": "promoted" if report["promoted"] else "rejected",
            "detail": json.dumps(report),
            "finished_at": str(time.time()),
        }
        with_store(settings, lambda s: s.record_run(model, fields, history=True))
        return report
    except Exception as exc:
        failed = {
            "state": "failed",
            "detail": f"{type(exc).__name__}: {exc}",
            "finished_at": str(time.time()),
        }
        with_store(settings, lambda s: s.record_run(model, failed, history=True))
        raise
    finally:
        with_store(settings, lambda s: s.unlock_retraining(model, owner))


def _retrain(settings: Settings, *, model: str, repository: Path, started: float) -> dict[str, Any]:
    retrain = settings.retrain
    spec = retrainable_spec(model)
    labels = spec.labels()
    feedback_records = with_store(settings, lambda s: s.feedback(model))
    if not feedback_records:
        raise StackError(f"no labelled feedback for {model}")
    samples = join_payloads(settings, feedback_records)
    ok = decodable(spec, [payload for payload, _ in samples])
    usable = [sample for sample, good in zip(samples, ok, strict=True) if good]
    feedback, unknown_labels = split_feedback(
        usable, labels, eval_fraction=retrain.eval_fraction, seed=retrain.seed
    )
    log.info(
        "retrain.feedback",
        model=model,
        labelled=len(feedback_records),
        with_payload=len(samples),
        undecodable=len(samples) - len(usable),
        unknown_label=unknown_labels,
        train=len(feedback.train_labels),
        held_out=len(feedback.eval_labels),
    )
    if not feedback.eval_labels or not feedback.train_labels:
        raise StackError(f"too little usable feedback for {model}: {len(usable)} samples")
    model_dir = repository / model
    serving_version = next_version(model_dir) - 1
    serving_dir = model_dir / str(serving_version)
    base_payloads, base_labels = spec.held_out(retrain.seed)
    assert base_labels is not None  # every retrainable model has labelled held-out data
    base_test = (base_payloads, base_labels)
    serving_feedback = serving_accuracy(serving_dir, feedback.eval_payloads, feedback.eval_labels)
    serving_base = serving_accuracy(serving_dir, base_payloads, base_labels)
    candidate = train_candidate(
        spec,
        feedback,
        base_test,
        epochs=retrain.epochs,
        feedback_weight=retrain.feedback_weight,
        seed=retrain.seed,
    )
    verdict = promotion(
        serving_feedback_accuracy=serving_feedback,
        candidate_feedback_accuracy=candidate.feedback_accuracy,
        serving_base_accuracy=serving_base,
        candidate_base_accuracy=candidate.base_accuracy,
        min_gain=retrain.min_gain,
        max_base_drop=retrain.max_base_drop,
    )
    report: dict[str, Any] = {
        "model": model,
        "alert_id": retrain.alert_id,
        "serving_version": serving_version,
        "feedback_train": len(feedback.train_labels),
        "feedback_held_out": len(feedback.eval_labels),
        "serving_feedback_accuracy": round(serving_feedback, 4),
        "candidate_feedback_accuracy": round(candidate.feedback_accuracy, 4),
        "serving_base_accuracy": round(serving_base, 4),
        "candidate_base_accuracy": round(candidate.base_accuracy, 4),
        "epochs": candidate.epochs,
        "promoted": verdict.promote,
        "reason": verdict.reason,
    }
    log.info("retrain.verdict", **report)
    if not verdict.promote:
        return report
    new_version = serving_version + 1
    export_candidate(
        spec,
        candidate,
        model_dir=model_dir,
        version=new_version,
        feedback=feedback,
        base_test=base_test,
        metrics={
            "retrained_from": serving_version,
            "alert_id": retrain.alert_id,
            "train_samples": candidate.train_samples,
            "epochs": candidate.epochs,
            "feedback_accuracy": candidate.feedback_accuracy,
            "base_accuracy": candidate.base_accuracy,
            "serving_feedback_accuracy": serving_feedback,
            "serving_base_accuracy": serving_base,
        },
        seed=retrain.seed,
        started=started,
    )
    report["new_version"] = new_version
    # The monitor judges the new version's windows against this; published before Triton serves it.
    publish_references(settings, repository, [model])
    report["triton_load_s"] = round(load_in_triton(settings, model, new_version), 1)
    report["seconds"] = round(time.monotonic() - started, 1)
    log.info("retrain.promoted", model=model, version=new_version, seconds=report["seconds"])
    return report
