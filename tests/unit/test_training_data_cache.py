"""The training-data cache: a second load of the same inputs reads the kept tensors, a changed data version
prepares them again, and an unreadable entry or an unwritable cache only costs the preparation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dlstream.models.data_cache import TrainingDataCache
from dlstream.models.spec import ModelSpec, Tensors
from tests.plugins import shapes

pytestmark = pytest.mark.unit

PREPARED: list[int] = []


def _data(seed: int) -> Tensors:
    PREPARED.append(seed)
    return torch.full((4, 1, 2, 2), float(seed)), torch.arange(4)


def _spec(version: str) -> ModelSpec:
    assert shapes.SPEC.training is not None
    training = replace(shapes.SPEC.training, data=_data)
    return replace(shapes.SPEC, name="tiny", training=training, data_version=lambda: version)


def test_the_same_inputs_are_read_back_and_a_new_data_version_prepares_them_again(tmp_path: Path) -> None:
    PREPARED.clear()
    cache = TrainingDataCache(tmp_path)
    first = cache.load(_spec("1"), seed=3)
    again = cache.load(_spec("1"), seed=3)
    assert PREPARED == [3]
    assert torch.equal(first[0], again[0])
    assert torch.equal(first[1], again[1])
    cache.load(_spec("2"), seed=3)
    cache.load(_spec("2"), seed=4)
    assert PREPARED == [3, 3, 4]
    assert len(list((tmp_path / "tiny").glob("*.pt"))) == 2  # the oldest entry is removed


def test_a_cut_entry_or_a_read_only_cache_prepares_the_data(tmp_path: Path) -> None:
    PREPARED.clear()
    cache = TrainingDataCache(tmp_path)
    cache.load(_spec("1"), seed=0)
    [entry] = (tmp_path / "tiny").glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:20])
    inputs, _ = cache.load(_spec("1"), seed=0)
    assert PREPARED == [0, 0]
    assert inputs.shape == (4, 1, 2, 2)
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    inputs, _ = TrainingDataCache(blocked).load(_spec("1"), seed=0)
    assert PREPARED == [0, 0, 0]
    assert inputs.shape == (4, 1, 2, 2)
