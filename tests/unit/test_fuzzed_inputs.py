"""Property-based tests: arbitrary headers and bytes make the contract's parsers and every payload decoder
raise only the project's own contract and payload errors (the same targets `dlstream fuzz` runs)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlstream.tools.fuzz.runner import fuzz, mutate
from dlstream.tools.fuzz.targets import Target, read_record, targets, write_record

pytestmark = [
    pytest.mark.unit,
    pytest.mark.slow(reason="hypothesis runs 150 examples per target, decoders included"),
]

TARGETS = targets()
HEADER_NAMES = [
    "ce_specversion",
    "ce_id",
    "ce_source",
    "ce_type",
    "ce_time",
    "content-type",
    "ce_model",
    "dlq-reason",
    "dlq-source-partition",
]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(target: Target, data: bytes) -> None:
    with contextlib.suppress(*target.expected):
        target.run(data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_raise_only_the_targets_own_errors(name: str, data: bytes) -> None:
    run(TARGETS[name], data)


@pytest.mark.parametrize("name", sorted(TARGETS))
@FUZZ
@given(choice=st.data())
def test_valid_inputs_with_bytes_changed_raise_only_the_targets_own_errors(
    name: str, choice: st.DataObject
) -> None:
    target = TARGETS[name]
    seed = choice.draw(st.sampled_from(target.seeds()))
    at = choice.draw(st.integers(0, len(seed)))
    cut = choice.draw(st.integers(0, 64))
    run(target, seed[:at] + choice.draw(st.binary(max_size=32)) + seed[at + cut :])


@pytest.mark.parametrize("name", [name for name in sorted(TARGETS) if name.startswith("request-")])
@FUZZ
@given(
    headers=st.lists(
        st.tuples(st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=12)), st.binary(max_size=48)),
        max_size=12,
    ),
    value=st.binary(max_size=256),
)
def test_arbitrary_headers_raise_only_contract_errors(
    name: str, headers: list[tuple[str, bytes]], value: bytes
) -> None:
    run(TARGETS[name], write_record([(n.replace("=", "").replace("\n", ""), v) for n, v in headers], value))


def test_records_round_trip_through_the_fuzz_layout() -> None:
    headers = [("ce_id", b"a"), ("content-type", b"image/png")]
    assert read_record(write_record(headers, b"\x89PNG")) == (headers, b"\x89PNG")


def test_a_wav_header_with_zero_block_size_is_a_payload_error() -> None:
    """Found by `dlstream fuzz`: the WAV reader divided by zero instead of refusing the file."""
    wav = (
        b"RIFF\xa4\x0c\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x08"
        b"\x80>\x00\x00\x00}\x00\x00\x02\x00\x10\x00data\x80\x0c\x00\x00\x00\x005\x06+\x0c"
    )
    from dlstream.models.preprocess.errors import PayloadError

    with pytest.raises(PayloadError, match="cannot decode WAV"):
        TARGETS["audio"].run(wav)


def test_an_image_that_declares_billions_of_pixels_is_a_payload_error() -> None:
    """Found by `dlstream fuzz` (ten minutes on `image`): 22 bytes that another format plugin read as an image
    of 5e17 pixels, and Pillow's decompression-bomb error escaped the decoder."""
    from dlstream.models.preprocess.errors import PayloadError

    with pytest.raises(PayloadError):
        TARGETS["image"].run(bytes.fromhex("89504e47000000014945 0d0a1a0a0000 000000014945".replace(" ", "")))


def test_the_fuzzer_runs_for_its_time_and_writes_each_finding(tmp_path: Path) -> None:
    def fragile(data: bytes) -> object:
        if b"\xff" in data:
            raise KeyError("not one of ours")
        raise ValueError("ours")

    target = Target("fragile", "a parser with a bug", fragile, (ValueError,), lambda: [b"abc"])
    report = fuzz(target, seconds=0.5, out_dir=tmp_path)
    assert report.executions > 100
    assert [f["where"].split(" at ")[0] for f in report.findings] == ["KeyError"]
    assert Path(report.findings[0]["input"]).read_bytes().count(b"\xff") >= 1
    assert (tmp_path / Path(report.findings[0]["input"]).with_suffix(".txt").name).exists()


def test_mutations_stay_within_the_input_limit() -> None:
    import random

    rng = random.Random(0)
    data = b"x" * 10
    for _ in range(1000):
        data = mutate(data, [b"seed"], rng)
    assert len(data) <= 64 * 1024
