"""One model version's drift detector as an I/O-free object: the monitor restores it, feeds it windows and
applies what it decides.

It holds the version's reference statistics and its state between windows (:class:`VersionState`); each
window it is fed is tested against the reference (:func:`evaluate_window`), counted, and turned into a
decision about the model's alert (:func:`alert_action`). Saving and restoring the state is a string, kept in
Redis by the monitor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.common.contract import format_time
from services.common.settings import DriftSettings
from services.drift.policy import AlertAction, VersionState, alert_action
from services.drift.windows import Reference, WindowResult, decode_rows, evaluate_window


@dataclass(frozen=True)
class Judgement:
    """A window's test results and what it does to the model's alert."""

    result: WindowResult
    action: AlertAction


class VersionDetector:
    """The detector of one model version."""

    def __init__(
        self, version: str, reference: Reference, settings: DriftSettings, state: VersionState | None = None
    ) -> None:
        self.version = version
        self.reference = reference
        self.settings = settings
        self.state = state or VersionState()

    @classmethod
    def restore(
        cls, version: str, reference: Reference, settings: DriftSettings, saved: str | bytes | None
    ) -> VersionDetector:
        """The detector with the state :meth:`save` returned (a fresh one for None)."""
        return cls(version, reference, settings, VersionState.from_json(saved))

    def save(self) -> str:
        """The state to restore from."""
        return self.state.to_json()

    def update(
        self, rows: Sequence[bytes], *, open_alert_version: str | None, cooling_down: bool
    ) -> Judgement:
        """Test one full window of rows, count it, and decide: raise the model's alert, resolve the open one
        (``open_alert_version`` is its version, None when none is open), or nothing."""
        settings = self.settings
        result = evaluate_window(
            decode_rows(list(rows)),
            self.reference,
            false_alarm_rate=settings.false_alarm_rate,
            permutations=settings.mmd_permutations,
            seed=self.state.windows,
        )
        self.state.update(result)
        action = alert_action(
            self.state,
            self.version,
            open_alert_version=open_alert_version,
            cooling_down=cooling_down,
            alert_after=settings.alert_after_windows,
            resolve_after=settings.resolve_after_windows,
        )
        return Judgement(result, action)

    def summary(self) -> dict[str, Any]:
        """What `drift status` shows of the version."""
        state = self.state
        return {
            "windows": state.windows,
            "flagged_windows": state.flagged_windows,
            "flagged_streak": state.flagged_streak,
            "last_p_value": state.last_p_value,
            "last_tests": state.last_tests,
            "class_counts": {
                label: count
                for label, count in zip(self.reference.labels, state.class_counts, strict=True)
                if count
            },
            "confidence_histogram": state.confidence_histogram,
            "updated_at": format_time(datetime.now(UTC)),
        }
