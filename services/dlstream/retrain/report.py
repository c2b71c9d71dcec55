"""What a retraining run reports: the promotion gate's figures and, when it promoted, the new version."""

from __future__ import annotations

from pydantic import BaseModel


class RetrainingReport(BaseModel):
    """One retraining run's outcome, printed by `dlstream models retrain` and kept as the run's detail."""

    model: str
    promoted: bool
    reason: str
    alert_id: str | None = None
    serving_version: int | None = None
    feedback_train: int | None = None
    feedback_held_out: int | None = None
    serving_feedback_accuracy: float | None = None
    candidate_feedback_accuracy: float | None = None
    serving_base_accuracy: float | None = None
    candidate_base_accuracy: float | None = None
    epochs: int | None = None
    command: list[str] | None = None
    new_version: int | None = None
    triton_load_s: float | None = None
    seconds: float | None = None

    def to_json(self) -> str:
        """One JSON object, without the figures this run did not reach."""
        return self.model_dump_json(exclude_none=True)
