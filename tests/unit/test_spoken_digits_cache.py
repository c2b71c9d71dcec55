"""The synthesised spoken digits: their plan, and kept and read back as they were made."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from dlstream.models.zoo.data.spoken_digits import (
    ACCENTS,
    WORDS,
    SpokenDigits,
    _cache_file,
    _read_clips,
    make_spoken_digits,
    plan_takes,
)

pytestmark = pytest.mark.unit


# A small data set (two held-out voices, one accent, one take: 20 clips) shows the cache as well as the
# 3,200 held-out clips of a build would, which take about 20 s to synthesise.
SMALL_PARAMETERS = (0.02, 4, 1, 1, True)
BUILD_PARAMETERS = (0.2, 4, 8, 2, True)


def small() -> SpokenDigits:
    return make_spoken_digits(0, held_out_fraction=0.02, test_accents=1, test_takes=1, test_only=True)


@pytest.fixture
def kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, SpokenDigits]:
    """A small held-out set of seed 0, synthesised into a cache of its own."""
    monkeypatch.setenv("DLSTREAM_STACK__CACHE_DIR", str(tmp_path))
    return tmp_path, small()


def test_a_kept_data_set_reads_back_equal_and_a_cut_one_is_not_read(kept: tuple[Path, SpokenDigits]) -> None:
    root, made = kept
    assert len(made.test) == 20
    kept_files = list((root / "data" / "spoken_digits").iterdir())
    assert len(kept_files) == 1
    assert small() == made

    assert kept_files[0] == _cache_file(0, SMALL_PARAMETERS)
    assert _cache_file(1, SMALL_PARAMETERS) != kept_files[0]
    assert _cache_file(0, (0.02, 4, 1, 1, False)) != kept_files[0]
    kept_files[0].write_bytes(kept_files[0].read_bytes()[:-100])
    assert _read_clips(kept_files[0]) is None


def test_held_out_voices_say_every_word_in_every_accent_twice() -> None:
    takes, held_out = plan_takes(0, *BUILD_PARAMETERS)
    assert {split for split, *_ in takes} == {"test"}
    per_voice_word_accent = Counter((variant, label, accent) for _, label, accent, variant, _, _ in takes)
    assert set(per_voice_word_accent.values()) == {2}
    assert len(per_voice_word_accent) == len(held_out) * len(WORDS) * len(ACCENTS)
    assert {variant for *_, variant, _, _ in takes} == set(held_out)
    # Each take has its own speed and pitch.
    assert len(set(takes)) > 0.95 * len(takes)
    # The held-out voices are the same whether the training clips are planned too.
    assert plan_takes(0, *BUILD_PARAMETERS[:-1], False)[1] == held_out
