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

from services.common.errors import ContractError, DeadLetterReason, TransientError
from services.common.settings import TritonSettings

INPUT = "PAYLOAD"
OUTPUTS = ("PROBABILITIES", "EMBEDDING")


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


def translate(exc: InferenceServerException, model: str) -> ContractError | TransientError:
    """The project's error for a Triton error: rejected payloads are final, everything else transient."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status.endswith("INVALID_ARGUMENT"):
        return PayloadRejected(message)
    # NOT_FOUND / UNAVAILABLE while Triton (re)loads a model, deadlines, connection loss: all worth retrying.
    return TransientError(f"Triton {model}: {status or 'error'}: {message}")


class AsyncTriton:
    """A gRPC aio client for the configured Triton; open it once per worker and close it on shutdown."""

    def __init__(self, settings: TritonSettings) -> None:
        self.settings = settings
        self._client: Any = grpcaio.InferenceServerClient(settings.grpc_url)

    async def infer(self, model: str, payload: bytes) -> Inference:
        """Run one payload through ``model``.

        Raises:
            PayloadRejected: the model refused this payload.
            TransientError: Triton or the model is unavailable for now.
        """
        tensor = grpcclient.InferInput(INPUT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[payload]], dtype=object))
        try:
            result = await self._client.infer(model, [tensor], client_timeout=self.settings.request_timeout_s)
        except InferenceServerException as exc:
            raise translate(exc, model) from None
        response = result.get_response()
        probabilities, embedding = (result.as_numpy(name) for name in OUTPUTS)
        if probabilities is None or embedding is None:
            raise TransientError(f"Triton {model} answered without {OUTPUTS}")
        return Inference(model, str(response.model_version), probabilities[0], embedding[0])

    async def close(self) -> None:
        """Close the channel."""
        await self._client.close()
