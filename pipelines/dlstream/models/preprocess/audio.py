"""Audio payloads (WAV bytes at common sample rates) to log-mel spectrograms. Pure functions.

The spectrogram is ``torch.stft``; the mel filter bank is the usual triangular (HTK-scale) bank.
"""

from __future__ import annotations

import io
import math
import warnings
from functools import lru_cache

import numpy as np
import numpy.typing as npt
import torch
from scipy.io import wavfile

from dlstream.models.preprocess.errors import PayloadError

SAMPLE_RATE = 16_000
CLIP_SAMPLES = SAMPLE_RATE  # one second around the speech
N_FFT = 400  # 25 ms
HOP = 160  # 10 ms
N_MELS = 64
MAX_SECONDS = 30


def decode_wav(payload: bytes, sample_rate: int = SAMPLE_RATE) -> npt.NDArray[np.float32]:
    """A WAV file as mono float32 in [-1, 1] at ``sample_rate``.

    Raises:
        PayloadError: for bytes that are not a complete WAV file, or hold no or too much audio.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rate, data = wavfile.read(io.BytesIO(payload))
        # The reader parses nothing but these bytes, and malformed headers surface as assorted errors
        # (UnboundLocalError, ZeroDivisionError, struct.error, ...): whatever it raises, the payload is bad.
        except Exception as exc:  # noqa: BLE001
            raise PayloadError(f"cannot decode WAV: {type(exc).__name__}: {exc}") from None
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
    if not np.isfinite(samples).all():
        raise PayloadError("WAV file holds samples that are not finite numbers")
    if len(samples) > MAX_SECONDS * rate:
        raise PayloadError(f"audio is {len(samples) / rate:.1f} s long, over the {MAX_SECONDS} s limit")
    if rate != sample_rate:
        # scipy.signal takes about 1 s to import; every Triton stub imports this module, few resample.
        from scipy.signal import resample_poly

        g = math.gcd(rate, sample_rate)
        samples = np.asarray(resample_poly(samples, sample_rate // g, rate // g), dtype=np.float32)
    if len(samples) < sample_rate // 50:
        raise PayloadError(f"audio is {len(samples) / sample_rate * 1000:.0f} ms long, too short to classify")
    return samples


def centre_on_speech(
    samples: npt.NDArray[np.float32], clip_samples: int = CLIP_SAMPLES, hop: int = HOP
) -> npt.NDArray[np.float32]:
    """Trim leading and trailing near-silence, then centre in a fixed window of ``clip_samples``."""
    frames = len(samples) // hop
    if frames > 0:
        energy = np.sqrt(np.mean(samples[: frames * hop].reshape(frames, hop) ** 2, axis=1))
        loud = np.flatnonzero(energy > max(1e-4, 0.05 * energy.max()))
        if loud.size:
            samples = samples[loud[0] * hop : (loud[-1] + 1) * hop]
    if len(samples) >= clip_samples:
        start = (len(samples) - clip_samples) // 2
        return samples[start : start + clip_samples]
    pad = clip_samples - len(samples)
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


def log_mel(
    samples: npt.NDArray[np.float32],
    *,
    n_fft: int = N_FFT,
    hop: int = HOP,
    n_mels: int = N_MELS,
    sample_rate: int = SAMPLE_RATE,
) -> npt.NDArray[np.float32]:
    """Log-mel spectrogram ``[1, n_mels, frames]``, normalised per utterance (mean 0, std 1)."""
    waveform = torch.from_numpy(np.ascontiguousarray(samples))
    spectrum = torch.stft(
        waveform,
        n_fft=n_fft,
        hop_length=hop,
        window=torch.hann_window(n_fft),
        center=True,
        return_complex=True,
    )
    power: npt.NDArray[np.float32] = spectrum.abs().pow(2).numpy()
    mel = np.log(mel_filterbank(n_mels, n_fft, sample_rate) @ power + 1e-6)
    mel = (mel - mel.mean()) / (mel.std() + 1e-5)
    features: npt.NDArray[np.float32] = mel[None, :, :].astype(np.float32)
    return features
