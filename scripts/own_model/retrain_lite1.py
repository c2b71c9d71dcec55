"""The walkthrough's training command: fine-tune EfficientNet-Lite1's classifier on labelled feedback and
export the candidate to ONNX, as the model's owner would.

    python scripts/own_model/retrain_lite1.py DATA OUTPUT

``DATA`` is the folder dlstream lays out (the payloads and ``labels.csv``), ``OUTPUT`` where the candidate
ONNX file goes. The network starts from the pretrained package weights; only the last layer is trained.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_efficientnet_lite1 import LogitsAndFeatures, load_backbone


def main(data: Path, output: Path) -> None:
    """Train the head for a few epochs on the feedback, then export."""
    from dlstream.domain.card import ImagePreprocessing
    from dlstream.models.preprocess.declared import preprocessor
    from dlstream.models.zoo.data.photos import imagenet_labels

    labels = imagenet_labels()
    with (data / "labels.csv").open() as rows:
        samples = [(data / row["file"], labels.index(row["label"])) for row in csv.DictReader(rows)]
    prepare = preprocessor(
        ImagePreprocessing(
            colour="RGB", size=240, resize="shorter-side", resize_to=274, scale=1.0, mean=[127.0], std=[128.0]
        )
    )
    model = LogitsAndFeatures(load_backbone()).eval()
    pixels = torch.from_numpy(np.stack([prepare.decode(path.read_bytes()) for path, _ in samples]))
    with torch.inference_mode():
        features = torch.cat([model(pixels[i : i + 32])[1] for i in range(0, len(pixels), 32)])
    head = model.backbone._fc
    targets = torch.tensor([label for _, label in samples])
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-3)
    torch.manual_seed(0)
    for _ in range(30):
        order = torch.randperm(len(features))
        for start in range(0, len(order), 32):
            batch = order[start : start + 32]
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(features[batch]), targets[batch])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, 3, 240, 240),),
        str(output),
        input_names=["pixels"],
        output_names=["logits", "features"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}, "features": {0: "batch"}},
        dynamo=False,
    )
    sys.stdout.write(f"fine-tuned the classifier on {len(samples)} samples -> {output}\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
