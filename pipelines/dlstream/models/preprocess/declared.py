"""Preprocessing declared in a model card, turned into code: payload bytes to one model input, and decoded
items to a batch tensor. The same functions serve inside Triton, in builds and in retraining."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from dlstream.domain.card import (
    AudioPreprocessing,
    ImagePreprocessing,
    Preprocessing,
    TextPreprocessing,
    TokensPreprocessing,
)
from dlstream.models.preprocess.audio import centre_on_speech, decode_wav, log_mel
from dlstream.models.preprocess.image import decode_image
from dlstream.models.preprocess.text import decode_text

Decoder = Callable[[bytes], Any]
Batcher = Callable[[list[Any]], Any]  # a tensor, or a tuple of tensors for models of several inputs


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
    """WAV bytes to the input ``spec`` declares (log-mel spectrogram or waveform)."""
    samples = decode_wav(payload, spec.sample_rate)
    if spec.align == "centre":
        clip = centre_on_speech(samples, spec.samples, spec.hop)
    else:
        clip = np.pad(samples[: spec.samples], (0, max(0, spec.samples - len(samples))))
    if spec.features == "waveform":
        return np.ascontiguousarray(clip, dtype=np.float32)
    return log_mel(clip, n_fft=spec.n_fft, hop=spec.hop, n_mels=spec.n_mels, sample_rate=spec.sample_rate)


def token_preprocessor(spec: TokensPreprocessing, root: Path) -> Preprocessor:
    """Text to the padded token tensors ``spec`` names, with the tokenizer file under ``root``."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(root / spec.tokenizer))
    tokenizer.enable_truncation(spec.max_length)
    tokenizer.enable_padding(length=spec.max_length)

    def decode(payload: bytes) -> dict[str, npt.NDArray[np.int64]]:
        encoding = tokenizer.encode(decode_text(payload))
        return {
            "input_ids": np.asarray(encoding.ids, dtype=np.int64),
            "attention_mask": np.asarray(encoding.attention_mask, dtype=np.int64),
            "token_type_ids": np.asarray(encoding.type_ids, dtype=np.int64),
        }

    def batch(items: list[dict[str, npt.NDArray[np.int64]]]) -> tuple[torch.Tensor, ...]:
        return tuple(torch.from_numpy(np.stack([item[name] for item in items])) for name in spec.inputs)

    return Preprocessor(decode, batch)


def _stack(items: list[Any]) -> torch.Tensor:
    return torch.from_numpy(np.stack(items))


@dataclass(frozen=True)
class Preprocessor:
    """``decode`` one payload (raises PayloadError), ``batch`` decoded items into the model's input."""

    decode: Decoder
    batch: Batcher

    def inputs(self, payloads: list[bytes]) -> Any:
        """Decode every payload and batch them."""
        return self.batch([self.decode(p) for p in payloads])


def preprocessor(spec: Preprocessing, device: str = "cpu", root: Path | None = None) -> Preprocessor:
    """The code for a declared preprocessing; ``root`` is the version folder holding its files."""
    if isinstance(spec, ImagePreprocessing):
        image = spec
        return Preprocessor(lambda p: image_tensor(decode_image(p, image.colour), image), _stack)
    if isinstance(spec, AudioPreprocessing):
        audio = spec
        return Preprocessor(lambda p: audio_tensor(p, audio), _stack)
    if isinstance(spec, TextPreprocessing):
        from dlstream.models.preprocess.sentences import encode_sentences, load_sentence_encoder

        encoder = load_sentence_encoder(device, max_tokens=spec.max_tokens)
        return Preprocessor(decode_text, lambda texts: torch.from_numpy(encode_sentences(encoder, texts)))
    if isinstance(spec, TokensPreprocessing):
        return token_preprocessor(spec, root or Path.cwd())
    raise TypeError(f"no preprocessing for {type(spec).__name__}")
