"""The stream benchmark's baseline: the same payloads sent to Triton directly, without Kafka or a worker."""

from __future__ import annotations

import asyncio
import time

from dlstream.adapters.triton.client import AsyncTriton, near_equal_parts
from dlstream.config.settings import Settings


async def infer_split(triton: AsyncTriton, model: str, batch: list[bytes], request_size: int) -> None:
    """One batch through Triton as a worker sends it: concurrent requests of at most ``request_size``."""
    parts = near_equal_parts(batch, request_size)
    await asyncio.gather(*(triton.infer_batch(model, part) for part in parts))


async def direct_triton_eps(
    settings: Settings, model: str, payloads: list[bytes], batch: int, request_size: int | None = None
) -> float:
    """Payloads per second through Triton, ``batch`` at a time, each batch in concurrent requests of at most
    ``request_size`` (the workers' setting when None), with as many batches in Triton at once as a worker
    has (``triton_depth``)."""
    size = request_size or settings.inference.request_size
    places = asyncio.Semaphore(settings.inference.triton_depth)
    triton = AsyncTriton(settings.triton)

    async def one(chunk: list[bytes]) -> None:
        try:
            await infer_split(triton, model, chunk, size)
        finally:
            places.release()

    try:
        await infer_split(triton, model, payloads[:batch], size)  # warm-up
        started = time.perf_counter()
        sent = []
        for i in range(0, len(payloads), batch):
            await places.acquire()
            sent.append(asyncio.create_task(one(payloads[i : i + batch])))
        await asyncio.gather(*sent)
        return len(payloads) / (time.perf_counter() - started)
    finally:
        await triton.close()


async def triton_round_trips_ms(
    settings: Settings, model: str, payloads: list[bytes], batch: int, rounds: int
) -> list[float]:
    """Milliseconds of ``rounds`` round trips of ``batch`` payloads sent as the workers send them."""
    size = settings.inference.request_size
    triton = AsyncTriton(settings.triton)
    try:
        await infer_split(triton, model, payloads[:batch], size)  # warm-up
        times = []
        for r in range(rounds):
            chunk = [payloads[(r * batch + i) % len(payloads)] for i in range(batch)]
            started = time.perf_counter()
            await infer_split(triton, model, chunk, size)
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        await triton.close()


def request_sizes(settings: Settings, model: str, payloads: list[bytes], batch: int) -> dict[str, float]:
    """Direct Triton payloads per second for full batches sent one payload per request, as one request,
    and in requests of the workers' ``request_size``, side by side (twice each, alternating; the better)."""
    sizes = {"one_per_payload": 1, "one_per_batch": batch, "request_size": settings.inference.request_size}
    rates: dict[str, list[float]] = {name: [] for name in sizes}
    for _ in range(2):
        for name, size in sizes.items():
            rates[name].append(asyncio.run(direct_triton_eps(settings, model, payloads, batch, size)))
    return {name: round(max(values), 1) for name, values in rates.items()}
