"""Log-mel spectrograms of batches of waveforms, and their training-split augmentation.

The STFT is ``torch.stft`` and the mel filterbank is computed here, in a few lines: the
``torchaudio`` wheels on PyPI are built for other torch releases (2.11.1, the newest, fails to
load its library under our pinned torch 2.13), and a hand-written filterbank is cheaper than
pinning an older torch. It is the Slaney filterbank (the mel scale linear below 1 kHz and
logarithmic above it, each triangle normalised to unit area): librosa's default
(``librosa.filters.mel(htk=False, norm="slaney")``) and torchaudio's
``melscale_fbanks(norm="slaney", mel_scale="slaney")``; a test holds it to torchaudio's values.

``log_mel``: Hann window of ``n_fft`` samples, ``hop`` samples apart, centred frames (the clip
padded with zeros by ``n_fft // 2`` at both ends, so there are ``1 + samples // hop`` frames);
the power spectrum through the filterbank; natural log of (power + 1e-6).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dlforge.errors import ConfigError

__all__ = ["AudioAugmenter", "hz_to_mel", "log_mel", "mel_filterbank", "mel_to_hz", "n_frames"]

LOG_FLOOR = 1e-6  # added to the mel power before the log: silence stays finite

# The Slaney mel scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above.
_F_SP, _MIN_LOG_HZ = 200.0 / 3, 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
    return np.where(hz >= _MIN_LOG_HZ, log, hz / _F_SP)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log, mel * _F_SP)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> np.ndarray:
    """The (n_fft // 2 + 1, n_mels) Slaney filterbank: triangles spaced evenly on the mel
    scale between ``f_min`` and ``f_max`` (default: half the sample rate), each scaled to
    unit area (2 / its width in Hz). ConfigError when a band would get no FFT bin."""
    f_max = sample_rate / 2 if f_max is None else f_max
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # (F,) each bin's frequency
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))  # (M + 2,)
    width = np.diff(edges)  # (M + 1,)
    slopes = edges[None, :] - freqs[:, None]  # (F, M + 2)
    rising = -slopes[:, :-2] / width[:-1]
    falling = slopes[:, 2:] / width[1:]
    fb = np.maximum(0.0, np.minimum(rising, falling))  # (F, M)
    fb *= 2.0 / (edges[2:] - edges[:-2])  # unit area
    empty = np.flatnonzero(fb.max(axis=0) == 0.0)
    if len(empty):
        raise ConfigError(f"n_mels: {n_mels} mel bands are too many for n_fft {n_fft} at "
                          f"{sample_rate} Hz (band {int(empty[0]) + 1} gets no FFT bin); lower "
                          "n_mels or raise n_fft")
    return fb


def n_frames(samples: int, hop: int) -> int:
    """The STFT frames of a clip of ``samples`` (centred frames)."""
    return 1 + samples // hop


def log_mel(waves: torch.Tensor, n_fft: int, hop: int, filterbank: torch.Tensor
            ) -> torch.Tensor:
    """Waveforms (B, T) → log-mel spectrograms (B, n_mels, frames) (see the module)."""
    window = torch.hann_window(n_fft, periodic=True, dtype=waves.dtype, device=waves.device)
    spec = torch.stft(waves, n_fft, hop_length=hop, win_length=n_fft, window=window,
                      center=True, pad_mode="constant", return_complex=True)  # (B, F, frames)
    power = spec.real.square() + spec.imag.square()
    mel = torch.einsum("bft,fm->bmt", power, filterbank.to(waves.dtype))  # (B, M, frames)
    return torch.log(mel + LOG_FLOOR)


# ------------------------------------------------------------------------------ augmentation
class AudioAugmenter:
    """Training-split augmentation of speech, per clip: on the waveform (B, T), a time shift
    by up to ``shift`` samples either way (the gap filled with silence) and white noise whose
    RMS is up to ``noise`` times the clip's (drawn uniformly per clip: 0.1 is 20 dB SNR and
    better); on the normalised spectrogram (B, 1, mels, frames), SpecAugment (Park et al.,
    2019): ``masks`` frequency masks of up to ``freq_mask`` mel bands and ``masks`` time masks
    of up to ``time_mask`` frames, each set to 0 (the band's training mean).

    Deterministic: every random number comes from a ``torch.Generator`` seeded by
    ``(seed, epoch)``; call :meth:`set_epoch` at the start of each epoch (the trainer does).
    """

    def __init__(self, shift: int = 0, noise: float = 0.0, time_mask: int = 0,
                 freq_mask: int = 0, masks: int = 2, seed: int = 0):
        self.shift, self.noise = int(shift), float(noise)
        self.time_mask, self.freq_mask, self.masks = int(time_mask), int(freq_mask), int(masks)
        self.seed = int(seed)
        self.set_epoch(0)

    @property
    def active(self) -> bool:
        return bool(self.shift or self.noise or self.time_mask or self.freq_mask)

    def set_epoch(self, epoch: int) -> None:
        state = np.random.SeedSequence([self.seed % 2**64, int(epoch) % 2**64, 0xA0D])
        self.generator = torch.Generator().manual_seed(int(state.generate_state(1, np.uint64)[0]))

    def waveform(self, x: torch.Tensor) -> torch.Tensor:
        """Shift and noise on a batch of waveforms (B, T)."""
        g, (b, t) = self.generator, x.shape
        if self.shift:
            offsets = torch.randint(-self.shift, self.shift + 1, (b,), generator=g)
            src = torch.arange(t)[None, :] - offsets[:, None]  # (B, T): where each sample is from
            inside = (src >= 0) & (src < t)
            x = torch.where(inside, x.gather(1, src.clamp(0, t - 1)), torch.zeros(()))
        if self.noise:
            rms = x.square().mean(dim=1, keepdim=True).sqrt()
            level = torch.rand(b, 1, generator=g) * self.noise
            x = x + level * rms * torch.randn(x.shape, generator=g)
        return x

    def spectrogram(self, m: torch.Tensor) -> torch.Tensor:
        """SpecAugment on a batch of normalised spectrograms (B, 1, mels, frames)."""
        g, (b, _, n_mels, frames) = self.generator, m.shape
        keep = torch.ones(b, 1, n_mels, frames, dtype=torch.bool)
        for width, size, axis in ((self.freq_mask, n_mels, 2), (self.time_mask, frames, 3)):
            if not width:
                continue
            for _ in range(self.masks):
                w = torch.randint(0, min(width, size) + 1, (b,), generator=g)
                start = (torch.rand(b, generator=g) * (size - w + 1)).long()
                pos = torch.arange(size)[None, :]
                hit = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, size)
                keep &= ~(hit[:, None, :, None] if axis == 2 else hit[:, None, None, :])
        return m * keep
