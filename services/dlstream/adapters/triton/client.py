"""Async Triton adapter (gRPC): payloads in, probabilities and embeddings out, errors translated.

A batch of payloads for one model goes as one request (a ``[n, 1]`` tensor): one gRPC call instead of
``n`` costs the worker and Triton less per payload. A request fails as a whole, so a caller that needs each
payload's own answer sends a rejected batch again payload by payload. ``InferenceServerException`` never
leaves this module: a payload the model refuses becomes :class:`PayloadRejected` (dead-letter it), anything
else :class:`TransientError` (retry it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException

from dlstream.config.settings import TritonSettings
from dlstream.domain.card import Outputs
from dlstream.domain.errors import ContractError, DeadLetterReason, ModelUnavailable, TransientError

INPUT = "PAYLOAD"
DEFAULT_NAMES = (Outputs().scores, Outputs().embedding or "")
T = TypeVar("T")


class PayloadRejected(ContractError):
    """The model cannot use this payload (Triton answered INVALID_ARGUMENT); retrying will not help."""

    def __init__(self, message: str) -> None:
        super().__init__(DeadLetterReason.UNDECODABLE_PAYLOAD, message)


@dataclass(frozen=True, slots=True)
class Inference:
    """What one payload produced (its row of each output, by name), and which model version produced it."""

    model: str
    model_version: str
    outputs: dict[str, npt.NDArray[Any]]


def near_equal_parts(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in the fewest parts of at most ``size``, their lengths differing by at most one: how a
    batch is spread over concurrent requests."""
    count = -(-len(items) // size)
    return [list(items[k::count]) for k in range(count)]


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Probabilities from logits along the last axis (numerically stable)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=-1, keepdims=True), dtype=np.float32)


def sigmoid(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Independent probabilities from logits (numerically stable for large magnitudes)."""
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * logits)), dtype=np.float32)


def translate(exc: InferenceServerException, model: str) -> ContractError | TransientError:
    """The project's error for a Triton error: rejected payloads are final, a model Triton does not serve
    is :class:`ModelUnavailable`, everything else transient."""
    status = str(exc.status() or "")
    message = exc.message() or str(exc)
    if status.endswith("INVALID_ARGUMENT"):
        bad_output = f"{DeadLetterReason.BAD_MODEL_OUTPUT.value}: "
        if bad_output in message:
            return ContractError(DeadLetterReason.BAD_MODEL_OUTPUT, message[message.index(bad_output) :])
        return PayloadRejected(message)
    if "unknown model" in message.lower() or "no available versions" in message.lower():
        return ModelUnavailable(f"Triton {model}: {status or 'error'}: {message}")
    # NOT_FOUND / UNAVAILABLE while Triton (re)loads a model, deadlines, connection loss: all worth retrying.
    return TransientError(f"Triton {model}: {status or 'error'}: {message}")


def grpc_client(settings: TritonSettings) -> Any:
    """A Triton gRPC aio client with tritonclient's channel defaults (message sizes, keepalive) and a short
    reconnect backoff: after an outage it reconnects within ``reconnect_backoff_max_s`` of Triton being
    back, not after gRPC's exponential backoff of up to two minutes."""
    keepalive = grpcaio.KeepAliveOptions()
    backoff_ms = max(1, round(settings.reconnect_backoff_max_s * 1000))
    channel_args = [
        ("grpc.max_send_message_length", grpcaio.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcaio.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", min(backoff_ms, 200)),
        ("grpc.min_reconnect_backoff_ms", min(backoff_ms, 200)),
        ("grpc.max_reconnect_backoff_ms", backoff_ms),
    ]
    return grpcaio.InferenceServerClient(settings.grpc_url, channel_args=channel_args)


class AsyncTriton:
    """A gRPC aio client for the configured Triton; open it once per worker and close it on shutdown."""

    def __init__(self, settings: TritonSettings) -> None:
        self.settings = settings
        self._client: Any = grpc_client(settings)

    async def infer(
        self, model: str, payload: bytes, names: Sequence[str] = DEFAULT_NAMES, input_name: str = INPUT
    ) -> Inference:
        """Run one payload through ``model``; see :meth:`infer_batch`."""
        return (await self.infer_batch(model, [payload], names, input_name))[0]

    async def infer_batch(
        self,
        model: str,
        payloads: Sequence[bytes],
        names: Sequence[str] = DEFAULT_NAMES,
        input_name: str = INPUT,
    ) -> list[Inference]:
        """Run ``payloads`` through ``model`` in one request (at most the model's ``max_batch_size``);
        ``names`` (from its card, :meth:`ModelCard.output_names`) are the outputs to read and
        ``input_name`` the input that takes the payloads. One :class:`Inference` per payload, in order.

        Raises:
            PayloadRejected: the model refused the request (one payload of it, or its size).
            ContractError: the model answered a number of rows other than the number of payloads, or said
                its output is wrong (``bad-model-output``).
            ModelUnavailable: Triton does not serve the model (now).
            TransientError: Triton is unavailable for now.
        """
        tensor = grpcclient.InferInput(input_name, [len(payloads), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[payload] for payload in payloads], dtype=object))
        requested = [grpcclient.InferRequestedOutput(name) for name in names]
        try:
            result = await self._client.infer(
                model, [tensor], outputs=requested, client_timeout=self.settings.request_timeout_s
            )
        except InferenceServerException as exc:
            raise translate(exc, model) from None
        version = str(result.get_response().model_version)
        arrays = {name: result.as_numpy(name) for name in names}
        missing = [name for name, array in arrays.items() if array is None]
        if missing:
            raise TransientError(f"Triton {model} answered without {missing}")
        for name, array in arrays.items():
            if len(array) != len(payloads):
                raise ContractError(
                    DeadLetterReason.BAD_MODEL_OUTPUT,
                    f"model {model} version {version} answered {len(array)} rows of {name} for "
                    f"{len(payloads)} payloads",
                )
        return [
            Inference(model, version, {name: array[i] for name, array in arrays.items()})
            for i in range(len(payloads))
        ]

    async def close(self) -> None:
        """Close the channel."""
        await self._client.close()
