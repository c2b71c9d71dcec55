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

from pipelines.preprocess.declared import Preprocessor, preprocessor
from pipelines.preprocess.errors import PayloadError
from services.common.card import read_card

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

    module: torch.jit.ScriptModule
    preprocess: Preprocessor
    device: torch.device

    def decode(self, payload: bytes) -> Any:
        return self.preprocess.decode(payload)

    @torch.inference_mode()
    def forward(self, items: list[Any]) -> Outputs:
        batch = self.preprocess.batch(items).to(self.device)
        probabilities, embedding = self.module(batch)
        return probabilities.float().cpu().numpy(), embedding.float().cpu().numpy()


def load_runner(version_dir: Path, device: str) -> Runner:
    """The runner of a built version folder (its ``card.json`` and ``model.pt``)."""
    card = read_card(version_dir)
    torch_device = torch.device(device)
    module = torch.jit.load(str(version_dir / "model.pt"), map_location=torch_device)  # type: ignore[no-untyped-call]
    return CardRunner(module.eval(), preprocessor(card.preprocessing, device), torch_device)


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
