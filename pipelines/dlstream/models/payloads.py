"""Pure helpers for BYTES tensors as Triton hands them to Python models."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def payload_lengths(batch: npt.NDArray[np.object_]) -> npt.NDArray[np.int64]:
    """Byte length of each payload of a ``[batch, 1]`` BYTES tensor, shaped ``[batch, 1]``."""
    if batch.ndim != 2 or batch.shape[1] != 1:
        raise ValueError(f"expected a [batch, 1] tensor of payloads, got shape {batch.shape}")
    return np.array([[len(bytes(item))] for item in batch[:, 0]], dtype=np.int64)
