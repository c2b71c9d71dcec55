"""Spoken digits "zero".."nine" synthesised with Debian's espeak-ng over accents, voice variants, speeds and
pitches. Whole voice variants are held out, so the test split only has voices the model never heard."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = (
    "en",
    "en-us",
    "en-us-nyc",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
)
# Whispering variants carry no voicing at all; they are a different task, not another voice.
EXCLUDED_VARIANTS = frozenset({"whisper", "whisperf"})


@dataclass(frozen=True)
class Clip:
    """One synthesised utterance as WAV bytes, with how it was made."""

    wav: bytes
    label: int
    accent: str
    variant: str
    speed: int
    pitch: int


def espeak() -> str:
    """Path of espeak-ng, or a clear error."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise FileNotFoundError("espeak-ng is not installed; run `make setup` (Debian package espeak-ng)")
    return binary


def voice_variants() -> list[str]:
    """The voice variants espeak-ng ships, minus the whispering ones, sorted."""
    listing = subprocess.run(
        [espeak(), "--voices=variant"], capture_output=True, text=True, check=True
    ).stdout
    names = {
        line.split()[4].removeprefix("!v/") for line in listing.splitlines()[1:] if len(line.split()) > 4
    }
    return sorted(names - EXCLUDED_VARIANTS)


def espeak_version() -> str:
    """espeak-ng's version line: another release speaks the digits differently."""
    return subprocess.run([espeak(), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def synthesise(word: str, accent: str, variant: str, speed: int, pitch: int, workdir: Path) -> bytes:
    """One utterance as a 22,050 Hz mono 16-bit WAV."""
    out = workdir / f"{word}-{accent}-{variant}-{speed}-{pitch}.wav"
    cmd = [espeak(), "-v", f"{accent}+{variant}", "-s", str(speed), "-p", str(pitch), "-w", str(out), word]
    subprocess.run(cmd, capture_output=True, check=True)
    data = out.read_bytes()
    out.unlink()
    return data


@dataclass(frozen=True)
class SpokenDigits:
    """Training and held-out clips, and which variants were held out."""

    train: list[Clip]
    test: list[Clip]
    held_out_variants: list[str]


def data_cache_dir() -> Path:
    """Where synthesised data sets are kept: ``data/`` under ``DLSTREAM_STACK__CACHE_DIR``
    (``~/.cache/dlstream``)."""
    from dlstream.config.settings import default_cache_dir

    root = os.environ.get("DLSTREAM_STACK__CACHE_DIR")
    return (Path(root) if root else default_cache_dir()) / "data"


def _cache_file(seed: int, parameters: tuple[object, ...]) -> Path:
    """The data set's file: its digest covers espeak-ng's version and voices, this module and the plan."""
    digest = hashlib.sha256()
    plan = repr((seed, *parameters))
    for part in (espeak_version(), ",".join(voice_variants()), Path(__file__).read_text(), plan):
        digest.update(part.encode() + b"\0")
    return data_cache_dir() / "spoken_digits" / f"{digest.hexdigest()[:32]}.bin"


def _write_clips(path: Path, data: SpokenDigits) -> None:
    """One JSON line (the clips' metadata and sizes, the held-out variants), then the WAV bytes."""
    clips = [("train", c) for c in data.train] + [("test", c) for c in data.test]
    header = {
        "held_out_variants": data.held_out_variants,
        "clips": [[split, c.label, c.accent, c.variant, c.speed, c.pitch, len(c.wav)] for split, c in clips],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    with staging.open("wb") as out:
        out.write(json.dumps(header).encode() + b"\n")
        for _, clip in clips:
            out.write(clip.wav)
    staging.replace(path)


def _read_clips(path: Path) -> SpokenDigits | None:
    """The data set kept in ``path``; None when it is missing or cut short."""
    try:
        with path.open("rb") as source:
            header = json.loads(source.readline())
            body = source.read()
    except (OSError, ValueError):
        return None
    if sum(row[-1] for row in header["clips"]) != len(body):
        return None
    clips: dict[str, list[Clip]] = {"train": [], "test": []}
    offset = 0
    for split, label, accent, variant, speed, pitch, size in header["clips"]:
        clips[split].append(Clip(body[offset : offset + size], label, accent, variant, speed, pitch))
        offset += size
    return SpokenDigits(clips["train"], clips["test"], header["held_out_variants"])


def make_spoken_digits(
    seed: int,
    *,
    held_out_fraction: float = 0.2,
    train_accents: int = 4,
    test_accents: int = 8,
    test_takes: int = 2,
    test_only: bool = False,
) -> SpokenDigits:
    """Synthesise the data set: for every (variant, word), a few random accents at random speed and pitch.

    Held-out voices get every accent, ``test_takes`` times each at its own speed and pitch (3,200 clips):
    enough for the drift monitor's windows to be measured on undrifted traffic apart from the reference and
    calibration samples of a build, from a pool large enough that re-cutting it does not set the rate
    measured (with 1,200 clips it did: see the README's drift benchmark).

    The plan depends only on ``seed``: ``test_only=True`` synthesises exactly the held-out clips of a build.
    A data set once synthesised is kept under :func:`data_cache_dir` and read back, until espeak-ng, its
    voices or this module change.
    """
    parameters = (held_out_fraction, train_accents, test_accents, test_takes, test_only)
    cached = _cache_file(seed, parameters)
    found = _read_clips(cached)
    if found is not None:
        return found
    data = _synthesise_all(*plan_takes(seed, *parameters))
    with contextlib.suppress(OSError):  # a read-only home: synthesised again next time
        _write_clips(cached, data)
    return data


Take = tuple[str, int, str, str, int, int]
"""One clip to synthesise: ``(split, label, accent, variant, speed, pitch)``."""


def plan_takes(
    seed: int,
    held_out_fraction: float,
    train_accents: int,
    test_accents: int,
    test_takes: int,
    test_only: bool,
) -> tuple[list[Take], list[str]]:
    """The clips a data set holds and its held-out voice variants; the plan depends only on the arguments."""
    rng = np.random.default_rng(seed)
    variants = voice_variants()
    shuffled = list(rng.permutation(variants))
    cut = max(1, round(len(variants) * held_out_fraction))
    held_out, seen = sorted(shuffled[:cut]), sorted(shuffled[cut:])
    jobs: list[Take] = []
    plan = (("train", seen, train_accents, 1), ("test", held_out, test_accents, test_takes))
    for split, names, per, takes in plan:
        for variant in names:
            for label in range(len(WORDS)):
                for accent in rng.choice(ACCENTS, size=per, replace=False):
                    for _ in range(takes):
                        speed, pitch = int(rng.integers(120, 261)), int(rng.integers(20, 81))
                        jobs.append((split, label, str(accent), variant, speed, pitch))
    if test_only:
        jobs = [job for job in jobs if job[0] == "test"]
    return jobs, held_out


def _synthesise_all(jobs: list[Take], held_out: list[str]) -> SpokenDigits:
    clips: dict[str, list[Clip]] = {"train": [], "test": []}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=4) as pool:
        futures = [
            pool.submit(synthesise, WORDS[label], accent, variant, speed, pitch, Path(tmp))
            for _, label, accent, variant, speed, pitch in jobs
        ]
        for job, future in tqdm(
            zip(jobs, futures, strict=True), total=len(jobs), desc="espeak-ng", leave=False
        ):
            split, label, accent, variant, speed, pitch = job
            clips[split].append(Clip(future.result(), label, accent, variant, speed, pitch))
    return SpokenDigits(clips["train"], clips["test"], held_out)
