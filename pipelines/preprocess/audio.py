"""Audio payloads (WAV bytes at common sample rates) to log-mel spectrograms. Pure functions.

The spectrogram is ``torch.stft``; the mel filter bank is the usual triangular (HTK-scale) bank.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import torch
from scipy.io import wavfile
from scipy.signal import resample_poly

from pipelines.preprocess.errors import PayloadError

SAMPLE_RATE = 16_000
CLIP_SAMPLES = SAMPLE_RATE  # one second around the speech
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 64
MIN_SAMPLES = SAMPLE_RATE // 50  # 20 ms
MAX_SECONDS = 30


def decode_wav(payload: bytes) -> npt.NDArray[np.float32]:
    """A WAV file as mono float32 in [-1, 1] at 16 kHz.

    Raises:
        PayloadError: for bytes that are not a complete WAV file, or hold no or too much audio.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rate, data = wavfile.read(io.BytesIO(payload))
        # scipy raises UnboundLocalError on some malformed headers: a library bug, still a bad payload.
        except (ValueError, EOFError, OSError, IndexError, UnboundLocalError, struct.error) as exc:
            raise PayloadError(f"cannot decode WAV: {exc}") from None
    if any("prematurely" in str(w.message) for w in caught):
        raise PayloadError("WAV file is truncated: it ends before the length its header states")
    if data.size == 0:
        raise PayloadError("WAV file holds no audio samples")
    samples: npt.NDArray[np.float32] = data.astype(np.float32)
    if data.dtype == np.uint8:
        samples = (samples - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        samples /= float(np.iinfo(data.dtype).max) + 1.0
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if len(samples) > MAX_SECONDS * rate:
        raise PayloadError(f"audio is {len(samples) / rate:.1f} s long, over the {MAX_SECONDS} s limit")
    if rate != SAMPLE_RATE:
        g = math.gcd(rate, SAMPLE_RATE)
        samples = np.asarray(resample_poly(samples, SAMPLE_RATE // g, rate // g), dtype=np.float32)
    if len(samples) < MIN_SAMPLES:
        raise PayloadError(f"audio is {len(samples) / SAMPLE_RATE * 1000:.0f} ms long, too short to classify")
    return samples


def centre_on_speech(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Trim leading and trailing near-silence, then centre in a fixed one-second window."""
    frames = len(samples) // HOP
    if frames > 0:
        energy = np.sqrt(np.mean(samples[: frames * HOP].reshape(frames, HOP) ** 2, axis=1))
        loud = np.flatnonzero(energy > max(1e-4, 0.05 * energy.max()))
        if loud.size:
            samples = samples[loud[0] * HOP : (loud[-1] + 1) * HOP]
    if len(samples) >= CLIP_SAMPLES:
        start = (len(samples) - CLIP_SAMPLES) // 2
        return samples[start : start + CLIP_SAMPLES]
    pad = CLIP_SAMPLES - len(samples)
    return np.pad(samples, (pad // 2, pad - pad // 2))


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(2595.0 * np.log10(1.0 + hz / 700.0), dtype=np.float64)


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return np.asarray(700.0 * (10.0 ** (mel / 2595.0) - 1.0), dtype=np.float64)


@lru_cache(maxsize=4)
def mel_filterbank(
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    rate: int = SAMPLE_RATE,
    fmin: float = 20.0,
    fmax: float | None = None,
) -> npt.NDArray[np.float32]:
    """Triangular filters ``[n_mels, n_fft // 2 + 1]`` equally spaced on the mel scale."""
    fmax = fmax or rate / 2
    bins = np.linspace(0.0, rate / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(fmin)), _hz_to_mel(np.array(fmax)), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None, :] - lower) / (centre - lower)
    falling = (upper - bins[None, :]) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)


def log_mel(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Log-mel spectrogram ``[1, N_MELS, frames]``, normalised per utterance (mean 0, std 1)."""
    waveform = torch.from_numpy(np.ascontiguousarray(samples))
    spectrum = torch.stft(
        waveform,
        n_fft=N_FFT,
        hop_length=HOP,
        window=torch.hann_window(N_FFT),
        center=True,
        return_complex=True,
    )
    power: npt.NDArray[np.float32] = spectrum.abs().pow(2).numpy()
    mel = np.log(mel_filterbank() @ power + 1e-6)
    mel = (mel - mel.mean()) / (mel.std() + 1e-5)
    features: npt.NDArray[np.float32] = mel[None, :, :].astype(np.float32)
    return features


def decode_speech(payload: bytes) -> npt.NDArray[np.float32]:
    """WAV bytes to the speech model's ``[1, 64, 101]`` input."""
    return log_mel(centre_on_speech(decode_wav(payload)))
