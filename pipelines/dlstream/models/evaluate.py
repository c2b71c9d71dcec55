"""Held-out evaluation: accuracy, per-class figures, confusion matrix (JSON and PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt


def confusion_matrix(
    truth: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64], classes: int
) -> npt.NDArray[np.int64]:
    """``matrix[true, predicted]`` counts."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def classification_report(
    truth: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64], labels: list[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix, JSON-ready."""
    matrix = confusion_matrix(truth, predicted, len(labels))
    per_class = {}
    for i, label in enumerate(labels):
        tp = int(matrix[i, i])
        support = int(matrix[i].sum())
        predicted_as = int(matrix[:, i].sum())
        precision = tp / predicted_as if predicted_as else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return {
        "accuracy": float((truth == predicted).mean()) if len(truth) else 0.0,
        "samples": len(truth),
        "classes": len(labels),
        "per_class": per_class,
        "confusion_matrix": {"labels": labels, "rows_true_cols_predicted": matrix.tolist()},
    }


def plot_confusion(matrix: npt.NDArray[np.int64], labels: list[str], title: str, path: Path) -> None:
    """Save the confusion matrix as a PNG heat map with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(5.0, 0.6 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > threshold else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
