"""What the drift monitor knows about the served models, as typed records: each version's windows and
accuracy, each model's open alert, feedback and retraining run (`dlstream drift status`, the report, `models
list`). Pure: the Redis adapter decodes its hashes into these, and every reader takes them from there."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dlstream.domain.contract import DriftAlert

# States a retraining run ends in.
FINAL_RUN_STATES = frozenset({"promoted", "rejected", "failed", "no-recipe"})


class CalibrationSummary(BaseModel):
    """How a version's thresholds were set, and the false-alert rate they give: the expected windows (and
    predictions) of undrifted traffic between false alerts under the alert policy."""

    null_windows: int
    calibration_predictions: int
    reference_predictions: int
    false_alarm_rate: float
    alert_after_windows: int
    expected_windows_to_false_alert: float
    expected_predictions_to_false_alert: int


class VersionSummary(BaseModel):
    """One model version as the monitor saw it: its judged windows, the last test results, what it
    predicted, how its thresholds were set, and (when labels came back) its accuracy."""

    model_config = ConfigDict(frozen=True)

    windows: int = 0
    flagged_windows: int = 0
    flagged_streak: int = 0
    last_p_value: float | None = None
    last_tests: dict[str, list[float]] = Field(default_factory=dict)
    class_counts: dict[str, int] = Field(default_factory=dict)
    confidence_histogram: list[int] = Field(default_factory=list)
    calibration: CalibrationSummary | None = None
    updated_at: str | None = None
    predictions: int = 0
    labelled: int | None = None
    accuracy: float | None = None
    metric: dict[str, str | float] | None = Field(
        None,
        description="The task's metric on labelled predictions: name (accuracy, micro_f1, cer, ...), value.",
    )


class RetrainingRun(BaseModel):
    """A model's current or last retraining run, as the monitor and its job record it (times are Unix
    seconds as text, as Redis holds them; empty where not known yet, every field empty for a model that never
    had one). Fields Redis holds that are not named here are ignored."""

    model_config = ConfigDict(frozen=True)

    state: str = ""
    alert_id: str = ""
    job: str = ""
    lock: str = ""
    started_at: str = ""
    finished_at: str = ""
    feedback: str = ""
    from_version: str = ""
    detail: str = ""


class RetrainContext(BaseModel):
    """What deciding on a model's retraining needs: its open alert, how much feedback it has, its last run."""

    model_config = ConfigDict(frozen=True)

    open_alert: DriftAlert | None = None
    feedback: int = 0
    run: RetrainingRun = Field(default_factory=RetrainingRun)


class ModelOverview(BaseModel):
    """One model in `dlstream drift status`: its versions, open alert, feedback and retraining run."""

    model_config = ConfigDict(frozen=True)

    versions: dict[str, VersionSummary] = Field(default_factory=dict)
    open_alert: DriftAlert | None = None
    feedback: int = 0
    retraining: RetrainingRun | None = None
    retraining_locked: bool = False


def overview_json(overview: dict[str, ModelOverview]) -> dict[str, object]:
    """The overview as `drift status --json` prints it: a version's accuracy and labels only once it has
    labels, a model's alert and run as null when it has none."""
    return {
        model: {
            **info.model_dump(mode="json", exclude={"versions"}),
            "versions": {
                version: summary.model_dump(mode="json", exclude_none=True)
                for version, summary in info.versions.items()
            },
        }
        for model, info in overview.items()
    }
