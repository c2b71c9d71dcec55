"""``dlstream models retrain``: one retraining job, from the monitor's feedback to a version Triton serves.

The job records its progress in the model's retraining run in Redis (the monitor counts the outcome from
there, whichever launcher started it) and releases the model's lock when it ends, whatever the outcome.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import structlog

from dlstream.adapters.redis.drift_store import with_store
from dlstream.adapters.triton.control import load_in_triton
from dlstream.client.reader import read_records
from dlstream.config.settings import Settings
from dlstream.domain.card import ModelCard, a_task, read_card
from dlstream.domain.contract import header_map
from dlstream.domain.errors import StackError
from dlstream.models.data_cache import TrainingDataCache
from dlstream.models.export import next_version
from dlstream.models.preprocess.declared import preprocessor
from dlstream.models.retraining import (
    Feedback,
    decodable,
    export_candidate,
    retrainable_spec,
    serving_accuracy,
    split_feedback,
    train_candidate,
)
from dlstream.models.triton_config import serving_version as served_version
from dlstream.repository.references import publish_references
from dlstream.retrain.decisions import promotion
from dlstream.retrain.owner_command import base_reference, run_command, score, write_candidate
from dlstream.retrain.report import RetrainingReport

log = structlog.get_logger("dlstream.retrain")


class NoRecipe(StackError):
    """The model has no training recipe or command: the run ends ``no-recipe``."""


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


def run_retraining(
    settings: Settings, *, model: str, alert_id: str | None, repository: Path
) -> RetrainingReport:
    """Retrain ``model``; returns the run's report (also recorded in Redis). Raises on failure, after
    recording it and releasing the lock."""
    started = time.monotonic()
    run = with_store(settings, lambda s: s.retrain_context(model)).run
    owner = run.lock
    if not (alert_id and run.alert_id == alert_id and owner):
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
            "state": "promoted" if report.promoted else "rejected",
            "detail": report.to_json(),
            "finished_at": str(time.time()),
        }
        with_store(settings, lambda s: s.record_run(model, fields, history=True))
        return report
    except NoRecipe as exc:
        fields = {"state": "no-recipe", "detail": str(exc), "finished_at": str(time.time())}
        with_store(settings, lambda s: s.record_run(model, fields, history=True))
        log.warning("retrain.no_recipe", model=model)
        return RetrainingReport(model=model, promoted=False, reason=str(exc))
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


def _retrain(settings: Settings, *, model: str, repository: Path, started: float) -> RetrainingReport:
    model_dir = repository / model
    serving_version = served_version(model_dir)
    serving_dir = model_dir / str(serving_version)
    card = read_card(serving_dir)
    if card.retraining.kind == "none" or card.preprocessing is None:
        raise NoRecipe(f"{model} has no training recipe or command; the alert stands, nothing is retrained")
    if card.task.kind != "classification":
        raise NoRecipe(
            f"{model} is {a_task(card.task.kind)} model: its retraining gate is not built yet; the alert "
            "stands, nothing is retrained"
        )
    retrain = settings.retrain
    feedback_records = with_store(settings, lambda s: s.feedback(model))
    if not feedback_records:
        raise StackError(f"no labelled feedback for {model}")
    samples = join_payloads(settings, feedback_records)
    decode = preprocessor(card.preprocessing, "cpu", root=serving_dir).decode
    ok = decodable(decode, [payload for payload, _ in samples])
    usable = [sample for sample, good in zip(samples, ok, strict=True) if good]
    feedback, unknown_labels = split_feedback(
        usable, card.labels, eval_fraction=retrain.eval_fraction, seed=retrain.seed
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
    if card.retraining.kind == "command":
        return _retrain_by_command(
            settings, card, model_dir, serving_dir, feedback, started=started, repository=repository
        )
    spec = retrainable_spec(card.retraining.recipe or model)
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
        data_cache=TrainingDataCache(settings.stack.cache_dir / "training-data"),
    )
    report = _verdict(
        settings,
        model,
        serving_version,
        feedback,
        serving=(serving_feedback, serving_base),
        candidate=(candidate.feedback_accuracy, candidate.base_accuracy),
    )
    report.epochs = candidate.epochs
    if not report.promoted:
        return report
    new_version = next_version(model_dir)  # after a rollback, newer versions than the serving one exist
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
    return promote(settings, repository, model, new_version, report, started)


def _verdict(
    settings: Settings,
    model: str,
    serving_version: int,
    feedback: Feedback,
    *,
    serving: tuple[float, float],
    candidate: tuple[float, float],
) -> RetrainingReport:
    """The promotion gate's verdict on accuracies ``(held-out feedback, base data)``, as the run's report."""
    retrain = settings.retrain
    verdict = promotion(
        serving_feedback_accuracy=serving[0],
        candidate_feedback_accuracy=candidate[0],
        serving_base_accuracy=serving[1],
        candidate_base_accuracy=candidate[1],
        min_gain=retrain.min_gain,
        max_base_drop=retrain.max_base_drop,
    )
    report = RetrainingReport(
        model=model,
        alert_id=retrain.alert_id,
        serving_version=serving_version,
        feedback_train=len(feedback.train_labels),
        feedback_held_out=len(feedback.eval_labels),
        serving_feedback_accuracy=round(serving[0], 4),
        candidate_feedback_accuracy=round(candidate[0], 4),
        serving_base_accuracy=round(serving[1], 4),
        candidate_base_accuracy=round(candidate[1], 4),
        promoted=verdict.promote,
        reason=verdict.reason,
    )
    log.info("retrain.verdict", **report.model_dump(exclude_none=True))
    return report


def promote(
    settings: Settings, repository: Path, model: str, version: int, report: RetrainingReport, started: float
) -> RetrainingReport:
    """Publish the reference statistics of ``version`` and have every Triton replica serve it (through
    Triton's control API, with the key of this job's identity); ``report`` with the promotion's figures."""
    report.new_version = version
    # The monitor judges the new version's windows against this; published before Triton serves it.
    publish_references(settings, repository, [model])
    report.triton_load_s = round(load_in_triton(settings.triton, model, version), 1)
    report.seconds = round(time.monotonic() - started, 1)
    log.info("retrain.promoted", model=model, version=version, seconds=report.seconds)
    return report


