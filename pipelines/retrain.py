"""Retraining: base data plus labelled feedback joined with the original payloads, judged against the serving
version on held-out feedback, and promoted to version N+1 only when better.

The pieces that need no services (recipes, the split, the evaluation) are here; ``services.drift.retrain_run``
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

from pipelines.builders.common import BuildResult, finish_build
from pipelines.preprocess.errors import PayloadError
from pipelines.serving import DECODERS, load_runner
from pipelines.train import Augment, TrainConfig, predict, train_classifier

# Below this many held-out feedback samples the new reference also takes the base held-out data.
MIN_REFERENCE_FEEDBACK = 50


@dataclass(frozen=True)
class Recipe:
    """How one model is trained again: its network, base training data, inputs and training settings."""

    labels: list[str]
    network: Callable[[], nn.Module]
    base_training: Callable[[int], tuple[torch.Tensor, torch.Tensor]]
    inputs: Callable[[list[bytes]], torch.Tensor]
    config: Callable[[int, int], TrainConfig]
    epochs: int
    serving: dict[str, str]
    check: Callable[[bytes], object]
    augment: Augment | None = None


def _tensor_inputs(decoder: str) -> Callable[[list[bytes]], torch.Tensor]:
    def inputs(payloads: list[bytes]) -> torch.Tensor:
        return torch.from_numpy(np.stack([DECODERS[decoder](p) for p in payloads]))

    return inputs


def _digits() -> Recipe:
    from pipelines.builders.digits import TEST_FRACTION, random_affine
    from pipelines.data.mnist import LABELS, load_mnist
    from pipelines.data.split import stratified_split
    from pipelines.models.digits import DigitsNet
    from pipelines.preprocess.image import DIGIT_MEAN, DIGIT_STD

    def base(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = load_mnist()
        split = stratified_split(data.labels, TEST_FRACTION, seed)
        pixels = torch.from_numpy(data.images[split.train]).float().div(255.0).unsqueeze(1)
        return (pixels - DIGIT_MEAN) / DIGIT_STD, torch.from_numpy(data.labels[split.train])

    return Recipe(
        labels=list(LABELS),
        network=lambda: DigitsNet(num_classes=len(LABELS)),
        base_training=base,
        inputs=_tensor_inputs("digit"),
        config=lambda epochs, seed: TrainConfig(epochs=epochs, seed=seed),
        epochs=12,
        serving={"runner": "tensor", "decoder": "digit"},
        check=DECODERS["digit"],
        augment=random_affine,
    )


def _speech_digits() -> Recipe:
    from pipelines.builders.speech_digits import augment_spectrogram
    from pipelines.data.spoken_digits import WORDS, make_spoken_digits
    from pipelines.models.speech import SpeechNet
    from pipelines.preprocess.audio import decode_speech

    def base(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = make_spoken_digits(seed)
        x = torch.from_numpy(np.stack([decode_speech(c.wav) for c in data.train]))
        return x, torch.tensor([c.label for c in data.train])

    return Recipe(
        labels=list(WORDS),
        network=lambda: SpeechNet(num_classes=len(WORDS)),
        base_training=base,
        inputs=_tensor_inputs("speech"),
        config=lambda epochs, seed: TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=seed),
        epochs=10,
        serving={"runner": "tensor", "decoder": "speech"},
        check=DECODERS["speech"],
        augment=augment_spectrogram,
    )


def _text_topics() -> Recipe:
    from pipelines.builders.text_topics import TEST_FRACTION
    from pipelines.data.fortunes import CATEGORIES, load_fortunes
    from pipelines.data.split import stratified_split
    from pipelines.models.text import TextHead, encode, load_encoder
    from pipelines.preprocess.text import decode_text

    def base(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        texts, label_list = load_fortunes()
        labels = np.array(label_list, dtype=np.int64)
        split = stratified_split(labels, TEST_FRACTION, seed)
        embedded = encode(load_encoder(), [texts[i] for i in split.train])
        return torch.from_numpy(embedded), torch.from_numpy(labels[split.train])

    def inputs(payloads: list[bytes]) -> torch.Tensor:
        return torch.from_numpy(encode(load_encoder(), [decode_text(p) for p in payloads]))

    return Recipe(
        labels=list(CATEGORIES),
        network=lambda: TextHead(num_classes=len(CATEGORIES)),
        base_training=base,
        inputs=inputs,
        config=lambda epochs, seed: TrainConfig(
            epochs=epochs, batch_size=64, lr=2e-3, weight_decay=1e-2, seed=seed
        ),
        epochs=60,
        serving={"runner": "text"},
        check=decode_text,
    )


RECIPES: dict[str, Callable[[], Recipe]] = {
    "digits": _digits,
    "speech_digits": _speech_digits,
    "text_topics": _text_topics,
}


def recipe_for(model: str) -> Recipe:
    """The model's recipe.

    Raises:
        KeyError: the model cannot be retrained (imagenet is a pretrained network used as is).
    """
    if model not in RECIPES:
        raise KeyError(f"{model} cannot be retrained; retrainable: {', '.join(RECIPES)}")
    return RECIPES[model]()


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


def decodable(recipe: Recipe, payloads: list[bytes]) -> list[bool]:
    """Which payloads the model's preprocessing accepts (a corrupt one is left out of training)."""
    ok = []
    for payload in payloads:
        try:
            recipe.check(payload)
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
        probabilities, _ = runner.forward(items)
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
    """A network trained on base data plus feedback, and its accuracies."""

    network: nn.Module
    feedback_accuracy: float
    base_accuracy: float
    train_samples: int
    epochs: int


