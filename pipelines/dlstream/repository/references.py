"""Publishing what the drift monitor needs of the repository's versions to Redis: their reference
statistics. Builds, adds and promotions do it; ``dlstream models publish`` does it again on demand."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dlstream.adapters.redis.drift_store import with_store
from dlstream.config.settings import Settings
from dlstream.domain.card import CARD_FILE

REFERENCE_FILE = "reference.json"


def repository_references(repo: Path, names: Sequence[str] = ()) -> dict[tuple[str, str], str]:
    """``(model, version) -> reference JSON`` of every version with a card in the repository (of the named
    models when given)."""
    references: dict[tuple[str, str], str] = {}
    for model_dir in sorted(p for p in repo.iterdir() if p.is_dir()):
        if names and model_dir.name not in names:
            continue
        for version_dir in sorted(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()):
            reference = version_dir / REFERENCE_FILE
            if (version_dir / CARD_FILE).exists() and reference.exists():
                references[(model_dir.name, version_dir.name)] = reference.read_text()
    return references


def publish_references(settings: Settings, repo: Path, names: Sequence[str] = ()) -> list[tuple[str, str]]:
    """Store the reference statistics of the repository's versions in Redis; the versions published."""
    references = repository_references(repo, names)
    if references:
        with_store(settings, lambda store: store.publish_references(references))
    return sorted(references)
