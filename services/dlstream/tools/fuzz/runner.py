"""``dlstream fuzz``: a mutation fuzzer that runs each target for a set time and reports what it found.

Each execution takes an input from the corpus (the target's valid seeds, plus every input that raised an
error not seen before, so the search goes deeper into the parser), mutates it a few times (bit flips, random
or boundary bytes, deletions, duplications, splices with another corpus input, truncation) and runs the
target. An exception other than the target's own errors is a *finding*: its input and traceback are written
to the output folder, one per distinct place in the code. So is an input that takes longer than
``slow_s``.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlstream.tools.fuzz.targets import Target

INTERESTING = (0x00, 0x01, 0x0A, 0x20, 0x3D, 0x7F, 0x80, 0xFE, 0xFF)
MAX_INPUT = 64 * 1024
MAX_CORPUS = 2000


def mutate(data: bytes, corpus: list[bytes], rng: random.Random) -> bytes:
    """One to four random mutations of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.randrange(8)
        at = rng.randrange(len(out) + 1)
        if choice == 0 and out:
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif choice == 1 and out:
            out[rng.randrange(len(out))] = rng.choice(INTERESTING)
        elif choice == 2:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif choice == 3 and out:
            end = min(len(out), at + rng.randint(1, 64))
            del out[at:end]
        elif choice == 4 and out:
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 64)]
        elif choice == 5:
            other = rng.choice(corpus)
            start = rng.randrange(len(other) + 1)
            out[at:] = other[start:]
        elif choice == 6:
            del out[at:]
        else:
            out[at:at] = rng.choice((b"\n\n", b"=", b"ce_", b"\xff\xfe", b"{}", b"RIFF", b"\x89PNG"))
    return bytes(out[:MAX_INPUT])


@dataclass
class FuzzReport:
    """What one target's run did."""

    target: str
    seconds: float = 0.0
    executions: int = 0
    expected_errors: int = 0
    accepted: int = 0
    corpus: int = 0
    findings: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the execution rate."""
        return {
            "target": self.target,
            "seconds": round(self.seconds, 1),
            "executions": self.executions,
            "executions_per_s": round(self.executions / self.seconds, 1) if self.seconds else 0.0,
            "accepted": self.accepted,
            "expected_errors": self.expected_errors,
            "corpus": self.corpus,
            "findings": self.findings,
        }


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    return f"{type(exc).__name__} at {last.filename}:{last.lineno}" if last else type(exc).__name__


def _timed(target: Target, data: bytes) -> float:
    began = time.monotonic()
    with contextlib.suppress(Exception):  # only the time matters here
        target.run(data)
    return time.monotonic() - began


def fuzz(target: Target, *, seconds: float, out_dir: Path, seed: int = 0, slow_s: float = 1.0) -> FuzzReport:
    """Fuzz ``target`` for ``seconds``; findings go to ``out_dir``."""
    rng = random.Random(seed)
    corpus = list(target.seeds())
    report = FuzzReport(target.name)
    seen: set[str] = set()
    errors: set[str] = set()
    started = time.monotonic()
    deadline = started + seconds
    while time.monotonic() < deadline:
        data = mutate(rng.choice(corpus), corpus, rng)
        began = time.monotonic()
        where = None
        try:
            target.run(data)
            report.accepted += 1
        except target.expected as exc:
            report.expected_errors += 1
            message = str(exc).split(":")[0][:80]
            if message not in errors and len(corpus) < MAX_CORPUS:
                errors.add(message)
                corpus.append(data)
        except Exception as exc:  # noqa: BLE001 - anything else is what the fuzzer looks for
            where = _where(exc)
            detail = "".join(traceback.format_exception(exc))
        took = time.monotonic() - began
        if where is None and took > slow_s:
            took = min(took, _timed(target, data))  # once more: a busy machine may have paused this one
            if took > slow_s:
                where, detail = f"slow ({took:.1f} s)", f"took {took:.2f} s"
        report.executions += 1
        if where is not None and where not in seen:
            seen.add(where)
            digest = hashlib.sha256(data).hexdigest()[:12]
            out_dir.mkdir(parents=True, exist_ok=True)
            path = out_dir / f"{target.name}-{digest}.bin"
            path.write_bytes(data)
            path.with_suffix(".txt").write_text(detail)
            report.findings.append({"where": where, "input": str(path), "bytes": len(data)})
    report.seconds = time.monotonic() - started
    report.corpus = len(corpus)
    return report
