"""Discovery against a hand-written fake of the Triton gRPC client: every call is bounded by the request
timeout, and Triton's being unreachable is logged from the first refresh on, once per outage."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from structlog.testing import capture_logs
from tritonclient.utils import InferenceServerException

from dlstream.adapters.triton.discovery import TritonDiscovery
from dlstream.config.settings import load_settings

pytestmark = pytest.mark.unit


class FakeTriton:
    """Answers the statistics of all models with none, or fails as a hung Triton's deadline does."""

    def __init__(self) -> None:
        self.up = False
        self.timeouts: list[float | None] = []

    async def get_inference_statistics(
        self, as_json: bool = False, client_timeout: float | None = None
    ) -> dict[str, Any]:
        self.timeouts.append(client_timeout)
        if not self.up:
            raise InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED")
        return {"model_stats": []}

    async def close(self) -> None:
        """Nothing to close."""


def _events(logs: Sequence[Mapping[str, Any]]) -> list[str]:
    return [entry["event"] for entry in logs if entry["event"].startswith("discovery.triton")]


def test_a_triton_unreachable_from_the_start_is_logged_once_and_its_return_once() -> None:
    settings = load_settings(environment="test", triton={"request_timeout_s": 7.5})
    triton = FakeTriton()
    discovery = TritonDiscovery(settings.triton, client=triton)

    async def refresh(times: int) -> bool:
        for _ in range(times):
            catalog = await discovery.refresh()
        return catalog.reachable

    with capture_logs() as logs:
        assert asyncio.run(refresh(3)) is False
        triton.up = True
        assert asyncio.run(refresh(2)) is True
        triton.up = False
        assert asyncio.run(refresh(2)) is False

    assert _events(logs) == [
        "discovery.triton_unreachable",
        "discovery.triton_reachable",
        "discovery.triton_unreachable",
    ]
    assert triton.timeouts == [7.5] * 7
