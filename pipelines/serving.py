"""What a Triton Python model does with a batch of requests, kept out of ``model.py`` so it is tested.

Each request carries ``[n, 1]`` payloads. Payloads are decoded one by one; a request with a payload that
cannot be decoded gets its own error, and the decoded payloads of all other requests run through the network
as one batch.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from pipelines.models.text import encode, load_encoder
from pipelines.preprocess.audio import decode_speech
from pipelines.preprocess.errors import PayloadError
from pipelines.preprocess.image import decode_digit, decode_imagenet
from pipelines.preprocess.text import decode_text

Outputs = tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]

DECODERS: dict[str, Callable[[bytes], npt.NDArray[np.float32]]] = {
    "digit": decode_digit,
    "imagenet": decode_imagenet,
    "speech": decode_speech,
}


class Runner(Protocol):
    """Decodes single payloads and runs decoded items as one batch."""

    def decode(self, payload: bytes) -> Any:
        """One payload to one model input; raises PayloadError."""

    def forward(self, items: list[Any]) -> Outputs:
        """``(probabilities [B, C], embedding [B, E])`` for a batch of decoded items."""


@dataclass
class TensorRunner:
    """A TorchScript serving module fed by a per-payload decoder."""

    module: torch.jit.ScriptModule
    decoder: Callable[[bytes], npt.NDArray[np.float32]]
    device: torch.device

    def decode(self, payload: bytes) -> npt.NDArray[np.float32]:
        return self.decoder(payload)

    @torch.inference_mode()
    def forward(self, items: list[npt.NDArray[np.float32]]) -> Outputs:
        batch = torch.from_numpy(np.stack(items)).to(self.device)
        probabilities, embedding = self.module(batch)
        return probabilities.float().cpu().numpy(), embedding.float().cpu().numpy()


@dataclass
class TextRunner:
    """The MiniLM encoder followed by the exported TorchScript head."""

    encoder: Any
    head: torch.jit.ScriptModule
    device: torch.device

    def decode(self, payload: bytes) -> str:
        return decode_text(payload)

    @torch.inference_mode()
    def forward(self, items: list[str]) -> Outputs:
        embeddings = torch.from_numpy(encode(self.encoder, items)).to(self.device)
        probabilities, embedding = self.head(embeddings)
        return probabilities.float().cpu().numpy(), embedding.float().cpu().numpy()


def load_runner(version_dir: Path, device: str) -> Runner:
    """The runner described by ``serving.json`` in a built version folder."""
    spec = json.loads((version_dir / "serving.json").read_text())
    torch_device = torch.device(device)
    if spec["runner"] == "tensor":
        module = torch.jit.load(str(version_dir / "model.pt"), map_location=torch_device)  # type: ignore[no-untyped-call]
        return TensorRunner(module.eval(), DECODERS[spec["decoder"]], torch_device)
    if spec["runner"] == "text":
        head = torch.jit.load(str(version_dir / "model.pt"), map_location=torch_device)  # type: ignore[no-untyped-call]
        return TextRunner(load_encoder(device), head.eval(), torch_device)
    raise ValueError(f"unknown runner {spec['runner']!r} in {version_dir / 'serving.json'}")


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