def train_candidate(
    recipe: Recipe,
    feedback: Feedback,
    base_test: tuple[list[bytes], list[int]],
    *,
    epochs: int | None,
    feedback_weight: int,
    seed: int,
) -> Candidate:
    """Train a fresh network on the base training data plus ``feedback_weight`` copies of the feedback."""
    base_x, base_y = recipe.base_training(seed)
    parts_x, parts_y = [base_x], [base_y]
    if feedback.train_payloads:
        fx = recipe.inputs(feedback.train_payloads)
        fy = torch.tensor(feedback.train_labels)
        parts_x += [fx] * feedback_weight
        parts_y += [fy] * feedback_weight
    inputs, labels = torch.cat(parts_x), torch.cat(parts_y)
    network = recipe.network()
    used_epochs = epochs or recipe.epochs
    config = recipe.config(used_epochs, seed)
    train_classifier(network, inputs, labels, config, augment=recipe.augment, desc="retrain")
    eval_x = recipe.inputs(feedback.eval_payloads) if feedback.eval_payloads else None
    feedback_accuracy = accuracy(network, eval_x, feedback.eval_labels) if eval_x is not None else 0.0
    base_accuracy = accuracy(network, recipe.inputs(base_test[0]), base_test[1])
    return Candidate(network, feedback_accuracy, base_accuracy, len(inputs), used_epochs)


def export_candidate(
    recipe: Recipe,
    candidate: Candidate,
    *,
    name: str,
    model_dir: Path,
    version: int,
    feedback: Feedback,
    base_test: tuple[list[bytes], list[int]],
    metrics: dict[str, Any],
    seed: int,
    started: float,
) -> BuildResult:
    """Write version ``version`` atomically. Its reference statistics describe the traffic it was trained
    for: the held-out feedback (with the base held-out data too when there is little feedback)."""
    payloads, truth = list(feedback.eval_payloads), list(feedback.eval_labels)
    if len(payloads) < MIN_REFERENCE_FEEDBACK:
        payloads += base_test[0]
        truth += base_test[1]
    inputs = recipe.inputs(payloads)
    probabilities, embeddings = predict(candidate.network, inputs)
    truth_array: npt.NDArray[np.int64] = np.array(truth, dtype=np.int64)
    return finish_build(
        name=name,
        model_dir=model_dir,
        version=version,
        network=candidate.network,
        example=inputs[:2],
        probabilities=probabilities.numpy(),
        embeddings=embeddings.numpy(),
        truth=truth_array,
        labels=recipe.labels,
        extra_metrics=metrics,
        seed=seed,
        started=started,
        replace=False,
        extra_files={"serving.json": recipe.serving},
    )
