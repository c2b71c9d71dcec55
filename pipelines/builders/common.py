"""Steps every model build shares: evaluate, project, trace, and write the version folder."""

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

from pipelines.evaluate import classification_report, plot_confusion
from pipelines.export import EMBEDDING_DIMS, ServingModule, write_version
from pipelines.reference import pca_projection, reference_statistics


@dataclass(frozen=True)
class BuildResult:
    """What a build reports: where it wrote, and its held-out metrics."""

    model: str
    version: int
    path: Path
    metrics: dict[str, Any]


def finish_build(
    *,
    name: str,
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
    extra_files: dict[str, Any] | None = None,
) -> BuildResult:
    """Evaluate held-out predictions, trace the serving module, and write ``model_dir/<version>/``.

    Without ``truth`` (a pretrained model checked another way) the caller's metrics stand alone.
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
        metrics = {"model": name, "version": version, **report, **extra_metrics, "seed": seed}
        if report:
            plot = Path(tmp) / "confusion.png"
            matrix = np.array(report["confusion_matrix"]["rows_true_cols_predicted"])
            plot_confusion(matrix, labels, f"{name}: held-out accuracy {report['accuracy']:.3f}", plot)
            artifacts["confusion.png"] = plot
        metrics["build_seconds"] = round(time.monotonic() - started, 1)
        files: dict[str, Any] = {
            "labels.json": labels,
            "metrics.json": metrics,
            "reference.json": reference_statistics(probabilities, projected.astype(np.float32), labels, seed),
            **(extra_files or {}),
        }
        path = write_version(model_dir, version, files=files, artifacts=artifacts, replace=replace)
    return BuildResult(name, version, path, metrics)


def read_metrics(version_dir: Path) -> dict[str, Any]:
    """The metrics a build wrote."""
    data: dict[str, Any] = json.loads((version_dir / "metrics.json").read_text())
    return data
