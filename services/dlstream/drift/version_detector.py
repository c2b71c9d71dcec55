"""One model version's drift detector as an I/O-free object: the monitor restores it, feeds it windows and
applies what it decides.

It holds the version's reference statistics, their calibration at the monitor's window size, and its state
between windows (:class:`VersionState`); each window it is fed is tested against the reference
(:func:`evaluate_window`), counted, and turned into a decision about the model's alert (:func:`alert_action`).
Saving and restoring the state is a string, kept in Redis by the monitor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from dlstream.config.settings import DriftSettings
from dlstream.domain.contract import format_time
from dlstream.domain.monitoring import CalibrationSummary, VersionSummary
from dlstream.drift.alerting import AlertAction, VersionState, alert_action
from dlstream.drift.calibration import Calibration, expected_windows_to_false_alert
from dlstream.drift.windows import Reference, WindowResult, decode_rows, evaluate_window


@dataclass(frozen=True)
class Judgement:
    """A window's test results and what it does to the model's alert."""

    result: WindowResult
    action: AlertAction


class VersionDetector:
    """The detector of one model version."""

    def __init__(
        self,
        version: str,
        reference: Reference,
        calibration: Calibration,
        settings: DriftSettings,
        state: VersionState | None = None,
    ) -> None:
        self.version = version
        self.reference = reference
        self.calibration = calibration
        self.settings = settings
        self.state = state or VersionState()

    @classmethod
    def restore(
        cls,
        version: str,
        reference: Reference,
        calibration: Calibration,
        settings: DriftSettings,
        saved: str | bytes | None,
    ) -> VersionDetector:
        """The detector with the state :meth:`save` returned (a fresh one for None)."""
        return cls(version, reference, calibration, settings, VersionState.from_json(saved))

    def save(self) -> str:
        """The state to restore from."""
        return self.state.to_json()

    def update(
        self, rows: bytes, width: int, *, open_alert_version: str | None, cooling_down: bool
    ) -> Judgement:
        """Test one full window of rows (one string of rows of ``width`` bytes), count it, and decide: raise
        the model's alert, resolve the open one (``open_alert_version`` is its version, None when none is
        open), or nothing."""
        settings = self.settings
        result = evaluate_window(
            decode_rows(rows, width),
            self.calibration,
            false_alarm_rate=settings.false_alarm_rate,
            seed=self.reference.seed + self.state.windows,
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

    def summary(self) -> VersionSummary:
        """What `drift status` shows of the version."""
        state = self.state
        return VersionSummary(
            windows=state.windows,
            flagged_windows=state.flagged_windows,
            flagged_streak=state.flagged_streak,
            last_p_value=state.last_p_value,
            last_tests=state.last_tests,
            class_counts={
                label: count
                for label, count in zip(self.reference.labels, state.class_counts, strict=True)
                if count
            },
            confidence_histogram=state.confidence_histogram,
            calibration=self.calibration_summary(),
            updated_at=format_time(datetime.now(UTC)),
        )

    def calibration_summary(self) -> CalibrationSummary:
        """How the thresholds were set, and the false-alert rate they give: the expected windows (and
        predictions) of undrifted traffic between false alerts under the alert policy."""
        settings = self.settings
        windows = expected_windows_to_false_alert(settings.false_alarm_rate, settings.alert_after_windows)
        return CalibrationSummary(
            null_windows=self.calibration.windows,
            calibration_predictions=len(self.reference.calibration_softmax),
            reference_predictions=len(self.reference.softmax),
            false_alarm_rate=settings.false_alarm_rate,
            alert_after_windows=settings.alert_after_windows,
            expected_windows_to_false_alert=round(windows, 1),
            expected_predictions_to_false_alert=round(windows * self.calibration.window_size),
        )
