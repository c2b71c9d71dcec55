"""Export a trained model into a Triton model-repository version folder, atomically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

EMBEDDING_DIMS = 8
# The model.py of every version: it moves tensors between Triton and dlstream.models.serving.
TRITON_MODEL_FILE = Path(__file__).with_name("triton_model.py")


class ServingModule(nn.Module):
    """What Triton runs: ``(probabilities, projected embedding)`` from ``(logits, embedding)``."""

    def __init__(
        self, network: nn.Module, mean: npt.NDArray[np.float32], components: npt.NDArray[np.float32]
    ) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", torch.from_numpy(mean))
        self.register_buffer("components", torch.from_numpy(components))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, embedding = self.network(x)
        projected = (embedding - self.mean) @ self.components.T
        return torch.softmax(logits, dim=1), projected


def next_version(model_dir: Path) -> int:
    """One more than the highest numeric version folder (1 when there is none)."""
    versions = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def write_version(
    model_dir: Path,
    version: int,
    *,
    files: dict[str, Any],
    artifacts: dict[str, Path],
    replace: bool = False,
) -> Path:
    """Write ``model_dir/<version>/`` from JSON documents and files, then rename it into place.

    The generic ``model.py`` shell is copied in too: Triton's Python backend loads it from the version.
    """
    final = model_dir / str(version)
    if final.exists() and not replace:
        raise FileExistsError(f"{final} exists; pass replace=True to rebuild it")
    staging = model_dir / f".{version}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shutil.copy2(TRITON_MODEL_FILE, staging / "model.py")
    for name, document in files.items():
        (staging / name).write_text(json.dumps(document, indent=2))
    for name, source in artifacts.items():
        shutil.move(str(source), staging / name)
    return rename_into_place(staging, final)


def rename_into_place(staging: Path, final: Path) -> Path:
    """Put the complete folder ``staging`` at ``final`` by renames, replacing what was there: a reader sees
    the old folder or the new one, never half of either."""
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)  # left by a replacement that was interrupted
        final.rename(old)
        staging.rename(final)
        shutil.rmtree(old)
    else:
        staging.rename(final)
    return final
