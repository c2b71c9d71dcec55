"""``speech_digits``: a CNN on log-mel spectrograms of spoken digits synthesised by espeak-ng (audio)."""

from __future__ import annotations

import numpy as np
import torch

from dlstream.domain.card import AudioPreprocessing
from dlstream.domain.contract import Modality
from dlstream.models import ModelSpec, Payloads, Tensors, TrainConfig, Training

PREPROCESSING = AudioPreprocessing(sample_rate=16_000, duration_s=1.0, n_fft=400, hop=160, n_mels=64)


def labels() -> list[str]:
    """ "zero" to "nine"."""
    from dlstream.models.zoo.data.spoken_digits import WORDS

    return list(WORDS)


def network(num_classes: int) -> torch.nn.Module:
    """A fresh spectrogram CNN."""
    from dlstream.models.zoo.networks.speech import SpeechNet

    return SpeechNet(num_classes=num_classes)


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


def training_data(seed: int) -> Tensors:
    """Clips of the voices kept for training, as log-mel spectrograms."""
    from dlstream.models import audio_tensor
    from dlstream.models.zoo.data.spoken_digits import make_spoken_digits

    data = make_spoken_digits(seed)
    x = torch.from_numpy(np.stack([audio_tensor(c.wav, PREPROCESSING) for c in data.train]))
    return x, torch.tensor([c.label for c in data.train])


def held_out(seed: int) -> Payloads:
    """Clips of voices (espeak-ng variants) never used in training, as WAV bytes."""
    from dlstream.models.zoo.data.spoken_digits import make_spoken_digits

    clips = make_spoken_digits(seed, test_only=True).test
    return [clip.wav for clip in clips], [clip.label for clip in clips]


def data_version() -> str:
    """espeak-ng's version line: another release speaks the digits differently."""
    from dlstream.models.zoo.data.spoken_digits import espeak_version

    return espeak_version()


SPEC = ModelSpec(
    name="speech_digits",
    modality=Modality.AUDIO,
    labels=labels,
    preprocessing=PREPROCESSING,
    network=network,
    held_out=held_out,
    training=Training(
        data=training_data,
        epochs=10,
        config=lambda epochs, seed: TrainConfig(epochs=epochs, batch_size=64, lr=3e-3, seed=seed),
        augment=augment_spectrogram,
    ),
    default=True,
    description="CNN on log-mel spectrograms of spoken digits (WAV, any common rate).",
    extra_metrics={"evaluation": "voices (espeak-ng variants) never seen in training"},
    data_version=data_version,
)
