"""Telling every Triton replica what to serve: load (a new or pinned version), unload, and wait for it.

Triton runs in explicit model-control mode, so each replica must be asked; ``triton.replicas`` lists their
HTTP endpoints, or names a headless Service (``dns:NAME:PORT``) whose every address is one. Triton's control
API may be behind a key (``triton.control_key``): every call here sends it, and a refusal says which
setting is missing or wrong.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import structlog
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from dlstream.config.settings import TritonSettings
from dlstream.domain.errors import AccessDenied, StackError

log = structlog.get_logger("dlstream.triton")
TRITON_LOAD_TIMEOUT_S = 300.0


def triton_endpoints(triton: TritonSettings) -> list[str]:
    """HTTP host:port of every Triton replica (``triton.replicas``; ``dns:NAME:PORT`` is resolved)."""
    if not triton.replicas.strip():
        return [triton.http_url]
    endpoints: list[str] = []
    for item in (part.strip() for part in triton.replicas.split(",")):
        if not item:
            continue
        if item.startswith("dns:"):
            host, _, port = item[len("dns:") :].rpartition(":")
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except OSError as exc:
                raise StackError(f"cannot resolve the Triton replicas {item!r}: {exc}") from exc
            endpoints += sorted({f"{info[4][0]}:{port}" for info in infos})
        else:
            endpoints.append(item)
    return endpoints


def control_refusal(url: str, settings: TritonSettings, exc: InferenceServerException) -> AccessDenied | None:
    """:class:`AccessDenied` when Triton refused a control call for want of the right key, else None."""
    message = exc.message() or str(exc)
    if "is restricted, expecting header" not in message:
        return None
    held = "a wrong key" if settings.control_key is not None else "no key"
    return AccessDenied(
        f"Triton at {url} refused a control request (load, unload, repository index): its control API needs "
        f"the key in the {settings.control_header!r} header, and this identity sent {held}; set "
        "DLSTREAM_TRITON__CONTROL_KEY, or the secrets file triton__control_key, of an identity that may load "
        "models"
    )


def _failure(url: str, settings: TritonSettings, exc: InferenceServerException, doing: str) -> Exception:
    return control_refusal(url, settings, exc) or StackError(f"Triton at {url} could not {doing}: {exc}")


def load_in_triton(settings: TritonSettings, model: str, version: int) -> float:
    """Ask every Triton replica to (re)load the model from its config and wait until each serves
    ``version`` and no other version (a request that names no version goes to the newest ready one, so the
    previous version must be gone before the swap is done); seconds it took. Replicas run in explicit
    model-control mode, so each must be asked (a Service would reach one)."""
    started = time.monotonic()
    endpoints = triton_endpoints(settings)
    clients = [triton_http.InferenceServerClient(url=url, network_timeout=600.0) for url in endpoints]
    headers = settings.control_headers("http")
    try:
        for url, client in zip(endpoints, clients, strict=True):
            try:
                client.load_model(model, headers=headers)
            except InferenceServerException as exc:
                raise _failure(url, settings, exc, f"load {model} version {version}") from exc
        for url, client in zip(endpoints, clients, strict=True):
            _wait(
                lambda c=client, u=url: _serving_only(c, u, settings, model, version),  # type: ignore[misc]
                started,
                f"Triton at {url} did not make {model} version {version} ready",
            )
    finally:
        for client in clients:
            client.close()
    log.info("triton.loaded", model=model, version=version, replicas=endpoints)
    return time.monotonic() - started


def _serving_only(client: Any, url: str, settings: TritonSettings, model: str, version: int) -> bool:
    try:
        index = client.get_model_repository_index(headers=settings.control_headers("http"))
    except InferenceServerException as exc:
        refused = control_refusal(url, settings, exc)
        if refused is not None:
            raise refused from exc
        return False
    ready = {str(e.get("version")) for e in index if e.get("name") == model and e.get("state") == "READY"}
    return ready == {str(version)}


def unload_from_triton(settings: TritonSettings, model: str) -> None:
    """Ask every replica to unload ``model`` and wait until none serves it."""
    started = time.monotonic()
    for url in triton_endpoints(settings):
        client = triton_http.InferenceServerClient(url=url, network_timeout=120.0)
        try:
            client.unload_model(model, headers=settings.control_headers("http"))
            _wait(
                lambda c=client: not _any_ready(c, model),  # type: ignore[misc]
                started,
                f"Triton at {url} still serves {model}",
            )
        except InferenceServerException as exc:
            raise _failure(url, settings, exc, f"unload {model}") from exc
        finally:
            client.close()


def _any_ready(client: Any, model: str) -> bool:
    try:
        return bool(client.is_model_ready(model))
    except InferenceServerException:
        return False


def _wait(done: Callable[[], bool], started: float, message: str) -> None:
    while not done():
        if time.monotonic() - started > TRITON_LOAD_TIMEOUT_S:
            raise StackError(message)
        time.sleep(0.5)
