"""``dlstream bench models``: Triton throughput from raw bytes against the same model run in-process, for
models of every task.

Every figure comes from one run on one machine: Triton over gRPC at batch 1 and at several batch sizes, and
the in-process runner (same decoding, same model file, same postprocessing) at Triton's best batch size. A
built-in model is fed its held-out samples, an added one the reference samples it was added with.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from pydantic import BaseModel

from dlstream.config.settings import Settings
from dlstream.domain.card import read_card
from dlstream.models.samples import held_out_payloads
from dlstream.models.serving import load_runner, run_named

BATCH_SIZES = (1, 4, 16, 32)


def items_per_second(step: Callable[[int], int], seconds: float) -> float:
    """Call ``step(i)`` (returning how many items it handled) for about ``seconds``; items per second."""
    step(0)  # warm-up, not timed
    done, calls = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or calls < 3:
        done += step(calls)
        calls += 1
    return done / (time.perf_counter() - started)


def _batches(payloads: list[bytes], size: int) -> list[np.ndarray[Any, np.dtype[np.object_]]]:
    count = max(1, len(payloads) // size)
    return [np.array([[p] for p in payloads[i * size : (i + 1) * size]], dtype=object) for i in range(count)]


class ModelFigures(BaseModel):
    """One model's throughput: Triton over gRPC by batch size, and the in-process runner at Triton's best."""

    task: str
    triton_batch1_ips: float
    triton_best_batch: int
    triton_best_ips: float
    triton_ips_by_batch: dict[str, float]
    torch_in_process_ips: float
    triton_vs_torch: float


class MachineFigures(BaseModel):
    """What the figures were measured on."""

    cpus: int | None
    platform: str
    torch_threads: int


class ModelsBench(BaseModel):
    """`dlstream bench models`: figures for every model, with what they were measured on."""

    unit: str
    machine: MachineFigures
    seconds_per_figure: float
    models: dict[str, ModelFigures]


def bench_payloads(repo: Path, model: str) -> list[bytes]:
    """What a model is measured on: a plugin's held-out samples, or the reference samples of an added
    model."""
    version_dir = repo / model / "1"
    card = read_card(version_dir)
    if card.plugin is not None:
        seed = json.loads((version_dir / "metrics.json").read_text())["seed"]
        payloads, _ = held_out_payloads(card.plugin, seed)
        return payloads
    from dlstream.repository.add import read_reference

    return read_reference(repo / model / "reference", card.modality, []).payloads


def bench_model(
    settings: Settings, repo: Path, model: str, seconds: float, batch_sizes: tuple[int, ...] = BATCH_SIZES
) -> ModelFigures:
    """The figures for one model."""
    version_dir = repo / model / "1"
    payloads = bench_payloads(repo, model)
    client = grpcclient.InferenceServerClient(settings.triton.grpc_url)
    try:
        max_batch = int(client.get_model_config(model, as_json=True)["config"].get("max_batch_size", 1))
        triton: dict[int, float] = {}
        for size in sorted({min(s, max_batch) for s in batch_sizes}):
            batches = _batches(payloads, size)

            def infer(i: int, batches: list[np.ndarray[Any, np.dtype[np.object_]]] = batches) -> int:
                batch = batches[i % len(batches)]
                tensor = grpcclient.InferInput("PAYLOAD", list(batch.shape), "BYTES")
                tensor.set_data_from_numpy(batch)
                client.infer(model, [tensor])
                return len(batch)

            triton[size] = items_per_second(infer, seconds)
    finally:
        client.close()
    best = max(triton, key=lambda size: triton[size])
    runner = load_runner(version_dir, "cpu")
    local_batches = _batches(payloads, best)

    def run_local(i: int) -> int:
        batch = local_batches[i % len(local_batches)]
        result = run_named(runner, [batch])[0]
        if isinstance(result, Exception):
            raise result
        return len(batch)

    torch_ips = items_per_second(run_local, seconds)
    return ModelFigures(
        task=runner.card.task.kind,
        triton_batch1_ips=round(triton[1], 1),
        triton_best_batch=best,
        triton_best_ips=round(triton[best], 1),
        triton_ips_by_batch={str(k): round(v, 1) for k, v in triton.items()},
        torch_in_process_ips=round(torch_ips, 1),
        triton_vs_torch=round(triton[best] / torch_ips, 3),
    )


def bench_models(
    settings: Settings,
    repo: Path,
    models: list[str],
    seconds: float,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
) -> ModelsBench:
    """Figures for every model (items per second, ``ips``), with what they were measured on."""
    import os
    import platform

    import torch

    return ModelsBench(
        unit="items per second; Triton over gRPC from raw bytes, sequential requests",
        machine=MachineFigures(
            cpus=os.cpu_count(), platform=platform.platform(), torch_threads=torch.get_num_threads()
        ),
        seconds_per_figure=seconds,
        models={model: bench_model(settings, repo, model, seconds, batch_sizes) for model in models},
    )