def _retrain_by_command(
    settings: Settings,
    card: ModelCard,
    model_dir: Path,
    serving_dir: Path,
    feedback: Feedback,
    *,
    started: float,
    repository: Path,
) -> RetrainingReport:
    """Run the owner's training command on the feedback, judge its candidate through the same gate."""
    assert card.source is not None
    base_payloads, base_labels = base_reference(model_dir, card)
    serving_file = serving_dir / card.source.file
    with tempfile.TemporaryDirectory(prefix=f"dlstream-retrain-{card.name}-") as tmp:
        work = Path(tmp)
        log_path = settings.drift.log_dir / f"{card.name}-command.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        candidate_file = run_command(card, serving_dir, feedback, work, log_path)
        served = score(card, serving_dir, serving_file, feedback.eval_payloads)
        tried = score(card, serving_dir, candidate_file, feedback.eval_payloads)
        if base_labels is not None:
            serving_base = score(card, serving_dir, serving_file, base_payloads).accuracy(base_labels)
            candidate_base = score(card, serving_dir, candidate_file, base_payloads).accuracy(base_labels)
        else:
            # Unlabelled reference samples: the gate judges the held-out feedback alone.
            serving_base = candidate_base = 0.0
        report = _verdict(
            settings,
            card.name,
            card.version,
            feedback,
            serving=(served.accuracy(feedback.eval_labels), serving_base),
            candidate=(tried.accuracy(feedback.eval_labels), candidate_base),
        )
        report.command = card.retraining.command
        if not report.promoted:
            return report
        version = next_version(model_dir)
        write_candidate(
            model_dir,
            serving_dir,
            candidate_file,
            version=version,
            reference_payloads=list(feedback.eval_payloads) + base_payloads,
            reference_components=[1] * len(feedback.eval_payloads) + [0] * len(base_payloads),
            metrics={
                "retrained_from": card.version,
                "alert_id": settings.retrain.alert_id,
                "accuracy": report.candidate_feedback_accuracy,
                "evaluation": "held-out labelled feedback",
                "samples": len(feedback.eval_labels),
                "classes": len(card.labels),
            },
        )
    return promote(settings, repository, card.name, version, report, started)
