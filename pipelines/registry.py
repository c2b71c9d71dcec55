"""The models ``dlstream models build`` knows, in build order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipelines.builders import digits, imagenet, speech_digits, text_topics
from pipelines.builders.common import BuildResult, read_metrics

Builder = Callable[..., BuildResult]

BUILDERS: dict[str, Builder] = {
    "digits": digits.build,
    "speech_digits": speech_digits.build,
    "text_topics": text_topics.build,
    "imagenet": imagenet.build,
}


def build_models(repo: Path, names: list[str], *, seed: int = 0, replace: bool = False) -> list[BuildResult]:
    """Build the named models (all when empty) as version 1; a built one is kept unless ``replace``."""
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise KeyError(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(BUILDERS)}")
    results = []
    for name in names or list(BUILDERS):
        version_dir = repo / name / "1"
        if (version_dir / "metrics.json").exists() and not replace:
            results.append(BuildResult(name, 1, version_dir, read_metrics(version_dir)))
            continue
        results.append(BUILDERS[name](repo, version=1, seed=seed, replace=replace))
    return results
