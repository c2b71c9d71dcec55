"""Which files a ``publish`` sends and with which content type: pure path logic, no Kafka."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dlstream.domain.contract import Modality
from dlstream.domain.errors import ClientError

CONTENT_TYPE_BY_SUFFIX: dict[Modality, dict[str, str]] = {
    Modality.IMAGE: {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"},
    Modality.AUDIO: {".wav": "audio/wav", ".wave": "audio/wav"},
    Modality.TEXT: {".txt": "text/plain; charset=utf-8", ".text": "text/plain; charset=utf-8"},
}


def expand_paths(paths: Iterable[Path], modality: Modality) -> list[Path]:
    """The files to send: each file given, and the files of each folder (recursively) with a known suffix.

    Folders are walked in sorted order so that a publish is repeatable. A file given by name is sent even if
    its suffix is unknown (the content type then comes from the modality's default).

    Raises:
        ClientError: a path does not exist, or nothing is left to send.
    """
    suffixes = CONTENT_TYPE_BY_SUFFIX[modality]
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix.lower() in suffixes)
        elif path.is_file():
            files.append(path)
        else:
            raise ClientError(f"{path} does not exist")
    if not files:
        raise ClientError(f"no {modality.value} files ({', '.join(sorted(suffixes))}) in the given paths")
    return files


def content_type_for(path: Path, modality: Modality) -> str:
    """The content type of a file by its suffix; the modality's first type when the suffix is unknown."""
    suffixes = CONTENT_TYPE_BY_SUFFIX[modality]
    return suffixes.get(path.suffix.lower(), next(iter(suffixes.values())))
