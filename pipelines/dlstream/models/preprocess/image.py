"""Image payloads (PNG/JPEG bytes) decoded and encoded. Pure functions; resizing and normalisation are
:mod:`dlstream.models.preprocess.declared`."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from dlstream.models.preprocess.errors import PayloadError

MAX_PIXELS = 64 * 1024 * 1024


def decode_image(payload: bytes, mode: str) -> Image.Image:
    """Decode PNG or JPEG bytes fully, converted to ``mode`` ("L" or "RGB").

    Raises:
        PayloadError: for bytes that are not a complete PNG/JPEG image.
    """
    try:
        # Only PNG and JPEG are probed: every other format plugin is more parser code on untrusted bytes.
        with Image.open(io.BytesIO(payload), formats=("PNG", "JPEG")) as probe:
            if probe.format not in ("PNG", "JPEG"):
                raise PayloadError(f"image format {probe.format} is not PNG or JPEG")
            width, height = probe.size
            if width * height > MAX_PIXELS:
                raise PayloadError(f"image of {width}x{height} pixels is too large")
            probe.load()  # decodes every byte: truncated data fails here, not later
            return probe.convert(mode)
    except PayloadError:
        raise
    except UnidentifiedImageError:
        raise PayloadError("cannot decode image: the data is not a recognisable PNG or JPEG image") from None
    except Image.DecompressionBombError as exc:
        raise PayloadError(f"image is too large: {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PayloadError(f"cannot decode image: {exc}") from None


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """A grayscale or RGB uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    # zlib level 1: a third of the default level's time for a 512x512 photo and 10 % more bytes.
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
