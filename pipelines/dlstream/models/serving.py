"""What a Triton Python model does with a batch of requests, kept out of ``model.py`` so it is tested.

The runner is generic: the version's card declares the preprocessing, ``model.pt`` is the traced network.
Each request carries ``[n, 1]`` payloads. Payloads are decoded one by one; a request with a payload that
cannot be decoded gets its own error, and the decoded payloads of all other requests run through the network
as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from dlstream.adapters.triton.client import softmax
from dlstream.config.settings import Settings
from dlstream.domain.card import SourceModel, read_card
from dlstream.models.preprocess.declared import Preprocessor, preprocessor
from dlstream.models.preprocess.errors import PayloadError
from dlstream.models.source_models import LoadedModel, ServingModule, load_model_file

Outputs = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]


class Runner(Protocol):
    """Decodes single payloads and runs decoded items as one batch."""

    def decode(self, payload: bytes) -> Any:
        """One payload to one model input; raises PayloadError."""

    def forward(self, items: list[Any]) -> Outputs:
        """``(probabilities [B, C], embedding [B, E])`` for a batch of decoded items."""


@dataclass
class CardRunner:
    """A TorchScript serving module fed by the preprocessing its card declares."""

    module: ServingModule
    preprocess: Preprocessor
    device: torch.device

    def decode(self, payload: bytes) -> Any:
        return self.preprocess.decode(payload)

    @torch.inference_mode()
    def forward(self, items: list[Any]) -> Outputs:
        batch = self.preprocess.batch(items).to(self.device)
        probabilities, embedding = self.module(batch)
        return probabilities.float().cpu().numpy(), embedding.float().cpu().numpy()


@dataclass
class SourceRunner:
    """An added model file (ONNX or TorchScript): its scores become probabilities (softmax on logits), its
    embedding output, if any, is projected as the card says."""

    model: LoadedModel
    preprocess: Preprocessor
    source: SourceModel
    projection: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None

    def decode(self, payload: bytes) -> Any:
        return self.preprocess.decode(payload)

    def forward(self, items: list[Any]) -> Outputs:
        outputs = self.model.run(self.preprocess.batch(items))
        return source_outputs(outputs, self.source, self.projection)


def source_outputs(
    outputs: list[npt.NDArray[np.float32]],
    source: SourceModel,
    projection: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None,
) -> Outputs:
    """``(probabilities, projected embedding)`` from a model file's raw outputs."""
    scores = outputs[source.scores].reshape(len(outputs[source.scores]), -1)
    probabilities = softmax(scores) if source.scores_are == "logits" else scores.astype(np.float32)
    if source.embedding is None:
        return probabilities, np.zeros((len(scores), 0), dtype=np.float32)
    embedding = outputs[source.embedding].reshape(len(scores), -1).astype(np.float32)
    if projection is not None:
        mean, components = projection
        embedding = ((embedding - mean) @ components.T).astype(np.float32)
    return probabilities, embedding


def read_projection(path: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The ``(mean, components)`` of an embedding projection file."""
    with np.load(path) as data:
        return data["mean"].astype(np.float32), data["components"].astype(np.float32)


def load_runner(version_dir: Path, device: str, *, optimise: bool | None = None) -> Runner:
    """The runner of a version folder: a plugin's serving module (``model.pt``), or an added model file, fed
    by the preprocessing its card declares. ``optimise``: TorchScript optimised for inference (see
    :class:`ServingModule`); None: as ``DLSTREAM_TRITON__OPTIMISE_MODULES`` says."""
    if optimise is None:
        optimise = Settings().triton.optimise_modules
    card = read_card(version_dir)
    if card.preprocessing is None:
        raise ValueError(f"{card.name} is a Triton model of its owner; Triton runs it, not this runner")
    preprocess = preprocessor(card.preprocessing, device, root=version_dir)
    if card.source is not None:
        if card.source_format not in ("onnx", "torchscript"):
            raise ValueError(f"{card.name} is a {card.source_format} model; Triton runs it, not this runner")
        source = card.source
        model = load_model_file(
            version_dir / source.file, card.source_format, device, source.inputs, optimise=optimise
        )
        projection = read_projection(version_dir / card.source.projection) if card.source.projection else None
        return SourceRunner(model, preprocess, card.source, projection)
    torch_device = torch.device(device)
    module = torch.jit.load(str(version_dir / "model.pt"), map_location=torch_device)  # type: ignore[no-untyped-call]
    return CardRunner(ServingModule(module.eval(), card.name, optimise=optimise), preprocess, torch_device)


def run_requests(runner: Runner, requests: Sequence[npt.NDArray[np.object_]]) -> list[Outputs | PayloadError]:
    """Outputs per request, or the error that request alone fails with."""
    decoded: list[list[Any] | PayloadError] = []
    for payloads in requests:
        try:
            if payloads.ndim != 2 or payloads.shape[1] != 1:
                raise PayloadError(f"expected payloads shaped [n, 1], got {list(payloads.shape)}")
            decoded.append([runner.decode(bytes(p)) for p in payloads[:, 0]])
        except PayloadError as exc:
            decoded.append(exc)
    items = [item for entry in decoded if not isinstance(entry, PayloadError) for item in entry]
    if items:
        probabilities, embeddings = runner.forward(items)
    results: list[Outputs | PayloadError] = []
    offset = 0
    for entry in decoded:
        if isinstance(entry, PayloadError):
            results.append(entry)
            continue
        end = offset + len(entry)
        results.append((probabilities[offset:end], embeddings[offset:end]))
        offset = end
    return results
