"""Retraining: base data plus labelled feedback joined with the original payloads, judged against the serving
version on held-out feedback, and promoted to version N+1 only when better.

The pieces that need no services (the plugin's recipe, the split, the evaluation) are here;
``dlstream.retrain.job``
fetches the feedback from Redis and the payloads from Kafka and asks Triton to load the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from dlstream.models.build import BuildResult, finish_build
from dlstream.models.data_cache import TrainingDataCache, training_data
from dlstream.models.preprocess.declared import preprocessor
from dlstream.models.preprocess.errors import PayloadError
from dlstream.models.registry import load_spec
from dlstream.models.serving import load_runner
from dlstream.models.spec import ModelSpec
from dlstream.models.train import predict, train_classifier


def retrainable_spec(model: str) -> ModelSpec:
    """The plugin spec of ``model``, which has a training recipe.

    Raises:
        KeyError: no plugin of that name, or the plugin has no training recipe (a pretrained network).
    """
    spec = load_spec(model)
    if spec.training is None:
        raise KeyError(f"{model} cannot be retrained: its plugin has no training recipe")
    return spec


@dataclass(frozen=True)
class Feedback:
    """Labelled feedback joined with its payloads, split into training and held-out parts."""

    train_payloads: list[bytes]
    train_labels: list[int]
    eval_payloads: list[bytes]
    eval_labels: list[int]


def split_feedback(
    samples: list[tuple[bytes, str]], labels: list[str], *, eval_fraction: float, seed: int
) -> tuple[Feedback, int]:
    """Decodable ``(payload, label)`` samples split at random; also how many were dropped (unknown label or
    a payload that does not decode)."""
    kept = [(payload, labels.index(label)) for payload, label in samples if label in labels]
    dropped = len(samples) - len(kept)
    order = np.random.default_rng(seed).permutation(len(kept))
    cut = round(len(kept) * eval_fraction)
    held, train = [kept[i] for i in order[:cut]], [kept[i] for i in order[cut:]]
    return (
        Feedback(
            train_payloads=[p for p, _ in train],
            train_labels=[y for _, y in train],
            eval_payloads=[p for p, _ in held],
            eval_labels=[y for _, y in held],
        ),
        dropped,
    )


def decodable(decode: Callable[[bytes], object], payloads: list[bytes]) -> list[bool]:
    """Which payloads the model's preprocessing (``decode``) accepts (a corrupt one is left out of
    training)."""
    ok = []
    for payload in payloads:
        try:
            decode(payload)
        except PayloadError:
            ok.append(False)
        else:
            ok.append(True)
    return ok


def serving_accuracy(version_dir: Path, payloads: list[bytes], labels: list[int]) -> float:
    """Accuracy of a built version on payloads, through the same runner Triton uses."""
    if not payloads:
        return 0.0
    runner = load_runner(version_dir, "cpu")
    predicted: list[int] = []
    for start in range(0, len(payloads), 256):
        items = [runner.decode(p) for p in payloads[start : start + 256]]
        probabilities = runner.forward(items)[runner.card.outputs.scores]
        predicted += probabilities.argmax(axis=1).tolist()
    return float(np.mean(np.array(predicted) == np.array(labels)))


def accuracy(network: nn.Module, inputs: torch.Tensor, labels: list[int]) -> float:
    """Accuracy of a trained network on decoded inputs."""
    if not len(labels):
        return 0.0
    probabilities, _ = predict(network, inputs)
    return float((probabilities.argmax(dim=1).numpy() == np.array(labels)).mean())


@dataclass(frozen=True)
class Candidate:
    """A network trained on base data plus feedback, its accuracies, and the preprocessed inputs it was
    judged on (the held-out feedback, then the base held-out data), which the export reuses."""

    network: nn.Module
    feedback_accuracy: float
    base_accuracy: float
    train_samples: int
    epochs: int
    judged_inputs: torch.Tensor | None = None


def train_candidate(
    spec: ModelSpec,
    feedback: Feedback,
    base_test: tuple[list[bytes], list[int]],
    *,
    epochs: int | None,
    feedback_weight: int,
    seed: int,
    data_cache: TrainingDataCache | None = None,
) -> Candidate:
    """Train a fresh network on the base training data plus ``feedback_weight`` copies of the feedback.
    ``data_cache`` reads the prepared base training data when a build or an earlier job kept it."""
    if spec.training is None:
        raise KeyError(f"{spec.name} has no training recipe")
    recipe = spec.training
    inputs_of = preprocessor(spec.preprocessing).inputs
    base_x, base_y = training_data(spec, seed=seed, cache=data_cache)
    parts_x, parts_y = [base_x], [base_y]
    if feedback.train_payloads:
        fx = inputs_of(feedback.train_payloads)
        fy = torch.tensor(feedback.train_labels)
        parts_x += [fx] * feedback_weight
        parts_y += [fy] * feedback_weight
    inputs, labels = torch.cat(parts_x), torch.cat(parts_y)
    network = spec.network(len(spec.labels()))
    used_epochs = epochs or recipe.epochs
    config = recipe.config(used_epochs, seed)
    train_classifier(network, inputs, labels, config, augment=recipe.augment, desc="retrain")
    eval_x = inputs_of(feedback.eval_payloads) if feedback.eval_payloads else None
    feedback_accuracy = accuracy(network, eval_x, feedback.eval_labels) if eval_x is not None else 0.0
    base_x_test = inputs_of(base_test[0])
    base_accuracy = accuracy(network, base_x_test, base_test[1])
    judged = torch.cat([eval_x, base_x_test]) if eval_x is not None else base_x_test
    return Candidate(network, feedback_accuracy, base_accuracy, len(inputs), used_epochs, judged)


def export_candidate(
    spec: ModelSpec,
    candidate: Candidate,
    *,
    model_dir: Path,
    version: int,
    feedback: Feedback,
    base_test: tuple[list[bytes], list[int]],
    metrics: dict[str, Any],
    seed: int,
    started: float,
) -> BuildResult:
    """Write version ``version`` atomically. Its reference statistics describe the traffic it will serve:
    its own outputs on recent live traffic (the held-out feedback) together with the base held-out data, so
    that base traffic, drifted traffic and any mix of the two are all traffic it was built for.
    ``feedback`` and ``base_test`` are those the candidate was trained and judged with: their preprocessed
    inputs are reused."""
    payloads = list(feedback.eval_payloads) + list(base_test[0])
    truth = list(feedback.eval_labels) + list(base_test[1])
    inputs = candidate.judged_inputs
    if inputs is None or len(inputs) != len(payloads):
        inputs = preprocessor(spec.preprocessing).inputs(payloads)
    probabilities, embeddings = predict(candidate.network, inputs)
    truth_array: npt.NDArray[np.int64] = np.array(truth, dtype=np.int64)
    return finish_build(
        spec,
        model_dir=model_dir,
        version=version,
        network=candidate.network,
        example=inputs[:2],
        probabilities=probabilities.numpy(),
        embeddings=embeddings.numpy(),
        truth=truth_array,
        labels=spec.labels(),
        extra_metrics=metrics,
        seed=seed,
        started=started,
        replace=False,
        reference_components=np.array(
            [1] * len(feedback.eval_payloads) + [0] * len(base_test[0]), dtype=np.int64
        ),
    )
