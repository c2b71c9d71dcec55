"""Async Triton adapter (gRPC): one payload in, probabilities and embedding out, errors translated.

Each payload is its own request so that Triton's dynamic batcher forms the batches and a bad payload fails
alone. ``InferenceServerException`` never leaves this module: a payload the model refuses becomes
:class:`PayloadRejected` (dead-letter it), anything else :class:`TransientError` (retry it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from services.common.card import Outputs
from services.common.errors import ContractError, DeadLetterReason, ModelUnavailable, TransientError
from services.common.settings import TritonSettings

INPUT = "PAYLOAD"
DEFAULT_OUTPUTS = Outputs()


class PayloadRejected(ContractError):
    """The model cannot use this payload (Triton answered INVALID_ARGUMENT); retrying will not help."""

    def __init__(self, message: str) -> None:
        super().__init__(DeadLetterReason.UNDECODABLE_PAYLOAD, message)


@dataclass(frozen=True, slots=True)
class Inference:
    """What one payload produced, and which model version produced it."""

    model: str
    model_version: str
    probabilities: npt.NDArray[np.float32]
    embedding: npt.NDArray[np.float32]


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Probabilities from logits along the last axis (numerically stable)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True), dtype=np.float32)


def translate(exc: InferenceServerException, model: str) -> ContractError | TransientError:
    """The project's error for a Triton error: rejected payloads are final, a model Triton does not serve
    is :class:`ModelUnavailable`, everything else transient."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status.endswith("INVALID_ARGUMENT"):
        return PayloadRejected(message)
    if "unknown model" in message.lower() or "no available versions" in message.lower():
        return ModelUnavailable(f"Triton {model}: {status or 'error'}: {message}")
    # NOT_FOUND / UNAVAILABLE while Triton (re)loads a model, deadlines, connection loss: all worth retrying.
    return TransientError(f"Triton {model}: {status or 'error'}: {message}")


class AsyncTriton:
    """A gRPC aio client for the configured Triton; open it once per worker and close it on shutdown."""

    def __init__(self, settings: TritonSettings) -> None:
        self.settings = settings
        self._client: Any = grpcaio.InferenceServerClient(settings.grpc_url)

    async def infer(
        self, model: str, payload: bytes, outputs: Outputs = DEFAULT_OUTPUTS, input_name: str = INPUT
    ) -> Inference:
        """Run one payload through ``model``; ``outputs`` and ``input_name`` (from its card) name the tensors
        to read and the one that takes the payload.

        Raises:
            PayloadRejected: the model refused this payload.
            ModelUnavailable: Triton does not serve the model (now).
            TransientError: Triton is unavailable for now.
        """
        tensor = grpcclient.InferInput(input_name, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[payload]], dtype=object))
        names = [outputs.scores] + ([outputs.embedding] if outputs.embedding else [])
        requested = [grpcclient.InferRequestedOutput(name) for name in names]
        try:
            result = await self._client.infer(
                model, [tensor], outputs=requested, client_timeout=self.settings.request_timeout_s
            )
        except InferenceServerException as exc:
            raise translate(exc, model) from None
        response = result.get_response()
        scores = result.as_numpy(outputs.scores)
        embedding = result.as_numpy(outputs.embedding) if outputs.embedding else np.zeros((1, 0), np.float32)
        if scores is None or embedding is None:
            raise TransientError(f"Triton {model} answered without {names}")
        probabilities = scores[0].astype(np.float32)
        if outputs.scores_are == "logits":
            probabilities = softmax(probabilities)
        return Inference(model, str(response.model_version), probabilities, embedding[0].astype(np.float32))

    async def close(self) -> None:
        """Close the channel."""
        await self._client.close()
