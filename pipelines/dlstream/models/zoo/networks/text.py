"""``text_topics``: a trained head on the pretrained MiniLM sentence embeddings
(:mod:`dlstream.models.preprocess.sentences`)."""

from __future__ import annotations

import torch
from torch import nn

from dlstream.models.preprocess.sentences import ENCODER_DIM


class TextHead(nn.Module):
    """A small MLP on sentence embeddings returning ``(logits, hidden embedding)``."""

    def __init__(self, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Dropout(0.1), nn.Linear(ENCODER_DIM, hidden), nn.GELU())
        self.out = nn.Sequential(nn.Dropout(0.2), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden(x)
        return self.out(hidden), hidden
