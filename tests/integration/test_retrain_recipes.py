"""The retraining recipes of the built-in models, without services: train on base data plus labelled
feedback, export a version, and serve it through the runner Triton uses (the whole loop with the services
runs on the small plugin model in test_model_plugin). The prepared base training data comes from the
training-data cache, as in a retraining job."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from dlstream.config.settings import Settings
from dlstream.domain.card import read_card
from dlstream.models.data_cache import TrainingDataCache
from dlstream.models.retraining import (
    Feedback,
    export_candidate,
    retrainable_spec,
    serving_accuracy,
    train_candidate,
)
from dlstream.models.samples import held_out_payloads
from dlstream.models.zoo.drifted import drifted_digits, noisy_speech

pytestmark = pytest.mark.integration

BASE_SAMPLE = 600


@pytest.mark.parametrize(("model", "epochs"), [("digits", 1), ("text_topics", 20), ("speech_digits", 2)])
def test_a_recipe_trains_on_feedback_and_exports_a_version_the_runner_serves(
    model: str, epochs: int, tmp_path: Path
) -> None:
    payloads, labels = held_out_payloads(model, 0)
    assert labels is not None
    order = random.Random(0).sample(range(len(payloads)), 200)
    chosen = [payloads[i] for i in order]
    if model == "speech_digits":
        chosen = noisy_speech(chosen, snr_db=5.0)
    elif model == "digits":
        chosen = drifted_digits(chosen, "inverted")
    truth = [labels[i] for i in order]
    feedback = Feedback(chosen[:100], truth[:100], chosen[100:], truth[100:])
    # A sample of the base held-out data is enough to see that the network still knows it.
    sampled = random.Random(1).sample(range(len(payloads)), BASE_SAMPLE)
    base = ([payloads[i] for i in sampled], [labels[i] for i in sampled])
    spec = retrainable_spec(model)
    cache = TrainingDataCache(Settings().stack.cache_dir / "training-data")
    candidate = train_candidate(
        spec, feedback, base, epochs=epochs, feedback_weight=2, seed=0, data_cache=cache
    )
    print(f"{model}, {epochs} epochs: base accuracy {candidate.base_accuracy:.3f} (gate 0.5)")
    assert candidate.base_accuracy > 0.5, candidate
    result = export_candidate(
        spec,
        candidate,
        model_dir=tmp_path / model,
        version=2,
        feedback=feedback,
        base_test=base,
        metrics={"retrained_from": 1},
        seed=0,
        started=time.monotonic(),
    )
    card = read_card(result.path)
    assert (card.name, card.version, card.preprocessing) == (model, 2, spec.preprocessing)
    assert card.retraining.recipe == model
    assert (tmp_path / model / "config.pbtxt").read_text().count("version 2") == 1
    reference = json.loads((result.path / "reference.json").read_text())
    assert reference["labels"] == spec.labels()
    # What Triton will serve agrees with what the job measured before writing it.
    served = serving_accuracy(result.path, feedback.eval_payloads, feedback.eval_labels)
    assert served == pytest.approx(candidate.feedback_accuracy, abs=0.02)
