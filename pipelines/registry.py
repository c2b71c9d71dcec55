"""The models ``dlstream models build`` knows, in build order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipelines.builders import digits
from pipelines.builders.common import BuildResult

Builder = Callable[..., BuildResult]

BUILDERS: dict[str, Builder] = {"digits": digits.build}


def build_models(repo: Path, names: list[str], *, seed: int = 0, replace: bool = False) -> list[BuildResult]:
    """Build the named models (all when empty) as version 1 of each."""
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise KeyError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(BUILDERS)}")
    return [BUILDERS[name](repo, version=1, seed=seed, replace=replace) for name in names or list(BUILDERS)]
