"""A model plugin: everything dlstream needs to build, serve, sample and retrain one model.

A plugin is one module exposing a :class:`ModelSpec`, registered in the ``dlstream.models`` entry-point group:

    [project.entry-points."dlstream.models"]
    digits = "dlstream.models.zoo.digits:SPEC"

The generic builder (:mod:`dlstream.models.build`), runner (:mod:`dlstream.models.serving`), sample source
(:mod:`dlstream.models.samples`) and retrainer (:mod:`dlstream.models.retraining`) consume any spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from dlstream.domain.card import Preprocessing
from dlstream.domain.contract import Modality
from dlstream.models.train import Augment, TrainConfig

Tensors = tuple[torch.Tensor, torch.Tensor]
Payloads = tuple[list[bytes], list[int] | None]


@dataclass(frozen=True)
class Training:
    """How the network is trained: on ``data(seed)`` (inputs already preprocessed, and labels), for
    ``epochs`` with ``config(epochs, seed)``, optionally augmented."""

    data: Callable[[int], Tensors]
    epochs: int
    config: Callable[[int, int], TrainConfig]
    augment: Augment | None = None


@dataclass(frozen=True)
class ModelSpec:
    """One model: its data, network, declared preprocessing and training recipe.

    ``network(num_classes)`` returns a module whose forward gives ``(logits, embedding)``. A spec without
    ``training`` is a pretrained network used as is (``network`` loads it). ``held_out(seed)`` gives the raw
    payloads a producer would send (and their label indices when known): builds evaluate on them through the
    declared preprocessing, the demo, tests and benchmarks stream them. ``evaluate`` adds metrics of its own
    from the held-out probabilities (for models without labelled held-out data). ``data_version()`` names
    what the data depends on outside Python (a tool's version, a data file's digest): it is part of the key
    under which :mod:`dlstream.models.build_cache` keeps the build.
    """

    name: str
    modality: Modality
    labels: Callable[[], list[str]]
    preprocessing: Preprocessing
    network: Callable[[int], nn.Module]
    held_out: Callable[[int], Payloads]
    training: Training | None = None
    evaluate: Callable[[npt.NDArray[np.float32], list[str]], dict[str, Any]] | None = None
    default: bool = False
    description: str = ""
    extra_metrics: dict[str, Any] = field(default_factory=dict)
    data_version: Callable[[], str] | None = None

    @property
    def retrainable(self) -> bool:
        """Whether the spec carries a training recipe."""
        return self.training is not None
