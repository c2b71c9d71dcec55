"""``shapes``: a test-only model plugin, a small CNN telling circles, squares and triangles apart.

Everything the model needs is in this one module; the tests register it in the ``dlstream.models``
entry-point group (a ``.dist-info`` on ``PYTHONPATH``) and nothing else in dlstream names it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from dlstream.domain.card import ImagePreprocessing
from dlstream.domain.contract import Modality
from dlstream.models import ModelSpec, Tensors, TrainConfig, Training

LABELS = ["circle", "square", "triangle"]
SIZE = 32
PREPROCESSING = ImagePreprocessing(
    colour="L", width=SIZE, height=SIZE, scale=1.0 / 255.0, mean=[0.5], std=[0.5]
)
PER_CLASS_TRAIN = 400
PER_CLASS_HELD_OUT = 100


def draw(kind: int, rng: np.random.Generator, *, inverted: bool = False) -> npt.NDArray[np.uint8]:
    """One shape, white on black (black on white when ``inverted``), at a random place and size."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    radius = rng.uniform(6, 11)
    cy, cx = rng.uniform(radius + 1, SIZE - radius - 1, size=2)
    if kind == 0:
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    elif kind == 1:
        mask = (np.abs(yy - cy) <= radius * 0.8) & (np.abs(xx - cx) <= radius * 0.8)
    else:
        top = cy - radius
        height = 2 * radius
        half_width = (yy - top) / height * radius
        mask = (yy >= top) & (yy <= cy + radius) & (np.abs(xx - cx) <= half_width)
    image = np.where(mask, 230.0, 20.0) + rng.normal(0, 12, size=(SIZE, SIZE))
    if inverted:
        image = 255.0 - image
    clipped: npt.NDArray[np.uint8] = np.clip(image, 0, 255).astype(np.uint8)
    return clipped


def images(
    seed: int, per_class: int, *, inverted: bool = False
) -> tuple[list[npt.NDArray[np.uint8]], list[int]]:
    """``per_class`` shapes of each class, shuffled, with their labels."""
    rng = np.random.default_rng(seed)
    labels = [k for k in range(len(LABELS)) for _ in range(per_class)]
    order = rng.permutation(len(labels))
    return [draw(labels[i], rng, inverted=inverted) for i in order], [labels[i] for i in order]


def payloads(seed: int, per_class: int, *, inverted: bool = False) -> tuple[list[bytes], list[int]]:
    """Shapes as PNG bytes, with their labels."""
    from dlstream.models import encode_png

    pictures, labels = images(seed, per_class, inverted=inverted)
    return [encode_png(p) for p in pictures], labels


class ShapesNet(nn.Module):
    """Two convolutions (with batch norm) and a linear head; returns ``(logits, embedding)``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(16 * 16, 32),
            nn.ReLU(),
        )
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.features(x)
        return self.head(embedding), embedding


def training_data(seed: int) -> Tensors:
    """Training shapes, normalised as the declared preprocessing does."""
    pictures, labels = images(seed + 1000, PER_CLASS_TRAIN)
    pixels = torch.from_numpy(np.stack(pictures)).float().div(255.0).unsqueeze(1)
    return (pixels - 0.5) / 0.5, torch.tensor(labels)


SPEC = ModelSpec(
    name="shapes",
    modality=Modality.IMAGE,
    labels=lambda: list(LABELS),
    preprocessing=PREPROCESSING,
    network=ShapesNet,
    held_out=lambda seed: payloads(seed, PER_CLASS_HELD_OUT),
    training=Training(
        data=training_data,
        epochs=10,
        config=lambda epochs, seed: TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, seed=seed),
    ),
    description="Circles, squares and triangles (test-only plugin).",
    extra_metrics={"evaluation": "held-out shapes"},
)
