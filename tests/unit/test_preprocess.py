"""Decoding and preprocessing of audio and text payloads, and the build helpers."""

from __future__ import annotations

import io
import json
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch import nn

from dlstream.models.evaluate import classification_report
from dlstream.models.export import ServingModule, next_version, write_version
from dlstream.models.preprocess.audio import (
    CLIP_SAMPLES,
    N_MELS,
    SAMPLE_RATE,
    centre_on_speech,
    decode_wav,
    mel_filterbank,
)
from dlstream.models.preprocess.declared import preprocessor
from dlstream.models.preprocess.errors import PayloadError
from dlstream.models.preprocess.text import decode_text
from dlstream.models.reference import pca_projection, reference_statistics
from dlstream.models.zoo import speech_digits
from dlstream.models.zoo.data.split import stratified_split

pytestmark = pytest.mark.unit


def wav_bytes(samples: npt.NDArray[np.float64], rate: int, channels: int = 1, width: int = 2) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        if width == 1:
            pcm = np.clip(samples * 127 + 128, 0, 255).astype(np.uint8)
        else:
            pcm = np.clip(samples * 32767, -32768, 32767).astype("<i2")
        out.writeframes(np.repeat(pcm, channels).tobytes())
    return buffer.getvalue()


def tone(rate: int, seconds: float = 0.5, hz: float = 440.0) -> npt.NDArray[np.float64]:
    t = np.arange(int(rate * seconds)) / rate
    return np.asarray(0.5 * np.sin(2 * np.pi * hz * t), dtype=np.float64)


@pytest.mark.parametrize("rate", [8_000, 16_000, 22_050, 44_100, 48_000])
def test_wav_at_common_rates_is_resampled_to_16k(rate: int) -> None:
    samples = decode_wav(wav_bytes(tone(rate), rate))
    assert samples.dtype == np.float32
    assert abs(len(samples) - SAMPLE_RATE // 2) <= 2
    assert 0.4 < np.abs(samples).max() <= 0.51


def test_stereo_and_8_bit_wav_are_accepted() -> None:
    assert decode_wav(wav_bytes(tone(16_000), 16_000, channels=2)).ndim == 1
    assert np.abs(decode_wav(wav_bytes(tone(16_000), 16_000, width=1))).max() > 0.4


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "cannot decode WAV"),
        (b"not a wav at all", "cannot decode WAV"),
        (wav_bytes(np.zeros(0), 16_000), "no audio samples"),
        (wav_bytes(np.zeros(100), 16_000), "too short"),
    ],
)
def test_broken_audio_is_refused_with_a_reason(payload: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        decode_wav(payload)


def test_a_truncated_wav_is_refused() -> None:
    payload = wav_bytes(tone(16_000), 16_000)
    with pytest.raises(PayloadError, match=r"truncated|cannot decode"):
        decode_wav(payload[: len(payload) // 2])


def test_speech_is_centred_in_a_one_second_window() -> None:
    samples = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    samples[SAMPLE_RATE : SAMPLE_RATE + 4000] = 0.5
    window = centre_on_speech(samples)
    assert len(window) == CLIP_SAMPLES
    loud = np.flatnonzero(np.abs(window) > 0.1)
    assert abs((loud[0] + loud[-1]) / 2 - CLIP_SAMPLES / 2) < 200


def test_log_mel_has_the_model_shape_and_is_normalised() -> None:
    features = preprocessor(speech_digits.PREPROCESSING).decode(wav_bytes(tone(22_050, 0.6), 22_050))
    assert features.shape == (1, N_MELS, 101)
    assert abs(float(features.mean())) < 1e-3
    assert abs(float(features.std()) - 1.0) < 1e-2


def test_mel_filters_cover_the_spectrum_in_order() -> None:
    bank = mel_filterbank()
    assert bank.shape == (N_MELS, 201)
    peaks = bank.argmax(axis=1)
    assert (np.diff(peaks) >= 0).all()
    assert (bank.max(axis=1) > 0).all()


def test_text_must_be_utf8_and_not_empty() -> None:
    assert decode_text("naïve café".encode()) == "naïve café"
    with pytest.raises(PayloadError, match="byte 3"):
        decode_text(b"caf\xe9!")
    with pytest.raises(PayloadError, match="empty"):
        decode_text(b"  \n ")


def test_stratified_split_holds_out_every_class_and_is_seeded() -> None:
    labels = np.repeat(np.arange(4), 50)
    a, b = stratified_split(labels, 0.2, seed=3), stratified_split(labels, 0.2, seed=3)
    assert (a.test == b.test).all()
    assert np.bincount(labels[a.test]).tolist() == [10, 10, 10, 10]
    assert set(a.train).isdisjoint(a.test)
    assert len(a.train) + len(a.test) == 200


def test_classification_report_counts() -> None:
    report = classification_report(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), ["a", "b"])
    assert report["accuracy"] == 0.75
    assert report["confusion_matrix"]["rows_true_cols_predicted"] == [[1, 1], [0, 2]]
    assert report["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert report["per_class"]["a"]["recall"] == 0.5


def test_reference_statistics_and_projection() -> None:
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(300, 16)).astype(np.float32)
    mean, components = pca_projection(embeddings, 8)
    assert components.shape == (8, 16)
    assert np.allclose(components @ components.T, np.eye(8), atol=1e-4)
    probs = rng.dirichlet(np.ones(3), size=300).astype(np.float32)
    stats = reference_statistics(probs, (embeddings - mean) @ components.T, ["x", "y", "z"], seed=0)
    assert sum(stats["predicted_class_counts"]) == 300
    assert sum(stats["confidence_histogram"]["counts"]) == 300
    assert len(stats["embedding_sample"][0]) == 8


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), x


def test_serving_module_outputs_probabilities_and_projection() -> None:
    module = ServingModule(_Tiny(), np.zeros(4, np.float32), np.eye(2, 4, dtype=np.float32))
    probs, projected = module(torch.ones(5, 4))
    assert torch.allclose(probs.sum(dim=1), torch.ones(5))
    assert projected.shape == (5, 2)


def test_versions_are_written_atomically_and_numbered(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    model_dir.mkdir()
    assert next_version(model_dir) == 1
    artifact = tmp_path / "w.bin"
    artifact.write_bytes(b"weights")
    path = write_version(model_dir, 1, files={"labels.json": ["a"]}, artifacts={"model.pt": artifact})
    assert sorted(p.name for p in path.iterdir()) == ["labels.json", "model.pt", "model.py"]
    assert json.loads((path / "labels.json").read_text()) == ["a"]
    assert next_version(model_dir) == 2
    with pytest.raises(FileExistsError):
        write_version(model_dir, 1, files={}, artifacts={})
    assert [p.name for p in model_dir.iterdir()] == ["1"]
