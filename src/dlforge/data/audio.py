"""Audio clips: read WAV, FLAC, OGG or MP3 files (or bytes, or arrays) as mono float32
waveforms at one sample rate, cut or padded to one length; find the clips of a folder of
class sub-folders. The spectrogram side (log-mel, augmentation) is :mod:`dlforge.data.spectrogram`.

Shared rules of every loader:

``reading``     files and bytes are decoded by ``soundfile`` (libsndfile), the ``audio`` extra;
                several channels are averaged to one; integer samples are scaled to [-1, 1].
``arrays``      a waveform given as an array is taken to be at the run's sample rate already;
                a ``(waveform, rate)`` pair is resampled from ``rate``.
``resampling``  ``scipy.signal.resample_poly`` (a polyphase filter with a Kaiser window, from
                the rational ratio of the two rates); scipy comes with scikit-learn. Rates
                from 1,000 to 768,000 Hz are read; any other (0, negative, absurd) is an error
                naming the clip.
``length``      every clip becomes exactly ``samples`` long, centred: a longer clip loses the
                same amount at both ends, a shorter one gets silence (zeros) at both ends.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.errors import DataError

__all__ = ["AUDIO_EXTENSIONS", "MAX_RATE", "MIN_RATE", "audio_files", "audio_folder",
           "audio_list", "fix_length", "load_audio", "read_audio", "require_reader", "resample"]

#: File name endings read as audio (compared in lower case).
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
#: The sample rates a clip may have to be resampled (Hz).
MIN_RATE, MAX_RATE = 1_000, 768_000
_FEATURE = "reading audio files (--audio, --kind audio, AudioClassifier)"


# ------------------------------------------------------------------------------ one clip
def require_reader() -> Any:
    """``soundfile``, or MissingExtraError naming the audio extra (files and bytes need it;
    waveform arrays do not)."""
    from dlforge._extras import require

    return require("soundfile", "audio", _FEATURE)


def _decode(source: Any, name: str) -> tuple[np.ndarray, int]:
    """(samples (T, C) float32, rate) of a file path or the bytes of a file."""
    sf = require_reader()
    try:
        data, rate = sf.read(source, dtype="float32", always_2d=True)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as e:
        reason = (getattr(e, "error_string", "") or str(e)).strip(" .") or type(e).__name__
        raise DataError(f"{name}: not a readable audio file ({reason}); expected WAV, FLAC, OGG "
                        "or MP3") from None
    return data, int(rate)


def _from_array(item: Any, name: str) -> np.ndarray:
    """A waveform array (T,) or (T, C) as mono float32; integer PCM scaled to [-1, 1]."""
    x = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{name}: audio array has dtype {x.dtype}; expected numbers")
    if x.ndim == 2:
        x = x.mean(axis=1) if x.dtype.kind == "f" else x.astype(np.float64).mean(axis=1)
    if x.ndim != 1:
        raise DataError(f"{name}: audio array has shape {tuple(x.shape)}; expected a waveform "
                        "(T,) or (T, channels)")
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        mid = (int(info.max) + int(info.min) + 1) / 2  # 128 for uint8, 0 for signed
        x = (x.astype(np.float64) - mid) / (int(info.max) + 1 - mid)
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{name}: audio has NaN or infinite samples; expected finite numbers")
    return x


def resample(x: np.ndarray, rate: Any, target: int, name: str = "audio") -> np.ndarray:
    """``x`` (T,) at ``rate`` Hz resampled to ``target`` Hz (polyphase, see the module)."""
    ok = isinstance(rate, int | np.integer | float | np.floating) and not isinstance(rate, bool)
    if not ok or not math.isfinite(rate) or float(rate) != int(rate) or not (
            MIN_RATE <= rate <= MAX_RATE):
        raise DataError(f"{name}: sample rate {rate!r} Hz cannot be resampled to {target} Hz; "
                        f"expected a whole number of Hz from {MIN_RATE:,} to {MAX_RATE:,}")
    rate = int(rate)
    if rate == target:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def fix_length(x: np.ndarray, samples: int) -> np.ndarray:
    """``x`` (T,) centred in a window of ``samples``: cropped at both ends, or padded with
    zeros at both ends."""
    n = len(x)
    if n == samples:
        return x
    if n > samples:
        start = (n - samples) // 2
        return x[start:start + samples]
    before = (samples - n) // 2
    return np.pad(x, (before, samples - n - before))


def read_audio(item: Any, rate: int, name: str | None = None) -> np.ndarray:
    """One clip as a mono float32 waveform at ``rate`` Hz (any length but 0): a file path,
    the bytes of a file, a ``(waveform, rate)`` pair, or a waveform array already at ``rate``.
    Errors name the clip as ``name`` (default: its path, else "audio")."""
    name = name or (str(item) if isinstance(item, str | os.PathLike) else "audio")
    if isinstance(item, str | os.PathLike):
        path = Path(item)
        if not path.exists():
            raise DataError(f"{path}: audio file not found")
        if path.is_dir():
            raise DataError(f"{path}: is a folder; expected an audio file")
        data, source_rate = _decode(str(path), name)
        x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    elif isinstance(item, bytes | bytearray | memoryview):
        if len(item) == 0:
            raise DataError(f"{name}: empty audio bytes; expected the bytes of a WAV, FLAC, OGG "
                            "or MP3 file")
        data, source_rate = _decode(io.BytesIO(bytes(item)), name)
        x = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    elif isinstance(item, tuple) and len(item) == 2 and not hasattr(item[1], "__len__"):
        x, source_rate = _from_array(item[0], name), item[1]
    elif isinstance(item, np.ndarray | list) or hasattr(item, "detach"):
        x, source_rate = _from_array(item, name), rate
    else:
        missing = item is None or (isinstance(item, float) and math.isnan(item))
        shown = "a missing value" if missing else f"{type(item).__name__} {item!r}"[:80]
        raise DataError(f"{name}: expected an audio file path, file bytes or a waveform array, "
                        f"got {shown}")
    if len(x) == 0:
        raise DataError(f"{name}: the clip has no samples (zero length); expected a clip of "
                        "at least one sample")
    if not np.isfinite(x).all():
        raise DataError(f"{name}: audio has NaN or infinite samples; expected finite numbers")
    return resample(np.ascontiguousarray(x, dtype=np.float32), source_rate, rate, name)


def load_audio(values: Sequence[Any], rate: int, samples: int,
               source: str = "audio") -> np.ndarray:
    """Clips (paths, bytes, arrays, ``(waveform, rate)`` pairs) as one (N, samples) float32
    array at ``rate`` Hz, each centred in its window (see the module)."""
    if isinstance(values, str | os.PathLike):
        raise DataError(f"{source}: got the single path {str(values)!r}; expected a list of "
                        "audio file paths")
    if isinstance(values, np.ndarray) and values.ndim == 2 and values.dtype != object:
        items: list[Any] = list(values)  # (N, T): N waveforms at ``rate``
    else:
        items = list(values)
    if not items:
        raise DataError(f"{source}: no audio clips; expected at least one")
    out = np.zeros((len(items), samples), dtype=np.float32)
    for i, item in enumerate(items):
        name = str(item) if isinstance(item, str | os.PathLike) else f"{source}: row {i + 1}"
        out[i] = fix_length(read_audio(item, rate, name), samples)
    return out


# ---------------------------------------------------------------------------------- folders
def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def audio_files(folder: str | Path) -> list[str]:
    """The audio files in ``folder`` and its sub-folders (for predicting on a folder, flat or
    of classes), sorted by path; hidden files and folders are ignored."""
    p = Path(folder)
    if not p.is_dir():
        raise DataError(f"{p}: expected a folder of audio clips, a list of paths or arrays")
    files = []
    for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [str(Path(dirpath) / f) for f in sorted(filenames)
                  if _is_audio(Path(dirpath) / f)]
    if not files:
        raise DataError(f"{p}: no audio files in the folder ({', '.join(AUDIO_EXTENSIONS)})")
    return files


def audio_folder(root: str | Path) -> tuple[list[str], list[str]]:
    """The clips of ``root/<class>/<clip>``: (paths, labels). Classes and files are sorted by
    name; clips in nested folders of a class count for it; hidden files and folders and files
    without an audio extension are ignored. Nothing is read yet."""
    folder = Path(root)
    example = f"e.g. {folder / 'yes' / '1.wav'}"
    if not folder.exists():
        raise DataError(f"{root}: audio folder not found; expected a folder of class "
                        f"sub-folders, {example}")
    if not folder.is_dir():
        raise DataError(f"{root}: not a folder; expected a folder of class sub-folders")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[str] = []
    labels: list[str] = []
    for cls in classes:
        for dirpath, dirnames, filenames in os.walk(folder / cls, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found = [str(Path(dirpath) / f) for f in sorted(filenames)
                     if _is_audio(Path(dirpath) / f)]
            paths += found
            labels += [cls] * len(found)
    with_clips = sorted(set(labels))
    if len(with_clips) < 2:
        got = (f"only class {with_clips[0]!r} has audio files" if with_clips
               else f"no audio files in the class sub-folders {classes}" if classes
               else "no class sub-folders")
        raise DataError(f"{root}: {got}; expected at least 2 class sub-folders of clips "
                        f"({', '.join(AUDIO_EXTENSIONS)}), {example}")
    return paths, labels


def audio_list(X: Any) -> list[Any]:
    """Clips as a list: the audio files of a folder, the rows of an array (N, T), or the items
    of a list or Series (paths, bytes, waveforms, ``(waveform, rate)`` pairs)."""
    if isinstance(X, str | os.PathLike):
        return audio_files(X)
    if hasattr(X, "detach"):  # a torch tensor (N, samples)
        X = X.detach().cpu().numpy()
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim != 2:
            raise DataError(f"X: expected clips: an array (N, samples), or a list of paths or "
                            f"waveforms, got an array of shape {X.shape}")
        return list(X)
    if hasattr(X, "tolist") and not isinstance(X, np.ndarray):  # a pandas Series
        return list(X.tolist())
    try:
        return list(X)
    except TypeError:
        raise DataError(f"X: expected audio clips (a folder, a list of paths or waveforms, an "
                        f"array), got {type(X).__name__}") from None
