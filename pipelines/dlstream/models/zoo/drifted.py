"""Drifted traffic for each modality, made from the held-out samples: what the drift tests and the demo send.

- image: digits inverted (black on white), rotated by a quarter turn, or buried in noise;
- audio: held-out (unseen) voices with loud white noise;
- text: fortunes of categories the model was never trained on.
"""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from scipy.io import wavfile

from dlstream.models.preprocess.audio import SAMPLE_RATE, decode_wav
from dlstream.models.preprocess.image import decode_image, encode_png
from dlstream.models.zoo.data.fortunes import CATEGORIES, read_category

# Fortune files of other topics than the model's (Debian's `fortunes` package).
UNSEEN_CATEGORIES = ("zippy", "tao", "debian", "medicine", "definitions", "kids")


def drifted_digits(payloads: list[bytes], kind: str = "inverted", seed: int = 0) -> list[bytes]:
    """Digit PNGs ``inverted``, ``rotated`` (90 degrees) or ``noisy`` (Gaussian noise, sigma 90/255)."""
    rng = np.random.default_rng(seed)
    out = []
    for payload in payloads:
        pixels = np.asarray(decode_image(payload, "L"), dtype=np.uint8)
        changed: npt.NDArray[np.uint8]
        if kind == "inverted":
            changed = (255 - pixels).astype(np.uint8)
        elif kind == "rotated":
            changed = np.rot90(pixels).copy()
        elif kind == "noisy":
            noise = rng.normal(0.0, 90.0, pixels.shape)
            changed = np.clip(pixels.astype(np.float64) + noise, 0, 255).astype(np.uint8)
        else:
            raise ValueError(f"unknown image drift {kind!r}")
        out.append(encode_png(changed))
    return out


def noisy_speech(payloads: list[bytes], *, snr_db: float = 0.0, seed: int = 0) -> list[bytes]:
    """WAV clips with white noise added at ``snr_db`` (relative to each clip's own power), 16 kHz 16-bit."""
    rng = np.random.default_rng(seed)
    out = []
    for payload in payloads:
        samples = decode_wav(payload).astype(np.float64)
        power = float(np.mean(samples**2)) or 1e-8
        noise = rng.normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), samples.shape)
        mixed = np.clip(samples + noise, -1.0, 1.0)
        buffer = io.BytesIO()
        wavfile.write(buffer, SAMPLE_RATE, (mixed * 32767).astype(np.int16))
        out.append(buffer.getvalue())
    return out


def unseen_topic_texts(count: int, seed: int = 0) -> list[bytes]:
    """``count`` fortunes from categories the text model does not know, shuffled (cycled if too few)."""
    assert not set(UNSEEN_CATEGORIES) & set(CATEGORIES)
    texts = [t for name in UNSEEN_CATEGORIES for t in read_category(name)]
    order = np.random.default_rng(seed).permutation(len(texts))
    return [texts[order[i % len(texts)]].encode() for i in range(count)]
