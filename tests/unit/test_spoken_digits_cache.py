"""The synthesised spoken digits are kept and read back as they were made."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.data.spoken_digits import _cache_file, _read_clips, make_spoken_digits


def test_a_kept_data_set_reads_back_equal_and_a_cut_one_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DLSTREAM_STACK__CACHE_DIR", str(tmp_path))
    made = make_spoken_digits(0, test_only=True)
    kept = list((tmp_path / "data" / "spoken_digits").iterdir())
    assert len(kept) == 1
    assert make_spoken_digits(0, test_only=True) == made

    parameters = (0.2, 4, 6, True)
    assert kept[0] == _cache_file(0, parameters)
    assert _cache_file(1, parameters) != kept[0]
    assert _cache_file(0, (0.2, 4, 6, False)) != kept[0]
    kept[0].write_bytes(kept[0].read_bytes()[:-100])
    assert _read_clips(kept[0]) is None
