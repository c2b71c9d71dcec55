"""Build ``text_topics``: MiniLM sentence embeddings of Debian fortunes with a trained classifier head."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from pipelines.builders.common import BuildResult, finish_build
from pipelines.data.fortunes import CATEGORIES, load_fortunes
from pipelines.data.split import stratified_split
from pipelines.models.text import TextHead, encode, load_encoder
from pipelines.train import TrainConfig, predict, train_classifier

NAME = "text_topics"
TEST_FRACTION = 0.2


def build(
    repo: Path, *, version: int = 1, seed: int = 0, epochs: int = 60, replace: bool = False
) -> BuildResult:
    """Embed the fortunes once, train the head, evaluate on the held-out 20 % and export the head."""
    started = time.monotonic()
    texts, label_list = load_fortunes()
    labels = np.array(label_list, dtype=np.int64)
    split = stratified_split(labels, TEST_FRACTION, seed)
    embeddings = torch.from_numpy(encode(load_encoder(), texts))
    head = TextHead(num_classes=len(CATEGORIES))
    config = TrainConfig(epochs=epochs, batch_size=64, lr=2e-3, weight_decay=1e-2, seed=seed)
    train_classifier(head, embeddings[split.train], torch.from_numpy(labels[split.train]), config, desc=NAME)
    probabilities, hidden = predict(head, embeddings[split.test])
    return finish_build(
        name=NAME,
        model_dir=repo / NAME,
        version=version,
        network=head,
        example=embeddings[:2],
        probabilities=probabilities.numpy(),
        embeddings=hidden.numpy(),
        truth=labels[split.test],
        labels=list(CATEGORIES),
        extra_metrics={"train_samples": len(split.train), "epochs": epochs, "encoder": "all-MiniLM-L6-v2"},
        seed=seed,
        started=started,
        replace=replace,
        extra_files={"serving.json": {"runner": "text"}},
    )
