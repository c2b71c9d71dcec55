"""Debian's fortune cookie files as a text-classification data set (entries split by ``%`` lines)."""

from __future__ import annotations

import re
from pathlib import Path

FORTUNES_DIR = Path("/usr/share/games/fortunes")
# Distinct English topics with enough entries each; chosen once by a probe of MiniLM embeddings.
CATEGORIES = (
    "computers",
    "politics",
    "law",
    "food",
    "startrek",
    "love",
    "riddles",
    "literature",
    "sports",
    "pets",
)
MIN_CHARS = 20


def read_category(name: str, directory: Path = FORTUNES_DIR) -> list[str]:
    """The entries of one fortune file, whitespace-normalised, dropping very short ones."""
    path = directory / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; install Debian's `fortunes` package (make setup)")
    text = path.read_text(encoding="utf-8", errors="replace")
    entries = [re.sub(r"\s+", " ", e).strip() for e in re.split(r"^%\s*$", text, flags=re.MULTILINE)]
    return [e for e in entries if len(e) >= MIN_CHARS]


def load_fortunes(
    categories: tuple[str, ...] = CATEGORIES, directory: Path = FORTUNES_DIR
) -> tuple[list[str], list[int]]:
    """Texts and category indices: every entry of each category, in file order."""
    texts: list[str] = []
    labels: list[int] = []
    for index, name in enumerate(categories):
        entries = read_category(name, directory)
        texts.extend(entries)
        labels.extend([index] * len(entries))
    return texts, labels


def fortunes_digest(categories: tuple[str, ...] = CATEGORIES, directory: Path = FORTUNES_DIR) -> str:
    """SHA-256 over the category files: another ``fortunes`` release changes the data set."""
    import hashlib

    digest = hashlib.sha256()
    for name in categories:
        path = directory / name
        digest.update(name.encode() + b"\0" + (path.read_bytes() if path.exists() else b"missing") + b"\0")
    return digest.hexdigest()
