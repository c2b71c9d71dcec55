"""The demo stream of ``make up``: held-out samples of each model published, their predictions shown."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from dlstream.adapters.triton.discovery import discover_once
from dlstream.client.publisher import Outgoing, Publisher
from dlstream.client.subscriber import subscribe
from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality, PredictionEvent

CONTENT_TYPES = {Modality.IMAGE: "image/png", Modality.AUDIO: "audio/wav", Modality.TEXT: "text/plain"}


@dataclass
class DemoScore:
    """Predictions received and how many matched the sample's true label, per modality."""

    received: dict[str, int] = field(default_factory=dict)
    correct: dict[str, int] = field(default_factory=dict)
    sent: int = 0

    def add(self, modality: str, hit: bool) -> None:
        """Count one prediction."""
        self.received[modality] = self.received.get(modality, 0) + 1
        self.correct[modality] = self.correct.get(modality, 0) + int(hit)


def run_demo(
    settings: Settings,
    *,
    per_modality: int,
    rate: float | None,
    timeout_s: float,
    show: Callable[[str], None],
) -> DemoScore:
    """Publish ``per_modality`` held-out samples per modality to its default model, as Triton serves it,
    and show each prediction as it arrives (modalities whose default model has no installed plugin, and so
    no held-out samples, are skipped)."""
    from dlstream.models.registry import plugins
    from dlstream.models.samples import held_out_payloads

    catalog = discover_once(settings.triton, overrides=settings.inference.default_models)
    truth: dict[str, tuple[Modality, str | None]] = {}
    with Publisher(settings, source="dlstream/demo") as publisher:
        for modality in Modality:
            model = catalog.default_name(modality)
            if model is None or model not in catalog.models or model not in plugins():
                show(f"{modality.value:<5} skipped: no default model with held-out samples is served")
                continue
            payloads, label_ids = held_out_payloads(model, 0)
            labels = catalog.models[model].labels
            # Held-out sets are ordered by class; a seeded sample shows every class.
            chosen = random.Random(0).sample(range(len(payloads)), min(per_modality, len(payloads)))
            items = [Outgoing(payloads[i], CONTENT_TYPES[modality], f"{model}[{i}]") for i in chosen]
            sent = publisher.publish_all(modality, items, rate=rate, total=len(items))
            for i, (event, _) in zip(chosen, sent, strict=True):
                true = labels[label_ids[i]] if label_ids is not None and labels else None
                truth[event.id] = (modality, true)
    score = DemoScore(sent=len(truth))
    for prediction in subscribe(settings, follow=True, ids=truth, idle_timeout_s=timeout_s):
        modality, true = truth[prediction.data.request_id]
        score.add(modality.value, prediction.classification.label == true)
        show(_line(prediction, true))
    return score


def _line(prediction: PredictionEvent, true: str | None) -> str:
    d = prediction.classification
    verdict = "" if true is None else ("  ok" if d.label == true else f"  MISS (true {true})")
    return (
        f"{d.modality.value:<5} {d.model + ':v' + d.model_version:<18} {d.label[:28]:<28} {d.score:6.3f}  "
        f"{d.timing.total_ms:8.1f} ms{verdict}"
    )
