"""``speech_digits``: a CNN with batch norm and dropout on log-mel spectrograms."""

from __future__ import annotations

import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2)
    )


class SpeechNet(nn.Module):
    """Returns ``(logits, embedding)`` for log-mel batches ``[B, 1, mels, frames]``.

    A strided stem halves the spectrogram first: spoken digits need little time or frequency resolution, and
    it keeps training on two CPU cores within the build budget.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, embedding_dim: int = 64) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            _block(width, 2 * width),
            _block(2 * width, 4 * width),
            _block(4 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.embed = nn.Sequential(
            nn.Flatten(), nn.Dropout(0.3), nn.Linear(4 * width, embedding_dim), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(embedding_dim, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embed(self.features(x))
        return self.head(embedding), embedding
