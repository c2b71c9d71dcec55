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
from dlstream.domain.card import ModelCard, SequenceTask, SourceModel, read_card
from dlstream.models.postprocess import read_vocabulary, task_outputs
from dlstream.models.preprocess.declared import ImageItem, Preprocessor, preprocessor
from dlstream.models.preprocess.errors import PayloadError
from dlstream.models.source_models import LoadedModel, ServingModule, load_model_file

Outputs = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]
Named = dict[str, npt.NDArray[Any]]


class Runner(Protocol):
    """Decodes single payloads and runs decoded items as one batch."""

    card: ModelCard

    def decode(self, payload: bytes) -> Any:
        """One payload to one model input; raises PayloadError."""

    def forward(self, items: list[Any]) -> Named:
        """The Triton outputs of the card's task, by name, for a batch of decoded items."""


@dataclass
class CardRunner:
    """A plugin's TorchScript serving module (a classifier) fed by the preprocessing its card declares."""

    card: ModelCard
    module: ServingModule
    preprocess: Preprocessor
    device: torch.device

    def decode(self, payload: bytes) -> Any:
        return self.preprocess.decode(payload)

    @torch.inference_mode()
    def forward(self, items: list[Any]) -> Named:
        batch = self.preprocess.batch(items).to(self.device)
        probabilities, embedding = self.module(batch)
        named = {self.card.outputs.scores: probabilities.float().cpu().numpy()}
        if self.card.outputs.embedding:
            named[self.card.outputs.embedding] = embedding.float().cpu().numpy()
        return named


@dataclass
class SourceRunner:
    """An added model file (ONNX or TorchScript): its raw outputs become the outputs of its card's task
    (:mod:`dlstream.models.postprocess`); its embedding output, if any, is projected as the card says."""

    card: ModelCard
    model: LoadedModel
    preprocess: Preprocessor
    source: SourceModel
    projection: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None
    vocabulary: list[str] | None = None

    def decode(self, payload: bytes) -> Any:
        return self.preprocess.decode(payload)

    def forward(self, items: list[Any]) -> Named:
        outputs = self.model.run(self.preprocess.batch(items))
        return runner_outputs(self.card, outputs, items, self.projection, self.vocabulary)


def drift_embedding(
    outputs: Sequence[npt.NDArray[np.float32]],
    source: SourceModel,
    projection: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None,
    count: int,
) -> npt.NDArray[np.float32]:
    """The compact embedding the drift monitor tests: the model's embedding output projected as the card
    says, or ``[count, 0]`` without one."""
    if source.embedding is None:
        return np.zeros((count, 0), dtype=np.float32)
    embedding = outputs[source.embedding].reshape(count, -1).astype(np.float32)
    if projection is not None:
        mean, components = projection
        embedding = ((embedding - mean) @ components.T).astype(np.float32)
    return embedding


def source_outputs(
    outputs: Sequence[npt.NDArray[np.float32]],
    source: SourceModel,
    projection: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None,
) -> Outputs:
    """``(probabilities, projected embedding)`` of a classifier's raw outputs."""
    scores = outputs[source.scores].reshape(len(outputs[source.scores]), -1)
    probabilities = softmax(scores) if source.scores_are == "logits" else scores.astype(np.float32)
    return probabilities, drift_embedding(outputs, source, projection, len(scores))


def runner_outputs(
    card: ModelCard,
    outputs: Sequence[npt.NDArray[np.float32]],
    items: Sequence[Any],
    projection: tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]] | None,
    vocabulary: list[str] | None,
) -> Named:
    """The Triton outputs of a model file's raw ``outputs`` for decoded ``items``."""
    assert card.source is not None
    embedding = drift_embedding(outputs, card.source, projection, len(items))
    geometries = [item.geometry for item in items if isinstance(item, ImageItem)]
    return task_outputs(
        card, outputs, count=len(items), embedding=embedding, vocabulary=vocabulary, geometries=geometries
    )


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
        vocabulary = (
            read_vocabulary(version_dir / card.task.vocabulary)
            if isinstance(card.task, SequenceTask)
            else None
        )
        return SourceRunner(card, model, preprocess, card.source, projection, vocabulary)
    torch_device = torch.device(device)
    module = torch.jit.load(str(version_dir / "model.pt"), map_location=torch_device)  # type: ignore[no-untyped-call]
    return CardRunner(
        card, ServingModule(module.eval(), card.name, optimise=optimise), preprocess, torch_device
    )


def run_named(runner: Runner, requests: Sequence[npt.NDArray[np.object_]]) -> list[Named | PayloadError]:
    """Outputs by name per request, or the error that request alone fails with."""
    decoded: list[list[Any] | PayloadError] = []
    for payloads in requests:
        try:
            if payloads.ndim != 2 or payloads.shape[1] != 1:
                raise PayloadError(f"expected payloads shaped [n, 1], got {list(payloads.shape)}")
            decoded.append([runner.decode(bytes(p)) for p in payloads[:, 0]])
        except PayloadError as exc:
            decoded.append(exc)
    items = [item for entry in decoded if not isinstance(entry, PayloadError) for item in entry]
    named = runner.forward(items) if items else {}
    results: list[Named | PayloadError] = []
    offset = 0
    for entry in decoded:
        if isinstance(entry, PayloadError):
            results.append(entry)
            continue
        end = offset + len(entry)
        results.append({name: array[offset:end] for name, array in named.items()})
        offset = end
    return results


def run_requests(runner: Runner, requests: Sequence[npt.NDArray[np.object_]]) -> list[Outputs | PayloadError]:
    """``(probabilities, embedding)`` per request of a classifier, or the error that request alone fails
    with: what the ``model.py`` of versions built before tasks existed reads."""
    outputs = runner.card.outputs
    results: list[Outputs | PayloadError] = []
    for result in run_named(runner, requests):
        if isinstance(result, PayloadError):
            results.append(result)
            continue
        scores = result[outputs.scores]
        empty = np.zeros((len(scores), 0), dtype=np.float32)
        results.append((scores, result.get(outputs.embedding or "", empty)))
    return results
