"""The synthesised spoken digits: their plan, and kept and read back as they were made."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from dlstream.models.zoo.data.spoken_digits import (
    ACCENTS,
    WORDS,
    SpokenDigits,
    _cache_file,
    _read_clips,
    make_spoken_digits,
)

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, SpokenDigits]]:
    """The held-out clips of seed 0, synthesised once into a cache of their own."""
    root = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DLSTREAM_STACK__CACHE_DIR", str(root))
        yield root, make_spoken_digits(0, test_only=True)


@pytest.mark.slow(reason="synthesises the held-out clips again to compare them")
def test_a_kept_data_set_reads_back_equal_and_a_cut_one_is_not_read(
    held_out: tuple[Path, SpokenDigits],
) -> None:
    root, made = held_out
    kept = list((root / "data" / "spoken_digits").iterdir())
    assert len(kept) == 1
    assert make_spoken_digits(0, test_only=True) == made

    parameters = (0.2, 4, 8, 2, True)
    assert kept[0] == _cache_file(0, parameters)
    assert _cache_file(1, parameters) != kept[0]
    assert _cache_file(0, (0.2, 4, 8, 2, False)) != kept[0]
    kept[0].write_bytes(kept[0].read_bytes()[:-100])
    assert _read_clips(kept[0]) is None


def test_held_out_voices_say_every_word_in_every_accent_twice(held_out: tuple[Path, SpokenDigits]) -> None:
    _, data = held_out
    takes = Counter((c.variant, c.label, c.accent) for c in data.test)
    assert set(takes.values()) == {2}
    assert len(takes) == len(data.held_out_variants) * len(WORDS) * len(ACCENTS)
    assert {c.variant for c in data.test} == set(data.held_out_variants)
    # Each take has its own speed and pitch.
    assert len({(c.variant, c.label, c.accent, c.speed, c.pitch) for c in data.test}) > 0.95 * len(data.test)
