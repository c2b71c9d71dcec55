"""Tritons of a test's own, and loading and unloading models of a running Triton, for tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tritonclient.http as triton_http

from dlstream.config.settings import Settings, TritonSettings
from dlstream.runtime.net import free_ports
from dlstream.tools.stack.local_stack import LocalStack
from tests.integration.conftest import PROJECT_ROOT


def wait_ready(triton: TritonSettings, model: str, ready: bool, timeout_s: float = 300.0) -> None:
    """Wait until ``model`` is (or is no longer) ready in Triton."""
    client = triton_http.InferenceServerClient(url=triton.http_url, network_timeout=60.0)
    try:
        deadline = time.monotonic() + timeout_s
        while client.is_model_ready(model) != ready:
            assert time.monotonic() < deadline, f"{model} ready={not ready} after {timeout_s}s"
            time.sleep(0.25)
    finally:
        client.close()


def _control(triton: TritonSettings, model: str, *, ready: bool) -> None:
    client = triton_http.InferenceServerClient(url=triton.http_url, network_timeout=600.0)
    try:
        (client.load_model if ready else client.unload_model)(model)
    finally:
        client.close()
    wait_ready(triton, model, ready)


def load(triton: TritonSettings, model: str) -> None:
    """Load (or reload) ``model`` and wait until it is ready."""
    _control(triton, model, ready=True)


def unload(triton: TritonSettings, model: str) -> None:
    """Unload ``model`` and wait until Triton no longer serves it."""
    _control(triton, model, ready=False)


@contextmanager
def unloaded(triton: TritonSettings, model: str) -> Iterator[None]:
    """``model`` unloaded for the block; loaded again afterwards, whatever happens."""
    unload(triton, model)
    try:
        yield
    finally:
        load(triton, model)


@contextmanager
def running(triton: LocalStack) -> Iterator[LocalStack]:
    """``triton`` (a :func:`private_triton`) started for the block, stopped afterwards whatever happens."""
    triton.up()
    try:
        yield triton
    finally:
        triton.down()


def private_triton(settings: Settings, repository: Path, run_dir: Path) -> LocalStack:
    """A Triton of its own (free ports, own run folder) on ``repository``; not started."""
    http, grpc, metrics = free_ports(3)
    private = settings.model_copy(
        update={
            "triton": settings.triton.model_copy(
                update={
                    "http_port": http,
                    "grpc_port": grpc,
                    "metrics_port": metrics,
                    "model_repository": repository,
                }
            ),
            "stack": settings.stack.model_copy(update={"run_dir": run_dir, "services": ("triton",)}),
        }
    )
    return LocalStack(private, project_root=PROJECT_ROOT)
