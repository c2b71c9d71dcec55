"""The model plugins installed: the ``dlstream.models`` entry-point group, and building them."""

from __future__ import annotations

import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from dlstream.domain.card import CARD_FILE
from dlstream.models.build import BuildResult, build_spec, read_metrics
from dlstream.models.build_cache import BuildCache
from dlstream.models.spec import ModelSpec

GROUP = "dlstream.models"


def plugins() -> dict[str, EntryPoint]:
    """The registered model plugins by name (nothing is imported)."""
    return {ep.name: ep for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)}


def load_spec(name: str) -> ModelSpec:
    """The spec of plugin ``name``.

    Raises:
        KeyError: no plugin of that name is installed.
        TypeError: the entry point is not a ModelSpec.
    """
    found = plugins()
    if name not in found:
        raise KeyError(f"no model plugin {name!r} in {GROUP}; installed: {', '.join(found) or 'none'}")
    spec = found[name].load()
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"entry point {found[name].value} is a {type(spec).__name__}, not a ModelSpec")
    if spec.name != name:
        raise TypeError(f"entry point {name!r} names its spec {spec.name!r}")
    return spec


def build_models(
    repo: Path,
    names: list[str],
    *,
    seed: int = 0,
    replace: bool = False,
    cache: BuildCache | None = None,
) -> list[BuildResult]:
    """Build the named plugins (all when empty) as version 1; one built with a card is kept unless
    ``replace`` (a version without a card was built by an older dlstream and is built again).

    With a ``cache``, a version whose build inputs are unchanged is restored from it (``replace`` builds
    anew), and each fresh build is kept in it.
    """
    known = plugins()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise KeyError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(known)}")
    loaded_before = set(sys.modules)
    results: list[BuildResult] = []
    for name in names or list(known):
        version_dir = repo / name / "1"
        if (version_dir / CARD_FILE).exists() and not replace:
            results.append(BuildResult(name, 1, version_dir, read_metrics(version_dir)))
            continue
        spec = load_spec(name)
        if cache is None:
            results.append(build_spec(spec, repo, version=1, seed=seed, replace=True))
        else:
            module = known[name].module
            results.append(
                cache.build(spec, module, repo, seed=seed, replace=replace, loaded_before=loaded_before)
            )
    return results
