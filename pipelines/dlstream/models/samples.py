"""Held-out samples of a model as the raw bytes a producer sends, for tests, benchmarks and demos."""

from __future__ import annotations

from dlstream.models.registry import load_spec


def held_out_payloads(model: str, seed: int) -> tuple[list[bytes], list[int] | None]:
    """The held-out samples of a build of plugin ``model`` with ``seed``, and their label indices when
    known."""
    return load_spec(model).held_out(seed)
