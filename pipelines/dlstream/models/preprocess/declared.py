"""Preprocessing declared in a model card, turned into code: payload bytes to one model input, and decoded
items to a batch tensor. The same functions serve inside Triton, in builds and in retraining."""

from __future__ import annotations

import math
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


@dataclass(frozen=True)
class Geometry:
    """Where an original image of ``width`` x ``height`` pixels sits in the model input: an input pixel is
    ``original * scale + pad`` on each axis."""

    width: int
    height: int
    scale_x: float = 1.0
    scale_y: float = 1.0
    pad_x: float = 0.0
    pad_y: float = 0.0

    def to_original(self, boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``[n, 4]`` xyxy boxes in input pixels mapped to the original image, clipped to it."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - self.pad_x) / self.scale_x, 0, self.width)
        out[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - self.pad_y) / self.scale_y, 0, self.height)
        return out


@dataclass(frozen=True)
class ImageItem:
    """One decoded image: the input tensor and where the original image sits in it."""

    pixels: npt.NDArray[Any]
    geometry: Geometry


def _resized(image: Image.Image, spec: ImagePreprocessing) -> tuple[Image.Image, Geometry]:
    """The image resized (and cropped or padded) as ``spec`` declares, before scaling; a dynamic width is
    left unpadded (the batch pads it)."""
    width, height = image.size
    target_w, target_h = spec.width, spec.height
    if spec.resize == "stretch":
        assert target_w is not None  # the card's validation
        if (width, height) != (target_w, target_h):
            image = image.resize((target_w, target_h), Image.Resampling.BILINEAR)
        return image, Geometry(width, height, target_w / width, target_h / height)
    if spec.resize == "shorter-side":
        size = target_h
        scale = (spec.resize_to or size) / min(width, height)
        new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
        image = image.resize((new_w, new_h), Image.Resampling.BILINEAR)
        left, top = (new_w - size) // 2, (new_h - size) // 2
        geometry = Geometry(width, height, new_w / width, new_h / height, -left, -top)
        return image.crop((left, top, left + size, top + size)), geometry
    if spec.resize == "letterbox":
        assert target_w is not None
        scale = min(target_w / width, target_h / height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        left, top = (
            (0, 0) if spec.pad_align == "top-left" else ((target_w - new_w) // 2, (target_h - new_h) // 2)
        )
        canvas = Image.new(image.mode, (target_w, target_h), _fill(image.mode, spec.pad_value))
        canvas.paste(image.resize((new_w, new_h), Image.Resampling.BILINEAR), (left, top))
        return canvas, Geometry(width, height, new_w / width, new_h / height, left, top)
    # fixed-height: the aspect ratio kept, the width capped; padded on the right after scaling (image_input)
    widest = target_w if target_w is not None else spec.max_width
    new_w = max(1, min(widest, math.ceil(target_h * width / height)))
    image = image.resize((new_w, target_h), Image.Resampling.BILINEAR)
    return image, Geometry(width, height, new_w / width, target_h / height)


def _fill(mode: str, value: float) -> int | tuple[int, ...]:
    level = round(value)
    return level if mode == "L" else (level, level, level)


def _normalised(pixels: npt.NDArray[np.float32], spec: ImagePreprocessing) -> npt.NDArray[np.float32]:
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    return np.asarray((pixels * np.float32(spec.scale) - mean) / std, dtype=np.float32)


def image_input(image: Image.Image, spec: ImagePreprocessing) -> ImageItem:
    """A decoded image resized, scaled and normalised as ``spec`` declares, with its geometry."""
    image, geometry = _resized(image, spec)
    pixels = np.asarray(image, dtype=np.uint8 if spec.dtype == "uint8" else np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if spec.colour == "BGR":
        pixels = pixels[:, :, ::-1]
    if spec.dtype == "float32":
        pixels = _normalised(pixels.astype(np.float32), spec)
    if spec.layout == "CHW":
        pixels = pixels.transpose(2, 0, 1)
    if spec.resize == "fixed-height" and spec.width is not None:
        pixels = _pad_right(pixels, spec.width, spec)
    return ImageItem(np.ascontiguousarray(pixels), geometry)


def _pad_right(pixels: npt.NDArray[Any], width: int, spec: ImagePreprocessing) -> npt.NDArray[Any]:
    """``pixels`` padded on the right to ``width`` with what the preprocessing makes of ``pad_value`` (so a
    pad value of 127.5 with mean 0.5 and std 0.5 pads with zeros)."""
    axis = 2 if spec.layout == "CHW" else 1
    if pixels.shape[axis] >= width:
        return pixels
    fill = np.full((1, 1, 1), spec.pad_value, dtype=np.float32)
    value = (fill if spec.dtype == "uint8" else _normalised(fill, spec)).reshape(-1)
    shape = list(pixels.shape)
    shape[axis] = width
    out = np.empty(shape, dtype=pixels.dtype)
    out[...] = value.reshape((-1, 1, 1) if spec.layout == "CHW" else (1, 1, -1)).astype(pixels.dtype)
    index = [slice(None)] * 3
    index[axis] = slice(0, pixels.shape[axis])
    out[tuple(index)] = pixels
    return out


def image_tensor(image: Image.Image, spec: ImagePreprocessing) -> npt.NDArray[Any]:
    """A decoded image resized, scaled and normalised as ``spec`` declares."""
    return image_input(image, spec).pixels


def image_batch(items: list[ImageItem], spec: ImagePreprocessing) -> torch.Tensor:
    """Images as one batch tensor; with a dynamic width, each padded on the right to the batch's widest
    (at least ``min_width``) with the padding value the preprocessing makes of ``pad_value``."""
    arrays = [item.pixels for item in items]
    if spec.dynamic_width:
        axis = 2 if spec.layout == "CHW" else 1
        widest = max([a.shape[axis] for a in arrays] + [spec.min_width or 1])
        arrays = [_pad_right(array, widest, spec) for array in arrays]
    return torch.from_numpy(np.stack(arrays))


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
        mode = "RGB" if image.colour == "BGR" else image.colour
        return Preprocessor(
            lambda p: image_input(decode_image(p, mode), image), lambda items: image_batch(items, image)
        )
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
