"""A cache of the training tensors of a spec: the decoded, preprocessed training data a build and every
retraining job of a model start from.

Preparing them can cost more than the training itself (``text_topics`` runs its sentence encoder over every
training text; ``speech_digits`` computes a log-mel spectrogram of every clip), and they depend only on what a
build depends on. An entry is named by the build cache's digest of the spec's module, the model SDK's sources,
the installed distributions, the seed and the spec's declared data version, so a change to any of them
prepares the data again.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog
import torch

from dlstream.models.build_key import build_key
from dlstream.models.spec import ModelSpec, Tensors

KEPT_PER_MODEL = 2
log = structlog.get_logger("dlstream.models")


@dataclass(frozen=True)
class TrainingDataCache:
    """Training tensors under ``root/<model>/<digest>.pt``."""

    root: Path

    def load(self, spec: ModelSpec, *, seed: int) -> Tensors:
        """The training tensors of ``spec`` with ``seed``: read from an entry when one matches, else prepared
        by the spec and kept (a cache that cannot be written is logged and skipped)."""
        if spec.training is None:
            raise KeyError(f"{spec.name} has no training recipe")
        key = build_key(spec, spec.training.data.__module__, seed=seed)
        entry = self.root / spec.name / f"{key}.pt"
        try:
            kept = torch.load(entry, weights_only=True)
        except FileNotFoundError:
            pass
        except (OSError, RuntimeError, EOFError) as exc:  # a cut or foreign file: prepared again
            log.warning("training_data_cache.unreadable", model=spec.name, entry=str(entry), error=str(exc))
        else:
            log.info("training_data_cache.restored", model=spec.name, entry=str(entry))
            return kept["inputs"], kept["targets"]
        inputs, targets = spec.training.data(seed)
        try:
            self._store(entry, inputs, targets)
        except OSError as exc:  # a read-only home (a container) prepares the data every time
            log.warning(
                "training_data_cache.not_stored", model=spec.name, root=str(self.root), error=str(exc)
            )
        return inputs, targets

    def _store(self, entry: Path, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=entry.parent, suffix=".part")
        os.close(fd)
        try:
            torch.save({"inputs": inputs.contiguous(), "targets": targets.contiguous()}, temporary)
            os.replace(temporary, entry)
        finally:
            Path(temporary).unlink(missing_ok=True)
        entries = sorted(entry.parent.glob("*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEPT_PER_MODEL:]:
            old.unlink(missing_ok=True)


def training_data(spec: ModelSpec, *, seed: int, cache: TrainingDataCache | None) -> Tensors:
    """The training tensors of ``spec`` with ``seed``: through ``cache`` when there is one, else prepared."""
    if spec.training is None:
        raise KeyError(f"{spec.name} has no training recipe")
    return cache.load(spec, seed=seed) if cache is not None else spec.training.data(seed)
