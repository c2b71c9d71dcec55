"""Prometheus metrics of the drift monitor, in a registry of their own (no global state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

P_VALUE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)


@dataclass
class DriftMetrics:
    """What the monitor exports on its metrics port (the Grafana dashboard reads these names)."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.predictions = Counter(
            "dlstream_drift_predictions",
            "Predictions observed (redeliveries excluded).",
            ["model"],
            registry=r,
        )
        self.windows = Counter(
            "dlstream_drift_windows", "Windows evaluated.", ["model", "version", "flagged"], registry=r
        )
        self.statistic = Gauge(
            "dlstream_drift_statistic",
            "Statistic of the last window's test.",
            ["model", "version", "test"],
            registry=r,
        )
        self.p_value = Gauge(
            "dlstream_drift_p_value", "Combined p-value of the last window.", ["model", "version"], registry=r
        )
        # Under no drift p-values are uniform or, with conservative tests, pushed towards 1: this shows which.
        self.window_p_values = Histogram(
            "dlstream_drift_window_p_value",
            "Combined p-value of each window.",
            ["model"],
            buckets=P_VALUE_BUCKETS,
            registry=r,
        )
        self.alerts = Counter("dlstream_drift_alerts", "Alerts raised.", ["model"], registry=r)
        self.labels = Counter(
            "dlstream_feedback_labels",
            "Labels received: joined (true) or waiting for their prediction (early).",
            ["matched"],
            registry=r,
        )
        self.accuracy = Gauge(
            "dlstream_feedback_accuracy",
            "Accuracy on labelled predictions.",
            ["model", "version"],
            registry=r,
        )
        self.retraining_runs = Counter(
            "dlstream_retraining_runs",
            "Retraining jobs by outcome (started, promoted, rejected, failed).",
            ["model", "outcome"],
            registry=r,
        )
        self.webhook_failures = Counter(
            "dlstream_drift_webhook_failures", "Failed webhook calls.", registry=r
        )
        self.window_seconds = Histogram(
            "dlstream_drift_window_seconds", "Time to evaluate one window.", registry=r
        )
