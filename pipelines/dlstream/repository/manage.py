"""Managing the served models: add one (written, published, loaded), list, roll back, remove.

Each step that changes what Triton serves goes through every replica
(:mod:`dlstream.adapters.triton.control`).
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from dlstream.adapters.redis.drift_store import DriftStore, with_store
from dlstream.adapters.triton.control import load_in_triton, triton_endpoints, unload_from_triton
from dlstream.adapters.triton.discovery import discover_once
from dlstream.config.settings import Settings
from dlstream.domain.card import ModelCard, read_card
from dlstream.domain.errors import DlstreamError
from dlstream.domain.monitoring import RetrainContext
from dlstream.models.triton_config import built_versions, serving_version, write_configs
from dlstream.repository.references import publish_references

if TYPE_CHECKING:
    from dlstream.repository.add import Added, AddRequest


class ManageError(DlstreamError):
    """A rollback or removal that cannot be done as asked."""


@dataclass(frozen=True)
class Served:
    """An added model and how long Triton took to serve it."""

    added: Added
    load_s: float


def add_and_serve(settings: Settings, repo: Path, request: AddRequest) -> Served:
    """Add the model, publish its reference statistics and have every Triton replica serve version 1; if
    publishing or loading fails, the model folder is removed again."""
    # Adding loads the model (torch, onnxruntime); listing, rolling back and removing need neither, and
    # importing torch cost each of those commands about 4 CPU seconds.
    from dlstream.repository.add import add_model

    added = add_model(repo, request)
    try:
        publish_references(settings, repo, [request.name])
        seconds = load_in_triton(settings.triton, request.name, 1)
    except BaseException:
        shutil.rmtree(added.path, ignore_errors=True)
        raise
    return Served(added, seconds)


def add_triton_and_serve(settings: Settings, repo: Path, request: AddRequest) -> Served:
    """Add a Triton model folder of its owner, load it on every replica, run the reference samples through
    Triton for the reference statistics and publish them; if any step fails, the model is unloaded and its
    folder removed again."""
    from dlstream.repository.add import Added, AddError, read_reference
    from dlstream.repository.add_triton import score_through_triton, write_reference, write_triton_model

    path, card = write_triton_model(repo, request)
    try:
        seconds = load_in_triton(settings.triton, card.name, card.version)
        reference = read_reference(path / "reference", card.modality, card.labels)
        started = time.perf_counter()
        probabilities = score_through_triton(triton_endpoints(settings.triton)[0], card, reference.payloads)
        rate = len(reference.payloads) / max(time.perf_counter() - started, 1e-9)
        if probabilities.shape[1] != len(card.labels):
            raise AddError(f"{card.outputs.scores} has {probabilities.shape[1]} values per payload")
        write_reference(path, card, probabilities)
        publish_references(settings, repo, [card.name])
    except BaseException:
        with contextlib.suppress(DlstreamError):
            unload_from_triton(settings.triton, card.name)
        shutil.rmtree(path, ignore_errors=True)
        raise
    return Served(Added(path, card, rate), seconds)


def rollback(settings: Settings, repo: Path, name: str, to: int | None = None) -> tuple[int, int]:
    """Pin the model to an earlier version (the one before the serving version by default) on every Triton
    replica; ``(from, to)``. A later promotion serves the newest version again."""
    model_dir = repo / name
    if not model_dir.is_dir():
        raise ManageError(f"no model {name!r} in {repo}")
    versions = built_versions(model_dir)
    current = serving_version(model_dir)
    earlier = [v for v in versions if v < current]
    target = to if to is not None else (earlier[-1] if earlier else None)
    if target is None:
        raise ManageError(f"{name} serves version {current}; there is no earlier version to roll back to")
    if target not in versions:
        raise ManageError(f"{name} has no version {target}; built: {', '.join(map(str, versions))}")
    if target == current:
        raise ManageError(f"{name} already serves version {target}")
    card = read_card(model_dir / str(target))
    publish_references(settings, repo, [name])
    write_configs(model_dir, card, pinned=target)
    load_in_triton(settings.triton, name, target)
    return current, target


def remove(settings: Settings, repo: Path, name: str) -> None:
    """Unload the model from every Triton replica, delete its folder and its reference statistics."""
    model_dir = repo / name
    if not model_dir.is_dir():
        raise ManageError(f"no model {name!r} in {repo}")
    unload_from_triton(settings.triton, name)
    doomed = repo / f".{name}.removed"
    model_dir.rename(doomed)
    shutil.rmtree(doomed)
    with_store(settings, lambda store: store.delete_references(name))


class ModelRow(BaseModel):
    """One model in `dlstream models list`."""

    name: str
    modality: str
    task: str
    format: str
    versions: list[int]
    serving: list[int]
    default: bool
    classes: int
    accuracy: float | None
    retraining: str
    open_alert: str | None
    last_retraining: str | None
    problem: str | None


def model_rows(settings: Settings, repo: Path | None) -> list[ModelRow]:
    """One row per model: what Triton serves (discovery), what the repository holds when it is readable, and
    the monitor's open alert and last retraining (Redis)."""
    catalog = discover_once(settings.triton, overrides=settings.inference.default_models)
    names = set(catalog.models)
    if repo is not None and repo.is_dir():
        names |= {p.name for p in repo.iterdir() if p.is_dir() and built_versions(p)}
    contexts = with_store(settings, lambda store: _contexts(store, sorted(names)))
    rows: list[ModelRow] = []
    for name in sorted(names):
        served = catalog.models.get(name)
        card: ModelCard | None = served.card if served is not None else None
        versions: list[int] = []
        if repo is not None and (repo / name).is_dir():
            versions = built_versions(repo / name)
            card = card or read_card(repo / name / str(versions[-1]))
        if card is None:
            continue
        context = contexts[name]
        rows.append(
            ModelRow(
                name=name,
                modality=card.modality.value,
                task=card.task.kind,
                format=card.source_format,
                versions=versions or [int(v) for v in (served.versions if served else ())],
                serving=[int(v) for v in served.versions] if served else [],
                default=served is not None and catalog.default_name(card.modality) == name,
                classes=len(card.labels),
                accuracy=card.accuracy,
                retraining=card.retraining.kind,
                open_alert=context.open_alert.id if context.open_alert else None,
                last_retraining=context.run.state or None,
                problem=catalog.problems.get(name),
            )
        )
    return rows


async def _contexts(store: DriftStore, names: list[str]) -> dict[str, RetrainContext]:
    return {name: await store.retrain_context(name) for name in names}
