"""A seeded supervised training loop with a progress bar, shared by the trained models."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run."""

    epochs: int
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    seed: int = 0


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch and numpy; return a generator for data order and augmentation."""
    torch.manual_seed(seed)
    np.random.seed(seed)  # some libraries draw from the global state
    return torch.Generator().manual_seed(seed)


def train_classifier(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    *,
    augment: Augment | None = None,
    desc: str = "train",
) -> list[float]:
    """Train ``model`` (``(logits, embedding)`` out) with AdamW and one-cycle LR; mean loss per epoch."""
    generator = seed_everything(config.seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = (len(inputs) + config.batch_size - 1) // config.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    losses = []
    model.train()
    with tqdm(total=config.epochs * steps_per_epoch, desc=desc, unit="batch", leave=False) as bar:
        for epoch in range(config.epochs):
            order = torch.randperm(len(inputs), generator=generator)
            total = 0.0
            for start in range(0, len(inputs), config.batch_size):
                index = order[start : start + config.batch_size]
                batch = inputs[index]
                if augment is not None:
                    batch = augment(batch, generator)
                logits, _ = model(batch)
                loss = loss_fn(logits, labels[index])
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                total += float(loss.detach()) * len(index)
                bar.update(1)
            losses.append(total / len(inputs))
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses


@torch.inference_mode()
def predict(
    model: nn.Module, inputs: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities and embeddings of ``model`` over ``inputs``, in eval mode."""
    model.eval()
    probs, embeds = [], []
    for start in range(0, len(inputs), batch_size):
        logits, embedding = model(inputs[start : start + batch_size])
        probs.append(torch.softmax(logits, dim=1))
        embeds.append(embedding)
    return torch.cat(probs), torch.cat(embeds)
