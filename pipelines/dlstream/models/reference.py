"""Reference statistics of a model on held-out data, for the drift monitor, and the embedding projection.

The projection (PCA of held-out embeddings) is part of the exported model, so every prediction carries the
same compact embedding that the reference sample is expressed in.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

CONFIDENCE_BINS = 20
REFERENCE_SAMPLE = 500
CALIBRATION_SAMPLE = 2000


def pca_projection(
    embeddings: npt.NDArray[np.float32], dims: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``(mean, components[dims, D])`` of the embeddings' principal components."""
    mean = embeddings.mean(axis=0)
    _, _, vt = np.linalg.svd(embeddings - mean, full_matrices=False)
    components = vt[:dims]
    if components.shape[0] < dims:  # fewer samples or features than dims: pad with zero rows
        pad = np.zeros((dims - components.shape[0], embeddings.shape[1]), dtype=components.dtype)
        components = np.vstack([components, pad])
    return mean.astype(np.float32), components.astype(np.float32)


def reference_statistics(
    probabilities: npt.NDArray[np.float32],
    projected: npt.NDArray[np.float32],
    labels: list[str],
    seed: int,
    components: npt.NDArray[np.int64] | None = None,
) -> dict[str, Any]:
    """Softmax and embedding statistics over held-out predictions (JSON-ready).

    The predictions are split at random into the reference sample that the drift monitor compares windows
    with (half, at most 500) and a disjoint calibration sample that sets its thresholds (the rest, at most
    2,000). ``components`` says which part of the traffic each prediction stands for (a retrained version's:
    0 for the base held-out data, 1 for recent live traffic); the monitor then expects any mix of them.
    """
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities.max(axis=1)
    counts = np.bincount(predicted, minlength=len(labels))
    histogram, edges = np.histogram(confidence, bins=CONFIDENCE_BINS, range=(0.0, 1.0))
    order = np.random.default_rng(seed).permutation(len(probabilities))
    size = min(REFERENCE_SAMPLE, (len(order) + 1) // 2)
    pick, calibration = order[:size], order[size : size + CALIBRATION_SAMPLE]
    return {
        "samples": len(probabilities),
        "labels": labels,
        "predicted_class_counts": counts.tolist(),
        "mean_probabilities": probabilities.mean(axis=0).tolist(),
        "confidence_histogram": {"edges": edges.tolist(), "counts": histogram.tolist()},
        "softmax_sample": probabilities[pick].round(6).tolist(),
        "embedding_sample": projected[pick].round(6).tolist(),
        "calibration_softmax_sample": probabilities[calibration].round(6).tolist(),
        "calibration_embedding_sample": projected[calibration].round(6).tolist(),
        **(
            {
                "reference_components": components[pick].tolist(),
                "calibration_components": components[calibration].tolist(),
            }
            if components is not None
            else {}
        ),
        "embedding_mean": projected.mean(axis=0).tolist(),
        "embedding_std": projected.std(axis=0).tolist(),
    }
