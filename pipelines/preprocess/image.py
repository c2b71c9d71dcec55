"""Image payloads (PNG/JPEG bytes) to model inputs. Pure functions, used in Triton and in training."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from pipelines.preprocess.errors import PayloadError

MAX_PIXELS = 64 * 1024 * 1024
DIGIT_SIZE = 28
DIGIT_MEAN = 0.1307
DIGIT_STD = 0.3081


def decode_image(payload: bytes, mode: str) -> Image.Image:
    """Decode PNG or JPEG bytes fully, converted to ``mode`` ("L" or "RGB").

    Raises:
        PayloadError: for bytes that are not a complete PNG/JPEG image.
    """
    try:
        with Image.open(io.BytesIO(payload)) as probe:
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
    except (OSError, SyntaxError, ValueError) as exc:
        raise PayloadError(f"cannot decode image: {exc}") from None


def digit_tensor(image: Image.Image) -> npt.NDArray[np.float32]:
    """A grayscale image as the digits model's normalised ``[1, 28, 28]`` input."""
    if image.size != (DIGIT_SIZE, DIGIT_SIZE):
        image = image.resize((DIGIT_SIZE, DIGIT_SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return ((pixels - DIGIT_MEAN) / DIGIT_STD)[None, :, :]


def decode_digit(payload: bytes) -> npt.NDArray[np.float32]:
    """PNG/JPEG bytes of a digit (white on black) to the digits model's input."""
    return digit_tensor(decode_image(payload, "L"))


def encode_png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """A grayscale or RGB uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGENET_SIZE = 224
IMAGENET_RESIZE = 256


def imagenet_tensor(image: Image.Image) -> npt.NDArray[np.float32]:
    """An RGB image resized (shorter side 256), centre-cropped to 224, scaled as EfficientNet-Lite expects."""
    width, height = image.size
    scale = IMAGENET_RESIZE / min(width, height)
    image = image.resize(
        (max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.BILINEAR
    )
    width, height = image.size
    left, top = (width - IMAGENET_SIZE) // 2, (height - IMAGENET_SIZE) // 2
    image = image.crop((left, top, left + IMAGENET_SIZE, top + IMAGENET_SIZE))
    pixels = np.asarray(image, dtype=np.float32)
    # EfficientNet-Lite was trained on (x - 127) / 128, not on ImageNet mean/std.
    return ((pixels - 127.0) / 128.0).transpose(2, 0, 1).copy()


def decode_imagenet(payload: bytes) -> npt.NDArray[np.float32]:
    """PNG/JPEG bytes of a photo to EfficientNet-Lite0's ``[3, 224, 224]`` input."""
    return imagenet_tensor(decode_image(payload, "RGB"))
