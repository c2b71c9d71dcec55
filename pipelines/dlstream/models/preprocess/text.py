"""Text payloads (UTF-8 bytes) to model inputs."""

from __future__ import annotations

from dlstream.models.preprocess.errors import PayloadError


def decode_text(payload: bytes) -> str:
    """Strict UTF-8 decoding; empty or whitespace-only text is refused.

    Raises:
        PayloadError: naming the first invalid byte, or saying the text is empty.
    """
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"text is not valid UTF-8 at byte {exc.start}") from None
    if not text.strip():
        raise PayloadError("text is empty")
    return text
