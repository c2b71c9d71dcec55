"""Seeded, stratified train/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Split:
    """Training and held-out indices into a dataset."""

    train: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]


def stratified_split(labels: npt.NDArray[np.int64], test_fraction: float, seed: int) -> Split:
    """Hold out ``test_fraction`` of every class, chosen with ``seed``."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    train: list[int] = []
    test: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        cut = max(1, round(len(members) * test_fraction))
        test.extend(members[:cut].tolist())
        train.extend(members[cut:].tolist())
    return Split(np.array(sorted(train), dtype=np.int64), np.array(sorted(test), dtype=np.int64))
