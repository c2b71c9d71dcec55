"""The generic builder: any :class:`ModelSpec` to a version folder with its card, configs and statistics."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from dlstream.domain.card import CARD_FILE, ModelCard, Outputs, Retraining, read_card
from dlstream.models.data_cache import TrainingDataCache, training_data
from dlstream.models.evaluate import classification_report, plot_confusion
from dlstream.models.export import EMBEDDING_DIMS, ServingModule, write_version
from dlstream.models.preprocess.declared import preprocessor
from dlstream.models.reference import pca_projection, reference_statistics
from dlstream.models.spec import ModelSpec
from dlstream.models.train import predict, train_classifier
from dlstream.models.triton_config import write_configs

CARD_METRICS = ("accuracy", "samples", "classes", "evaluation")


@dataclass(frozen=True)
class BuildResult:
    """What a build reports: where it wrote, its held-out metrics, and whether it was restored from the
    build cache rather than trained."""

    model: str
    version: int
    path: Path
    metrics: dict[str, Any]
    cached: bool = False


def card_for(spec: ModelSpec, *, version: int, labels: list[str], metrics: dict[str, Any]) -> ModelCard:
    """The card of a version built from ``spec``."""
    return ModelCard(
        name=spec.name,
        version=version,
        modality=spec.modality,
        labels=labels,
        outputs=Outputs(embedding_dims=EMBEDDING_DIMS),
        preprocessing=spec.preprocessing,
        plugin=spec.name,
        default=spec.default,
        metrics={k: metrics[k] for k in CARD_METRICS if k in metrics},
        retraining=Retraining(kind="recipe", recipe=spec.name) if spec.retrainable else Retraining(),
    )


def build_spec(
    spec: ModelSpec,
    repo: Path,
    *,
    version: int = 1,
    seed: int = 0,
    epochs: int | None = None,
    replace: bool = False,
    data_cache: TrainingDataCache | None = None,
) -> BuildResult:
    """Train (or load, for a pretrained spec), evaluate on the held-out payloads through the declared
    preprocessing Triton uses, and write ``repo/<name>/<version>/`` with its card and the model's configs.
    ``data_cache`` keeps the prepared training data for later builds and retraining jobs."""
    started = time.monotonic()
    labels = spec.labels()
    network = spec.network(len(labels))
    extra: dict[str, Any] = dict(spec.extra_metrics)
    if spec.training is not None:
        inputs, targets = training_data(spec, seed=seed, cache=data_cache)
        used = epochs or spec.training.epochs
        losses = train_classifier(
            network,
            inputs,
            targets,
            spec.training.config(used, seed),
            augment=spec.training.augment,
            desc=spec.name,
        )
        extra.update(train_samples=len(targets), epochs=used, final_train_loss=losses[-1])
    payloads, truth = spec.held_out(seed)
    held_inputs = preprocessor(spec.preprocessing).inputs(payloads)
    probabilities, embeddings = predict(network, held_inputs, batch_size=64)
    if spec.evaluate is not None:
        extra.update(spec.evaluate(probabilities.numpy(), labels))
    return finish_build(
        spec,
        model_dir=repo / spec.name,
        version=version,
        network=network,
        example=held_inputs[:2],
        probabilities=probabilities.numpy(),
        embeddings=embeddings.numpy(),
        truth=None if truth is None else np.asarray(truth, dtype=np.int64),
        labels=labels,
        extra_metrics=extra,
        seed=seed,
        started=started,
        replace=replace,
    )


def finish_build(
    spec: ModelSpec,
    *,
    model_dir: Path,
    version: int,
    network: nn.Module,
    example: torch.Tensor,
    probabilities: npt.NDArray[np.float32],
    embeddings: npt.NDArray[np.float32],
    truth: npt.NDArray[np.int64] | None,
    labels: list[str],
    extra_metrics: dict[str, Any],
    seed: int,
    started: float,
    replace: bool,
    reference_components: npt.NDArray[np.int64] | None = None,
) -> BuildResult:
    """Evaluate held-out predictions, trace the serving module, write ``model_dir/<version>/`` (weights,
    card, metrics, reference statistics), then the model's configs from the new card.

    Without ``truth`` (a pretrained model checked another way) the spec's own metrics stand alone. The
    reference statistics split the predictions into the drift monitor's reference and calibration samples
    (see :func:`reference_statistics`; ``reference_components``: which part of the traffic each prediction
    stands for).
    """
    report = classification_report(truth, probabilities.argmax(axis=1), labels) if truth is not None else {}
    mean, components = pca_projection(embeddings, EMBEDDING_DIMS)
    projected = (embeddings - mean) @ components.T
    serving = ServingModule(network.eval(), mean, components).eval()
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.pt"
        with torch.inference_mode():
            traced = torch.jit.trace(serving, example, check_trace=False)  # type: ignore[no-untyped-call]
        traced.save(str(weights))
        artifacts = {"model.pt": weights}
        metrics = {"model": spec.name, "version": version, **report, **extra_metrics, "seed": seed}
        if report:
            plot = Path(tmp) / "confusion.png"
            matrix = np.array(report["confusion_matrix"]["rows_true_cols_predicted"])
            plot_confusion(matrix, labels, f"{spec.name}: held-out accuracy {report['accuracy']:.3f}", plot)
            artifacts["confusion.png"] = plot
        metrics["build_seconds"] = round(time.monotonic() - started, 1)
        card = card_for(spec, version=version, labels=labels, metrics=metrics)
        files: dict[str, Any] = {
            CARD_FILE: json.loads(card.to_json()),
            "metrics.json": metrics,
            "reference.json": reference_statistics(
                probabilities, projected.astype(np.float32), labels, seed, reference_components
            ),
        }
        path = write_version(model_dir, version, files=files, artifacts=artifacts, replace=replace)
    write_configs(model_dir, read_card(path))
    return BuildResult(spec.name, version, path, metrics)


def read_metrics(version_dir: Path) -> dict[str, Any]:
    """The metrics a build wrote."""
    data: dict[str, Any] = json.loads((version_dir / "metrics.json").read_text())
    return data
