"""The async Triton adapter against the real Triton: results, versions, and errors sorted for retry or DLQ."""

from __future__ import annotations

import asyncio

import pytest

from dlstream.adapters.triton.client import AsyncTriton, PayloadRejected
from dlstream.config.settings import Settings
from dlstream.domain.card import read_card
from dlstream.domain.errors import ModelUnavailable, TransientError
from dlstream.models.preprocess.image import encode_png
from dlstream.models.zoo.data.photos import photo
from tests.integration.conftest import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_concurrent_payloads_come_back_with_their_model_version(settings: Settings) -> None:
    labels = read_card(PROJECT_ROOT / settings.triton.model_repository / "imagenet" / "1").labels

    async def run() -> list[str]:
        client = AsyncTriton(settings.triton)
        try:
            payloads = [encode_png(photo(name)) for name in ("chelsea", "coffee", "rocket")]
            results = await asyncio.gather(*(client.infer("imagenet", p) for p in payloads))
        finally:
            await client.close()
        assert {r.model_version for r in results} == {"1"}
        assert all(r.outputs["EMBEDDING"].shape == (8,) for r in results)
        return [labels[int(r.outputs["PROBABILITIES"].argmax())] for r in results]

    assert asyncio.run(run()) == ["tiger cat", "espresso", "missile"]


def test_a_batch_is_one_request_with_one_answer_per_payload_in_order(settings: Settings) -> None:
    labels = read_card(PROJECT_ROOT / settings.triton.model_repository / "imagenet" / "1").labels
    names = ("rocket", "chelsea", "coffee", "chelsea")

    async def run() -> list[str]:
        client = AsyncTriton(settings.triton)
        try:
            results = await client.infer_batch("imagenet", [encode_png(photo(name)) for name in names])
            with pytest.raises(PayloadRejected):
                await client.infer_batch("imagenet", [encode_png(photo("coffee")), b"not an image"])
        finally:
            await client.close()
        assert len(results) == len(names)
        assert all(
            r.outputs["EMBEDDING"].shape == (8,) and r.outputs["PROBABILITIES"].shape == (len(labels),)
            for r in results
        )
        return [labels[int(r.outputs["PROBABILITIES"].argmax())] for r in results]

    assert asyncio.run(run()) == ["missile", "tiger cat", "espresso", "tiger cat"]


def test_a_refused_payload_is_final_and_an_unknown_model_is_unavailable(settings: Settings) -> None:
    async def run() -> None:
        client = AsyncTriton(settings.triton)
        try:
            with pytest.raises(PayloadRejected, match="not valid UTF-8"):
                await client.infer("text_topics", b"caf\xc3")
            # A model Triton does not serve (now): the worker waits for it, bounded, before dead-lettering.
            with pytest.raises(ModelUnavailable, match="NOT_FOUND"):
                await client.infer("not-loaded-model", b"x")
        finally:
            await client.close()

    asyncio.run(run())


def test_an_unreachable_triton_is_transient(settings: Settings) -> None:
    async def run() -> None:
        unreachable = settings.triton.model_copy(update={"grpc_port": 1, "request_timeout_s": 2.0})
        client = AsyncTriton(unreachable)
        try:
            with pytest.raises(TransientError):
                await client.infer("digits", b"x")
        finally:
            await client.close()

    asyncio.run(run())
