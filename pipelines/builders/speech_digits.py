"""Build ``speech_digits``: a CNN on log-mel spectrograms of espeak-ng spoken digits."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipelines.builders.common import BuildResult, finish_build
from pipelines.data.spoken_digits import WORDS, make_spoken_digits
from pipelines.models.speech import SpeechNet
from pipelines.preprocess.audio import decode_speech
from pipelines.train import TrainConfig, predict, train_classifier

NAME = "speech_digits"


def augment_spectrogram(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Noise, random time shifts and one frequency and one time mask per example (SpecAugment-like)."""
    n, _, mels, frames = batch.shape
    out = batch + 0.1 * torch.randn(batch.shape, generator=generator)
    shifts = torch.randint(-8, 9, (n,), generator=generator)
    out = torch.stack([torch.roll(x, int(s), dims=-1) for x, s in zip(out, shifts, strict=True)])
    for i in range(n):
        f0 = int(torch.randint(0, mels - 8, (1,), generator=generator))
        t0 = int(torch.randint(0, frames - 10, (1,), generator=generator))
        out[i, :, f0 : f0 + int(torch.randint(0, 9, (1,), generator=generator))] = 0.0
        out[i, :, :, t0 : t0 + int(torch.randint(0, 11, (1,), generator=generator))] = 0.0
    return out


def build(
    repo: Path, *, version: int = 1, seed: int = 0, epochs: int = 10, replace: bool = False
) -> BuildResult:
    """Synthesise, train, evaluate on held-out voices (through the WAV decode path) and export."""
    started = time.monotonic()
    data = make_spoken_digits(seed)
    train_x = torch.from_numpy(np.stack([decode_speech(c.wav) for c in data.train]))
    train_y = torch.tensor([c.label for c in data.train])
    network = SpeechNet(num_classes=len(WORDS))
    config = TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=seed)
    train_classifier(network, train_x, train_y, config, augment=augment_spectrogram, desc=NAME)
    test_x = np.stack([decode_speech(c.wav) for c in data.test])
    probabilities, embeddings = predict(network, torch.from_numpy(test_x))
    return finish_build(
        name=NAME,
        model_dir=repo / NAME,
        version=version,
        network=network,
        example=torch.from_numpy(test_x[:2]),
        probabilities=probabilities.numpy(),
        embeddings=embeddings.numpy(),
        truth=np.array([c.label for c in data.test], dtype=np.int64),
        labels=list(WORDS),
        extra_metrics={
            "train_samples": len(data.train),
            "held_out_variants": data.held_out_variants,
            "evaluation": "voices (espeak-ng variants) never seen in training",
            "epochs": epochs,
        },
        seed=seed,
        started=started,
        replace=replace,
        extra_files={"serving.json": {"runner": "tensor", "decoder": "speech"}},
    )
