"""A tiny audio classifier of pure tones (low, mid, high), exported as TorchScript: a model "of its owner's
making" for ``models add --torchscript``, with data, a drifted variant, and the training command
(``python -m tests.own_model.tones train DATA MODEL OUTPUT``) its card names."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.io import wavfile
from torch import nn

LABELS = ["low", "mid", "high"]
FREQUENCIES = {"low": 300.0, "mid": 1000.0, "high": 3000.0}
RATE = 16_000
PREPROCESS = {"features": "log-mel", "n_mels": "32", "duration_s": "0.5", "align": "start"}


def tone(label: str, rng: np.random.Generator, *, shift: float = 1.0) -> bytes:
    """Half a second of the label's tone in noise, as WAV; jittered, and ``shift`` scales the frequency
    (drift)."""
    t = np.arange(int(RATE * 0.5)) / RATE
    frequency = FREQUENCIES[label] * shift * rng.uniform(0.9, 1.1)
    samples = 0.5 * np.sin(2 * np.pi * frequency * t) + rng.normal(0, 0.05, size=len(t))
    buffer = io.BytesIO()
    wavfile.write(buffer, RATE, (np.clip(samples, -1, 1) * 32767).astype(np.int16))
    return buffer.getvalue()


def tones(count: int, seed: int, *, shift: float = 1.0) -> tuple[list[bytes], list[int]]:
    """``count`` tones cycling through the labels, with their label indices."""
    rng = np.random.default_rng(seed)
    labels = [i % len(LABELS) for i in range(count)]
    return [tone(LABELS[i], rng, shift=shift) for i in labels], labels


class TonesNet(nn.Module):
    """Log-mel [1, 32, frames] to (logits, embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((8, 1)), nn.Flatten()
        )
        self.head = nn.Linear(64, len(LABELS))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.features(x)
        return self.head(embedding), embedding


def features(payloads: list[bytes]) -> torch.Tensor:
    """The inputs dlstream's declared preprocessing makes of these payloads."""
    from dlstream.domain.card import AudioPreprocessing
    from dlstream.models import preprocessor

    spec = AudioPreprocessing.model_validate({k: v for k, v in PREPROCESS.items()})
    prepare = preprocessor(spec)
    return torch.from_numpy(np.stack([prepare.decode(p) for p in payloads]))


def fit(module: nn.Module, inputs: torch.Tensor, labels: list[int], epochs: int) -> None:
    """A few epochs of Adam on cross-entropy, seeded."""
    torch.manual_seed(0)
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-2)
    target = torch.tensor(labels)
    module.train()
    for _ in range(epochs):
        for start in range(0, len(inputs), 32):
            optimiser.zero_grad()
            logits, _ = module(inputs[start : start + 32])
            loss = nn.functional.cross_entropy(logits, target[start : start + 32])
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
    module.eval()


def build(path: Path) -> None:
    """Train on clean tones and save a scripted (so still trainable) module."""
    payloads, labels = tones(150, seed=1)
    module = torch.jit.script(TonesNet())
    fit(module, features(payloads), labels, epochs=15)
    module.save(str(path))  # type: ignore[no-untyped-call]


def accuracy(module: nn.Module, payloads: list[bytes], labels: list[int]) -> float:
    """Top-1 accuracy."""
    with torch.inference_mode():
        logits, _ = module(features(payloads))
    return float((logits.argmax(dim=1).numpy() == np.asarray(labels)).mean())


def train(data: Path, model: Path, output: Path) -> None:
    """The training command: fine-tune the serving module on the labelled feedback together with the
    owner's original training data (so it keeps what it knew), save the candidate."""
    with (data / "labels.csv").open() as rows:
        samples = [(data / row["file"], LABELS.index(row["label"])) for row in csv.DictReader(rows)]
    module = torch.jit.load(str(model))  # type: ignore[no-untyped-call]
    base, base_labels = tones(150, seed=1)
    payloads = [path.read_bytes() for path, _ in samples] + base
    labels = [label for _, label in samples] + base_labels
    order = np.random.default_rng(0).permutation(len(labels))
    fit(module, features([payloads[i] for i in order]), [labels[i] for i in order], epochs=20)
    module.save(str(output))
    print(f"trained on {len(samples)} samples -> {output}")


def write_reference(folder: Path, count: int, seed: int) -> None:
    """Labelled reference samples: one subfolder per label."""
    payloads, labels = tones(count, seed)
    for i, (payload, label) in enumerate(zip(payloads, labels, strict=True)):
        (folder / LABELS[label]).mkdir(parents=True, exist_ok=True)
        (folder / LABELS[label] / f"{i:03d}.wav").write_bytes(payload)


if __name__ == "__main__":
    if sys.argv[1:2] == ["train"]:
        train(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4]))
    else:
        raise SystemExit("usage: python -m tests.own_model.tones train DATA MODEL OUTPUT")
