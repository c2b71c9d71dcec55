"""The drift monitor's pure parts: rows, window evaluation, streaks and alerts, retraining policy, jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dlstream.config.settings import load_settings
from dlstream.domain.contract import DriftAlert, FeedbackLabel, Modality, PredictionData, ScoredLabel, Timing
from dlstream.domain.monitoring import CalibrationSummary, ModelOverview, RetrainingRun, VersionSummary
from dlstream.drift.alerting import AlertAction, VersionState, alert_action
from dlstream.drift.status import status_lines
from dlstream.drift.windows import Reference, WindowRows, decode_rows, encode_row, evaluate_window
from dlstream.models.retraining import split_feedback
from dlstream.retrain.decisions import promotion, retrain_check
from dlstream.retrain.job_manifest import ALERT_ANNOTATION, MODEL_LABEL
from dlstream.retrain.launchers import KubernetesLauncher

pytestmark = pytest.mark.unit

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LABELS = [str(i) for i in range(4)]


def _prediction(probabilities: list[float] | None, embedding: list[float]) -> PredictionData:
    best = int(np.argmax(probabilities)) if probabilities else 2
    return PredictionData(
        request_id="r",
        modality=Modality.IMAGE,
        model="m",
        model_version="1",
        label=LABELS[best],
        score=0.7,
        top_k=[ScoredLabel(label=LABELS[best], score=0.7)],
        probabilities=probabilities,
        embedding=embedding,
        timing=Timing(queued_ms=0, inference_ms=0, total_ms=0),
    )


def test_rows_round_trip_with_and_without_probabilities() -> None:
    row = encode_row(_prediction([0.1, 0.7, 0.1, 0.1], [1.0, 2.0]), 1)
    full = decode_rows(row * 3, len(row))
    assert full.classes.tolist() == [1, 1, 1]
    assert full.probabilities is not None
    assert full.probabilities.shape == (3, 4)
    assert full.embedding.tolist()[0] == [1.0, 2.0]
    row = encode_row(_prediction(None, [0.5, 0.25, 0.125]), 2)
    bare = decode_rows(row, len(row))
    assert bare.probabilities is None
    assert bare.embedding.shape == (1, 3)
    assert bare.confidence[0] == pytest.approx(0.7)


def _reference(rng: np.random.Generator, n: int = 400) -> Reference:
    softmax, embedding = [], []
    for _ in range(2):
        logits = rng.normal(size=(n, 4)) + np.array([2.0, 1.0, 0.0, 0.0])
        softmax.append((np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).round(6))
        embedding.append(rng.normal(size=(n, 3)))
    return Reference(LABELS, softmax[0], embedding[0], softmax[1], embedding[1])


def _window(rng: np.random.Generator, shift: float, n: int = 60) -> WindowRows:
    logits = rng.normal(size=(n, 4)) + np.array([2.0 - shift, 1.0, 0.0, shift])
    softmax = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True)).round(6)
    return WindowRows(softmax.argmax(1), softmax.max(1), softmax, rng.normal(loc=shift, size=(n, 3)))


def test_clean_windows_stay_near_the_rate_and_shifted_ones_are_flagged_with_the_moved_class_first() -> None:
    rng = np.random.default_rng(0)
    calibration = _reference(rng).calibrate(60, 5000)
    clean = [
        evaluate_window(_window(rng, 0.0), calibration, false_alarm_rate=0.05, seed=k).flagged
        for k in range(200)
    ]
    assert sum(clean) <= 10 + 3 * np.sqrt(200 * 0.05 * 0.95)
    shifted = evaluate_window(_window(rng, 3.0), calibration, false_alarm_rate=0.05, seed=1)
    assert shifted.flagged
    assert {t.test for t in shifted.tests} == {"class_chi_square", "confidence_ks", "embedding_outliers"}
    assert shifted.moved[0] in (0, 3)
    assert sum(shifted.counts) == 60


def test_an_old_reference_without_a_calibration_sample_calibrates_on_half_of_its_sample() -> None:
    rng = np.random.default_rng(1)
    softmax = _reference(rng).softmax
    reference = Reference.from_json(
        {"labels": LABELS, "softmax_sample": softmax.tolist(), "embedding_sample": softmax[:, :2].tolist()}
    )
    assert len(reference.softmax) == len(reference.calibration_softmax) == len(softmax) // 2
    with pytest.raises(ValueError, match="calibration"):
        Reference.from_json(
            {"labels": LABELS, "softmax_sample": softmax[:1].tolist(), "embedding_sample": []}
        )


def _state(flags: list[bool]) -> VersionState:
    state = VersionState()
    for flagged in flags:
        state.windows += 1
        state.flagged_streak = state.flagged_streak + 1 if flagged else 0
        state.clean_streak = 0 if flagged else state.clean_streak + 1
    return state


def test_an_alert_needs_consecutive_flagged_windows_and_no_cooldown() -> None:
    args: dict[str, Any] = {"alert_after": 2, "resolve_after": 3}
    one = _state([False, True])
    two = _state([True, True])
    assert alert_action(one, "1", open_alert_version=None, cooling_down=False, **args) is AlertAction.NONE
    assert alert_action(two, "1", open_alert_version=None, cooling_down=False, **args) is AlertAction.RAISE
    assert alert_action(two, "1", open_alert_version=None, cooling_down=True, **args) is AlertAction.NONE
    assert alert_action(two, "1", open_alert_version="1", cooling_down=False, **args) is AlertAction.NONE


def test_an_open_alert_resolves_after_clean_windows_or_at_a_clean_window_of_a_new_version() -> None:
    args: dict[str, Any] = {
        "open_alert_version": "1",
        "cooling_down": False,
        "alert_after": 2,
        "resolve_after": 3,
    }
    assert alert_action(_state([True, False, False]), "1", **args) is AlertAction.NONE
    assert alert_action(_state([True, False, False, False]), "1", **args) is AlertAction.RESOLVE
    assert alert_action(_state([False]), "2", **args) is AlertAction.RESOLVE
    assert alert_action(_state([True]), "2", **args) is AlertAction.NONE


def test_version_state_accumulates_class_counts_and_confidence_over_windows() -> None:
    rng = np.random.default_rng(2)
    calibration = _reference(rng).calibrate(60, 2000)
    state = VersionState()
    for shift in (0.0, 3.0):
        state.update(evaluate_window(_window(rng, shift), calibration, false_alarm_rate=0.05))
    assert state.windows == 2
    assert sum(state.class_counts) == 120
    assert sum(state.confidence_histogram) == 120
    assert state.flagged_streak == 1
    assert state.last_tests.keys() == {"class_chi_square", "confidence_ks", "embedding_outliers"}


def test_version_state_survives_a_round_trip() -> None:
    state = _state([True, True, False])
    assert VersionState.from_json(state.to_json()) == state
    assert VersionState.from_json(None) == VersionState()


def test_retraining_waits_for_feedback_and_cooldown_and_runs_once_per_alert() -> None:
    base: dict[str, Any] = {"alert_id": "a", "min_feedback": 100, "cooldown_s": 600}
    assert retrain_check(last_run_alert_id=None, last_run_age_s=None, feedback=99, **base).start is False
    assert retrain_check(last_run_alert_id=None, last_run_age_s=None, feedback=100, **base).start is True
    assert retrain_check(last_run_alert_id="a", last_run_age_s=9999, feedback=500, **base).start is False
    assert retrain_check(last_run_alert_id="b", last_run_age_s=60, feedback=500, **base).start is False
    assert retrain_check(last_run_alert_id="b", last_run_age_s=700, feedback=500, **base).start is True


def test_promotion_needs_a_gain_on_feedback_and_no_large_loss_on_base_data() -> None:
    args: dict[str, Any] = {"min_gain": 0.02, "max_base_drop": 0.03}
    better = promotion(
        serving_feedback_accuracy=0.1,
        candidate_feedback_accuracy=0.9,
        serving_base_accuracy=0.98,
        candidate_base_accuracy=0.97,
        **args,
    )
    assert better.promote
    forgets = promotion(
        serving_feedback_accuracy=0.1,
        candidate_feedback_accuracy=0.9,
        serving_base_accuracy=0.98,
        candidate_base_accuracy=0.90,
        **args,
    )
    assert not forgets.promote
    assert "base" in forgets.reason
    same = promotion(
        serving_feedback_accuracy=0.5,
        candidate_feedback_accuracy=0.51,
        serving_base_accuracy=0.98,
        candidate_base_accuracy=0.98,
        **args,
    )
    assert not same.promote


def test_feedback_split_is_seeded_and_drops_unknown_labels() -> None:
    samples = [(bytes([i]), LABELS[i % 4]) for i in range(40)] + [(b"x", "unknown")]
    first, dropped = split_feedback(samples, LABELS, eval_fraction=0.25, seed=3)
    again, _ = split_feedback(samples, LABELS, eval_fraction=0.25, seed=3)
    assert dropped == 1
    assert len(first.eval_labels) == 10
    assert len(first.train_labels) == 30
    assert first == again
    assert set(first.eval_payloads).isdisjoint(first.train_payloads)


class _FakeBatchApi:
    def __init__(self) -> None:
        self.created: list[tuple[str, dict[str, Any]]] = []

    def create_namespaced_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        self.created.append((namespace, body))
        return {"metadata": {"name": body["metadata"]["generateName"] + "abcde"}}


def test_the_kubernetes_launcher_creates_the_job_from_the_template_that_k8s_ships() -> None:
    settings = load_settings(
        drift={"job_template": PROJECT_ROOT / "k8s/base/retrain/job-template.yaml", "namespace": "ml"}
    )
    api = _FakeBatchApi()
    handle = KubernetesLauncher(settings, batch_api=api).launch("speech_digits", "alert-1")
    assert handle == "job:ml/dlstream-retrain-speech-digits-abcde"
    namespace, job = api.created[0]
    assert namespace == "ml"
    assert job["metadata"]["labels"][MODEL_LABEL] == "speech-digits"
    assert job["metadata"]["annotations"][ALERT_ANNOTATION] == "alert-1"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["models", "retrain"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["DLSTREAM_RETRAIN__MODEL"] == "speech_digits"
    assert env["DLSTREAM_RETRAIN__ALERT_ID"] == "alert-1"


def test_status_lines_show_alerts_versions_accuracy_and_runs() -> None:
    alert = DriftAlert(
        status="open",
        model="digits",
        version="1",
        test="class_chi_square",
        statistic=300.0,
        p_value=1e-50,
        tests=[],
        window=1,
        window_size=50,
        predictions_seen=100,
        counts={"1": 50},
        expected_counts={"1": 5.0},
        moved=["1"],
    )
    calibration = CalibrationSummary(
        null_windows=2000,
        calibration_predictions=500,
        reference_predictions=500,
        false_alarm_rate=0.01,
        alert_after_windows=2,
        expected_windows_to_false_alert=40400.0,
        expected_predictions_to_false_alert=2020000,
    )
    overview = {
        "digits": ModelOverview(
            versions={
                "1": VersionSummary(
                    windows=3,
                    flagged_windows=2,
                    last_p_value=1e-9,
                    labelled=10,
                    accuracy=0.1,
                    calibration=calibration,
                )
            },
            open_alert=alert,
            feedback=10,
            retraining=RetrainingRun(state="running", alert_id=alert.id, job="pid:1"),
            retraining_locked=True,
        )
    }
    lines = status_lines(overview)
    assert lines[0].startswith(f"digits: OPEN ALERT {alert.id} on v1")
    assert "3 windows, 2 flagged" in lines[1]
    assert "accuracy 0.100 on 10 labels" in lines[1]
    assert "a false alert every ~2,020,000 predictions" in lines[1]
    assert lines[2] == f"  retraining: running (alert {alert.id}, job pid:1)"
    assert status_lines({}) == ["no predictions observed yet"]


def test_feedback_labels_round_trip_keyed_by_request() -> None:
    record = FeedbackLabel(request_id="abc", label="7").to_kafka()
    assert record.key == b"abc"
    assert FeedbackLabel.from_kafka(record.value).label == "7"
