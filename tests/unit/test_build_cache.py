"""The build cache: a second build of the same inputs is restored, any changed input builds again."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dlstream.models.build_cache import MANIFEST, BuildCache
from dlstream.models.spec import ModelSpec

pytestmark = [pytest.mark.unit, pytest.mark.slow(reason="each test builds a tiny model through the cache")]

PLUGIN = """
from dataclasses import replace

from tests.plugins import shapes


def training_data(seed):
    import tiny_helper

    return tiny_helper.data(seed)


SPEC = replace(
    shapes.SPEC,
    name="tiny",
    held_out=lambda seed: shapes.payloads(seed, 20),
    training=replace(shapes.SPEC.training, data=training_data, epochs=1),
    data_version=lambda: "data-1",
)
"""
HELPER = """
import numpy as np
import torch

from tests.plugins import shapes

SCALE = 1.0


def data(seed):
    pictures, labels = shapes.images(seed + 1000, 20)
    pixels = torch.from_numpy(np.stack(pictures)).float().div(255.0).unsqueeze(1)
    return SCALE * (pixels - 0.5) / 0.5, torch.tensor(labels)
"""


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[Path]:
    """A plugin module and a helper it imports only while training, on ``sys.path``."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "tiny_plugin.py").write_text(PLUGIN)
    (folder / "tiny_helper.py").write_text(HELPER)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        for name in ("tiny_plugin", "tiny_helper"):
            sys.modules.pop(name, None)


def _spec() -> ModelSpec:
    spec = importlib.import_module("tiny_plugin").SPEC
    assert isinstance(spec, ModelSpec)
    return spec


def _build(cache: BuildCache, repo: Path, spec: ModelSpec, *, replace: bool = False) -> bool:
    loaded = set(sys.modules) - {"tiny_plugin", "tiny_helper"}
    result = cache.build(spec, "tiny_plugin", repo, seed=0, replace=replace, loaded_before=loaded)
    assert (repo / "tiny" / "1" / "card.json").exists()
    assert (repo / "tiny" / "config.pbtxt").exists()
    return result.cached


def test_the_same_inputs_are_restored_and_a_changed_helper_or_data_builds_again(
    plugin: Path, tmp_path: Path
) -> None:
    cache = BuildCache(tmp_path / "cache")
    spec = _spec()
    assert not _build(cache, tmp_path / "a", spec)
    # The helper imported during the build is listed with its digest; library modules are not.
    manifests = list((tmp_path / "cache" / "tiny").glob(f"*/{MANIFEST}"))
    assert len(manifests) == 1
    listed = manifests[0].read_text()
    assert "tiny_helper.py" in listed
    assert "site-packages" not in listed

    assert _build(cache, tmp_path / "b", spec)
    built, restored = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"
    for name in ("1/model.pt", "1/card.json", "1/reference.json", "config.pbtxt", "configs/gpu.pbtxt"):
        assert (restored / name).read_bytes() == (built / name).read_bytes(), name
    # A repository that already holds version 1 is replaced by the restored one.
    (restored / "1" / "model.pt").write_bytes(b"stale")
    assert _build(cache, tmp_path / "b", spec)
    assert (restored / "1" / "model.pt").read_bytes() == (built / "1" / "model.pt").read_bytes()

    assert not _build(cache, tmp_path / "c", spec, replace=True)
    # An entry that lost a file is not restored; the build that replaces it is kept instead.
    (manifests[0].parent / "version" / "model.pt").unlink()
    assert not _build(cache, tmp_path / "c", spec)
    assert _build(cache, tmp_path / "c", spec)
    (plugin / "tiny_helper.py").write_text(HELPER.replace("SCALE = 1.0", "SCALE = 0.9"))
    assert not _build(cache, tmp_path / "d", spec)
    assert not _build(cache, tmp_path / "e", replace(spec, data_version=lambda: "data-2"))
    assert _build(cache, tmp_path / "f", replace(spec, data_version=lambda: "data-2"))


def test_a_build_whose_sources_changed_while_it_ran_is_not_kept(
    plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = BuildCache(tmp_path / "cache")
    spec = _spec()
    keys = iter(["before", "after"])
    monkeypatch.setattr(BuildCache, "key", lambda *_, **__: next(keys))
    assert not _build(cache, tmp_path / "repo", spec)
    assert not (tmp_path / "cache").exists()


def test_a_cache_that_cannot_be_written_keeps_the_build(plugin: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache folder would be")
    assert not _build(BuildCache(blocked / "cache"), tmp_path / "repo", _spec())
