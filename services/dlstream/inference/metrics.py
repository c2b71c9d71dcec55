"""Prometheus metrics of the inference workers, in a registry of their own (no global state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class InferenceMetrics:
    """Counters and histograms exported on the worker's metrics port."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events_in = Counter("dlstream_events_in", "Events consumed.", ["topic"], registry=r)
        self.predictions_out = Counter(
            "dlstream_predictions_out", "Predictions produced.", ["model"], registry=r
        )
        self.dead_letters = Counter("dlstream_dead_letters", "Dead letters produced.", ["reason"], registry=r)
        self.retries = Counter("dlstream_inference_retries", "Waits after transient failures.", registry=r)
        self.batch_size = Histogram(
            "dlstream_batch_size", "Events per batch.", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r
        )
        self.triton_seconds = Histogram(
            "dlstream_triton_seconds", "Triton round trip of a batch.", registry=r
        )
        self.waiting = Gauge(
            "dlstream_events_waiting_for_model", "Events waiting for their model to be served.", registry=r
        )
        self.models_served = Gauge(
            "dlstream_models_served", "Models discovered in Triton, per modality.", ["modality"], registry=r
        )
        self.consumer_lag = Gauge(
            "dlstream_consumer_lag",
            "Records of an assigned partition not yet committed by the worker's group.",
            ["topic", "partition"],
            registry=r,
        )
