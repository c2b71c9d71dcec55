"""Preprocessing declared in a model card, turned into code: payload bytes to one model input, and decoded
items to a batch tensor. The same functions serve inside Triton, in builds and in retraining."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from pipelines.preprocess.audio import centre_on_speech, decode_wav, log_mel
from pipelines.preprocess.image import decode_image
from pipelines.preprocess.text import decode_text
from services.common.card import (
    AudioPreprocessing,
    ImagePreprocessing,
    Preprocessing,
    TextPreprocessing,
)

Decoder = Callable[[bytes], Any]
Batcher = Callable[[list[Any]], torch.Tensor]


def image_tensor(image: Image.Image, spec: ImagePreprocessing) -> npt.NDArray[np.float32]:
    """A decoded image resized, scaled and normalised as ``spec`` declares."""
    size = spec.size
    if spec.resize == "stretch":
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
    else:
        width, height = image.size
        scale = (spec.resize_to or size) / min(width, height)
        image = image.resize(
            (max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BILINEAR
        )
        width, height = image.size
        left, top = (width - size) // 2, (height - size) // 2
        image = image.crop((left, top, left + size, top + size))
    pixels = np.asarray(image, dtype=np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    normalised = (pixels * np.float32(spec.scale) - mean) / std
    if spec.layout == "CHW":
        normalised = normalised.transpose(2, 0, 1)
    return np.ascontiguousarray(normalised, dtype=np.float32)


def audio_tensor(payload: bytes, spec: AudioPreprocessing) -> npt.NDArray[np.float32]:
    """WAV bytes to the log-mel input ``spec`` declares."""
    samples = decode_wav(payload, spec.sample_rate)
    clip = centre_on_speech(samples, round(spec.sample_rate * spec.duration_s), spec.hop)
    return log_mel(clip, n_fft=spec.n_fft, hop=spec.hop, n_mels=spec.n_mels, sample_rate=spec.sample_rate)


def _stack(items: list[Any]) -> torch.Tensor:
    return torch.from_numpy(np.stack(items))


@dataclass(frozen=True)
class Preprocessor:
    """``decode`` one payload (raises PayloadError), ``batch`` decoded items into the model's input."""

    decode: Decoder
    batch: Batcher

    def inputs(self, payloads: list[bytes]) -> torch.Tensor:
        """Decode every payload and batch them."""
        return self.batch([self.decode(p) for p in payloads])


def preprocessor(spec: Preprocessing, device: str = "cpu") -> Preprocessor:
    """The code for a declared preprocessing."""
    if isinstance(spec, ImagePreprocessing):
        image = spec
        return Preprocessor(lambda p: image_tensor(decode_image(p, image.colour), image), _stack)
    if isinstance(spec, AudioPreprocessing):
        audio = spec
        return Preprocessor(lambda p: audio_tensor(p, audio), _stack)
    if isinstance(spec, TextPreprocessing):
        from pipelines.models.text import encode, load_encoder

        encoder = load_encoder(device, max_tokens=spec.max_tokens)
        return Preprocessor(decode_text, lambda texts: torch.from_numpy(encode(encoder, texts)))
    raise TypeError(f"no preprocessing for {type(spec).__name__}")
