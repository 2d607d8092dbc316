"""One feature per input column: how its raw values become tensors for the model.

Every kind goes through the same three steps, so training and prediction cannot drift apart:

``load(values)``   parse raw values (texts, image or audio paths or arrays, numbers,
                   categories);
                   stateless except for choices fitted earlier (an image's channel count);
``fit(loaded)``    fit the state on the training rows only (tokenizer, image mean/std, log-mel
                   band mean/std, numeric mean/std, category vocabulary);
``encode(loaded)`` per-row arrays the loader batches with ``item`` and ``collate``.

The fitted state is JSON (``features.json`` in the run), plus the tokenizer file of a text
input. ``spec()`` tells the model builder what the encoder needs (vocabulary size, channels...).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dlforge._atomic import atomic_file
from dlforge.config import (
    AudioInput,
    CategoryInput,
    ImageInput,
    NumericInput,
    RunConfig,
    SequenceInput,
    TextInput,
)
from dlforge.data.augment import SeriesAugmenter, TokenAugmenter
from dlforge.data.clean import is_missing
from dlforge.data.features import MASK, TextTokenizer
from dlforge.data.pretrained import PretrainedTokenizer, check_pretrained_folder
from dlforge.data.series import parse_sequence
from dlforge.errors import DataError

__all__ = ["AudioFeature", "CategoryFeature", "Feature", "ImageFeature", "NumericFeature",
           "PretrainedTextFeature", "SequenceFeature", "TextFeature",
           "build_features", "load_features", "save_features"]


class Feature:
    """Base class: one input column of the run config."""

    kind = ""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.name: str = cfg.name

    def load(self, values: Sequence[Any], source: str) -> Any:
        return list(values)

    def fit(self, loaded: Any, source: str) -> None:
        """Fit the state on the training rows' loaded values."""

    def encode(self, loaded: Any) -> Any:
        return loaded

    def make_augmenter(self, seed: int) -> Any:
        """A training-only augmenter (with ``set_epoch``), or None."""
        return None

    def item(self, encoded: Any, i: int, augment: Any = None) -> Any:
        return encoded[i]

    def collate(self, items: list[Any], augment: Any = None) -> Any:
        return torch.from_numpy(np.stack(items))

    def lengths(self, encoded: Any) -> np.ndarray | None:
        """Per-row lengths for length-bucketed batching, for variable-length inputs."""
        return None

    def spec(self) -> dict[str, Any]:
        return {}

    def state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any], folder: Path | None) -> None:
        """Restore a fitted state (``folder``: the run directory, for extra files)."""

    def save_files(self, folder: Path) -> list[str]:
        """Write extra files (relative names returned); JSON state goes in features.json."""
        return []


# ------------------------------------------------------------------------------------- text
class TextFeature(Feature):
    """A text column, tokenized by a BPE or WordPiece vocabulary learnt on the training split."""

    kind = "text"
    cfg: TextInput

    def load(self, values: Sequence[Any], source: str) -> list[str]:
        return ["" if is_missing(v) else str(v) for v in values]

    def fit(self, loaded: list[str], source: str) -> None:
        c = self.cfg
        self.tokenizer = TextTokenizer.train(loaded, c.tokenizer, c.vocab_size, c.max_length,
                                             c.lowercase, c.min_frequency)

    def encode(self, loaded: list[str]) -> list[np.ndarray]:
        return self.tokenizer.encode(loaded)

    def make_augmenter(self, seed: int) -> TokenAugmenter | None:
        a = self.cfg.augment
        aug = TokenAugmenter(a.delete, a.swap, a.mask,
                             mask_id=self.tokenizer.tokenizer.token_to_id(MASK), seed=seed)
        return aug if aug.active else None

    def item(self, encoded: list[np.ndarray], i: int, augment: Any = None) -> np.ndarray:
        return encoded[i] if augment is None else augment(encoded[i])

    def collate(self, items: list[np.ndarray], augment: Any = None) -> dict[str, torch.Tensor]:
        """Pad to the longest text in the batch with [PAD] (id 0); the mask marks real tokens."""
        lengths = np.array([len(ids) for ids in items])
        width = int(lengths.max())
        input_ids = torch.zeros((len(items), width), dtype=torch.long)
        for row, ids in enumerate(items):
            input_ids[row, : len(ids)] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        mask = torch.from_numpy(np.arange(width)[None, :] < lengths[:, None])
        return {"input_ids": input_ids, "attention_mask": mask}

    def lengths(self, encoded: list[np.ndarray]) -> np.ndarray:
        return np.array([len(x) for x in encoded])

    def spec(self) -> dict[str, Any]:
        return {"vocab_size": self.tokenizer.vocab_size, "max_length": self.cfg.max_length}

    def _file(self) -> str:
        return f"tokenizers/{self.name}.json"

    def save_files(self, folder: Path) -> list[str]:
        (folder / "tokenizers").mkdir(exist_ok=True)
        self.tokenizer.save(folder / self._file())
        return [self._file()]

    def set_state(self, state: dict[str, Any], folder: Path | None) -> None:
        if folder is None:
            raise ValueError("a text feature loads its tokenizer from the run folder")
        self.tokenizer = TextTokenizer.load(folder / self._file(), self.cfg.max_length)


class PretrainedTextFeature(TextFeature):
    """A text column for a pretrained encoder: the model folder's own tokenizer (nothing to
    fit). The run keeps a copy of the tokenizer and the model's config.json in
    ``pretrained/NAME/``, so it loads without the original folder."""

    def __init__(self, cfg: TextInput, model_path: str):
        super().__init__(cfg)
        self.model_path = model_path
        self.run_folder: Path | None = None

    def fit(self, loaded: list[str], source: str) -> None:
        check_pretrained_folder(self.model_path)  # config, weights and tokenizer, up front
        self.tokenizer = PretrainedTokenizer(self.model_path, self.cfg.max_length)

    def make_augmenter(self, seed: int) -> TokenAugmenter | None:
        a = self.cfg.augment
        mask_id = self.tokenizer.tokenizer.mask_token_id
        if a.mask and mask_id is None:
            raise DataError(f"{self.model_path}: the tokenizer has no mask token; set "
                            f"inputs[].augment.mask to 0")
        aug = TokenAugmenter(a.delete, a.swap, a.mask, mask_id=mask_id or 0, seed=seed,
                             protect=self.tokenizer.tokenizer.all_special_ids)
        return aug if aug.active else None

    def spec(self) -> dict[str, Any]:
        if self.run_folder is not None:  # loading a saved run: weights come from the run
            return {"path": str(self.run_folder / self._dir()), "from_config_only": True}
        return {"path": self.model_path, "from_config_only": False}

    def _dir(self) -> str:
        return f"pretrained/{self.name}"

    def save_files(self, folder: Path) -> list[str]:
        from transformers import AutoConfig

        dest = folder / self._dir()
        self.tokenizer.save(dest)
        source = self.run_folder / self._dir() if self.run_folder else self.model_path
        AutoConfig.from_pretrained(str(source), local_files_only=True).save_pretrained(str(dest))
        return [p.relative_to(folder).as_posix() for p in sorted(dest.rglob("*")) if p.is_file()]

    def set_state(self, state: dict[str, Any], folder: Path | None) -> None:
        if folder is None:
            raise ValueError("a pretrained text feature loads its tokenizer from the run folder")
        self.run_folder = folder
        self.tokenizer = PretrainedTokenizer(folder / self._dir(), self.cfg.max_length)


# ------------------------------------------------------------------------------------ image
class ImageFeature(Feature):
    """Images (paths or arrays) as (C, H, W) arrays; per-channel mean/std from the training
    split, applied batch by batch (so the data stays in its compact uint8 form)."""

    kind = "image"
    cfg: ImageInput

    def __init__(self, cfg: ImageInput):
        super().__init__(cfg)
        self.color: str = cfg.color
        self.shape: list[int] | None = None  # (C, H, W) seen in training

    def load(self, values: Sequence[Any], source: str) -> np.ndarray:
        from dlforge.data.images import as_image_array

        size = tuple(self.cfg.size) if self.cfg.size else None
        if size is None and self.shape is not None:
            size = (self.shape[1], self.shape[2])  # predict at the trained size
        arr = as_image_array(values, size=size, channels=self.color, source=source)
        arr = np.ascontiguousarray(arr.transpose(0, 3, 1, 2))  # (N, C, H, W)
        if self.shape is not None and list(arr.shape[1:]) != self.shape:
            raise DataError(f"{source}: images are {tuple(arr.shape[1:])} (C, H, W) but the "
                            f"model was trained on {tuple(self.shape)}")
        if self.shape is not None and (arr.dtype == np.uint8) != (self.scale != 1.0):
            trained = "8-bit (0-255)" if self.scale != 1.0 else "floating-point"
            given = "8-bit (0-255)" if arr.dtype == np.uint8 else "floating-point"
            raise DataError(f"{source}: {given} images, but the model was trained on {trained} "
                            "images; convert them to the same kind")
        return arr

    def fit(self, loaded: np.ndarray, source: str) -> None:
        self.shape = list(loaded.shape[1:])
        self.color = "gray" if self.shape[0] == 1 else "rgb"
        self.scale = 1.0 / 255.0 if loaded.dtype == np.uint8 else 1.0
        x = loaded.astype(np.float64) * self.scale
        self.mean = x.mean(axis=(0, 2, 3)).tolist()
        std = x.std(axis=(0, 2, 3))
        self.std = np.where(std > 0, std, 1.0).tolist()

    def make_augmenter(self, seed: int) -> Any:
        from dlforge.data.images import ImageAugmenter

        a = self.cfg.augment
        aug = ImageAugmenter(crop=a.crop, flip=a.flip, rotate=a.rotate, noise=a.noise, seed=seed)
        return aug if aug.active else None

    def collate(self, items: list[np.ndarray], augment: Any = None) -> torch.Tensor:
        x = torch.from_numpy(np.stack(items)).float() * self.scale
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = (x - mean) / std
        return x if augment is None else augment(x)

    def spec(self) -> dict[str, Any]:
        assert self.shape is not None
        return {"channels": self.shape[0], "height": self.shape[1], "width": self.shape[2]}

    def state(self) -> dict[str, Any]:
        return {"shape": self.shape, "color": self.color, "scale": self.scale,
                "mean": self.mean, "std": self.std}

    def set_state(self, state: dict[str, Any], folder: Path | None) -> None:
        self.shape, self.color = state["shape"], state["color"]
        self.scale, self.mean, self.std = state["scale"], state["mean"], state["std"]


# ------------------------------------------------------------------------------------ audio
class AudioFeature(Feature):
    """Audio clips (paths, file bytes or waveforms) as fixed-length mono waveforms at the
    input's sample rate (:mod:`dlforge.data.audio`); each batch becomes a log-mel
    spectrogram (1, mels, frames) standardised per mel band with the training split's mean
    and std (:mod:`dlforge.data.spectrogram`). Waveforms are kept, not spectrograms, so the
    training split's shift and noise act on the sound itself, as a microphone would."""

    kind = "audio"
    cfg: AudioInput

    def __init__(self, cfg: AudioInput):
        super().__init__(cfg)
        self.samples = round(cfg.seconds * cfg.sample_rate)
        self._filterbank: torch.Tensor | None = None

    @property
    def filterbank(self) -> torch.Tensor:
        if self._filterbank is None:
            from dlforge.data.spectrogram import mel_filterbank

            c = self.cfg
            self._filterbank = torch.from_numpy(
                mel_filterbank(c.sample_rate, c.n_fft, c.n_mels).astype(np.float32))
        return self._filterbank

    def load(self, values: Sequence[Any], source: str) -> np.ndarray:
        from dlforge.data.audio import load_audio

        return load_audio(values, self.cfg.sample_rate, self.samples, source)  # (N, samples)

    def _log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        from dlforge.data.spectrogram import log_mel

        return log_mel(waves, self.cfg.n_fft, self.cfg.hop_length, self.filterbank)

    def fit(self, loaded: np.ndarray, source: str) -> None:
        total, square, count = np.zeros(self.cfg.n_mels), np.zeros(self.cfg.n_mels), 0
        with torch.no_grad():
            for i in range(0, len(loaded), 256):
                m = self._log_mel(torch.from_numpy(loaded[i:i + 256])).double()  # (b, M, T)
                total += m.sum(dim=(0, 2)).numpy()
                square += m.square().sum(dim=(0, 2)).numpy()
                count += m.shape[0] * m.shape[2]
        mean = total / count
        std = np.sqrt(np.maximum(square / count - mean**2, 0.0))
        self.mean = mean.tolist()
        self.std = np.where(std > 1e-6, std, 1.0).tolist()

    def make_augmenter(self, seed: int) -> Any:
        from dlforge.data.spectrogram import AudioAugmenter

        a = self.cfg.augment
        aug = AudioAugmenter(shift=round(a.shift * self.cfg.sample_rate), noise=a.noise,
                             time_mask=a.time_mask, freq_mask=a.freq_mask, masks=a.masks,
                             seed=seed)
        return aug if aug.active else None

    def collate(self, items: list[np.ndarray], augment: Any = None) -> torch.Tensor:
        waves = torch.from_numpy(np.stack(items))  # (B, samples)
        if augment is not None:
            waves = augment.waveform(waves)
        m = self._log_mel(waves)  # (B, mels, frames)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1)
        x = ((m - mean) / std).unsqueeze(1)  # (B, 1, mels, frames)
        return x if augment is None else augment.spectrogram(x)

    def spec(self) -> dict[str, Any]:
        from dlforge.data.spectrogram import n_frames

        return {"channels": 1, "height": self.cfg.n_mels,
                "width": n_frames(self.samples, self.cfg.hop_length)}

    def state(self) -> dict[str, Any]:
        return {"samples": self.samples, "mean": self.mean, "std": self.std}

    def set_state(self, state: dict[str, Any], folder: Path | None) -> None:
        self.mean, self.std = state["mean"], state["std"]

class SequenceFeature(Feature):
    """A numeric sequence per row (T steps of F channels): standardised per channel with the
    training split's statistics, the last ``max_length`` steps kept, padded per batch."""

    kind = "sequence"
    cfg: SequenceInput

    def load(self, values: Sequence[Any], source: str) -> list[np.ndarray]:
        out = [parse_sequence(v, i, self.name, source)[-self.cfg.max_length:]
               for i, v in enumerate(values)]
        widths = {a.shape[1] for a in out}
        want = getattr(self, "n_features", None)
        if len(widths) > 1 or (want is not None and widths != {want}):
            i = next(i for i, a in enumerate(out)
                     if a.shape[1] != (want or out[0].shape[1]))
            raise DataError(f"{source}: row {i + 1}, column {self.name!r}: {out[i].shape[1]} "
                            f"values per step, expected {want or out[0].shape[1]}")
        return out

    def fit(self, loaded: list[np.ndarray], source: str) -> None:
        allsteps = np.concatenate(loaded).astype(np.float64)
        self.n_features = int(allsteps.shape[1])
        self.mean = allsteps.mean(axis=0).tolist()
        std = allsteps.std(axis=0)
        self.std = np.where(std > 0, std, 1.0).tolist()

    def encode(self, loaded: list[np.ndarray]) -> list[np.ndarray]:
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return [(a - mean) / std for a in loaded]

    def make_augmenter(self, seed: int) -> SeriesAugmenter | None:
        a = self.cfg.augment
        aug = SeriesAugmenter(a.jitter, a.scaling, a.slice, seed=seed)
        return aug if aug.active else None

    def item(self, encoded: list[np.ndarray], i: int, augment: Any = None) -> np.ndarray:
        return encoded[i] if augment is None else augment(encoded[i])

    def collate(self, items: list[np.ndarray], augment: Any = None) -> dict[str, torch.Tensor]:
        lengths = np.array([len(a) for a in items])
        width = int(lengths.max())
        values = torch.zeros((len(items), width, items[0].shape[1]), dtype=torch.float32)
        for row, a in enumerate(items):
            values[row, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.float32))
        mask = torch.from_numpy(np.arange(width)[None, :] < lengths[:, None])
        return {"values": values, "attention_mask": mask}

    def lengths(self, encoded: list[np.ndarray]) -> np.ndarray:
        return np.array([len(a) for a in encoded])

    def spec(self) -> dict[str, Any]:
        return {"features": self.n_features, "max_length": self.cfg.max_length}

    def state(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "mean": self.mean, "std": self.std}

    def set_state(self, state: dict[str, Any], folder: Path | None) -> None:
        self.n_features, self.mean, self.std = state["n_features"], state["mean"], state["std"]


# ---------------------------------------------------------------------------------- numeric
def to_numbers(values: Sequence[Any], column: str, source: str) -> np.ndarray:
    """Numbers as float64 with NaN for missing values; anything else names its row."""
    arr = pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(
        dtype=np.float64)
    bad = np.flatnonzero(np.isnan(arr) & ~np.array([is_missing(v) or v == "" for v in values],
                                                   dtype=bool))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"{source}: row {i + 1}, column {column!r}: {values[i]!r} is not a "
                        "number")
    if np.isinf(arr).any():
        i = int(np.flatnonzero(np.isinf(arr))[0])
        raise DataError(f"{source}: row {i + 1}, column {column!r}: infinite value")
    return arr


class NumericFeature(Feature):
    """A number, standardised with the training split's mean and std; a missing value becomes
    0 (the mean) and its 0/1 indicator beside it says so. Encodes to (value, missing)."""

    kind = "numeric"
    cfg: NumericInput

    def load(self, values: Sequence[Any], source: str) -> np.ndarray:
        return to_numbers(values, self.name, source)

    def fit(self, loaded: np.ndarray, source: str) -> None:
        seen = loaded[~np.isnan(loaded)]
        if len(seen) == 0:
            raise DataError(f"{source}: column {self.name!r} has no values in the training rows")
        self.mean = float(seen.mean())
        std = float(seen.std())
        self.std = std if std > 0 else 1.0

    def encode(self, loaded: np.ndarray) -> np.ndarray:
        missing = np.isnan(loaded)
        z = np.where(missing, 0.0, (loaded - self.mean) / self.std)
        return np.stack([z, missing.astype(np.float64)], axis=1).astype(np.float32)

    def spec(self) -> dict[str, Any]:
        return {"width": 2}

    def state(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std}

    def set_state(self, state: dict[str, Any], folder: Path | None) -> None:
        self.mean, self.std = state["mean"], state["std"]


# --------------------------------------------------------------------------------- category
def category_key(v: Any) -> str:
    """One spelling per category, however the file was read: a whole number is the same
    category as an int (2), a float (2.0, which pandas makes of an int column with a gap) or
    a string ("2", "2.0")."""
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    text = str(v).strip()
    try:
        f = float(text)
    except ValueError:
        return text
    return str(int(f)) if f.is_integer() and "e" not in text.lower() else text


class CategoryFeature(Feature):
    """A categorical value: id 1.. for each value seen at least ``min_count`` times in the
    training split, id 0 for unseen or missing values."""

    kind = "category"
    cfg: CategoryInput

    def load(self, values: Sequence[Any], source: str) -> list[str | None]:
        return [None if is_missing(v) or v == "" else category_key(v) for v in values]

    def fit(self, loaded: list[str | None], source: str) -> None:
        counts = Counter(v for v in loaded if v is not None)
        kept = [v for v, n in counts.items() if n >= self.cfg.min_count]
        self.vocab = sorted(kept, key=lambda v: (-counts[v], v))
        self._index = {v: i + 1 for i, v in enumerate(self.vocab)}

    def encode(self, loaded: list[str | None]) -> np.ndarray:
        return np.array([self._index.get(v, 0) if v is not None else 0 for v in loaded],
                        dtype=np.int64)

    def collate(self, items: list[Any], augment: Any = None) -> torch.Tensor:
        return torch.tensor(np.asarray(items, dtype=np.int64))

    def spec(self) -> dict[str, Any]:
        n = len(self.vocab) + 1
        return {"categories": n, "dim": self.cfg.embedding_dim or min(32, (n + 1) // 2 + 1)}

    def state(self) -> dict[str, Any]:
        return {"vocab": self.vocab}

    def set_state(self, state: dict[str, Any], folder: Path | None) -> None:
        self.vocab = list(state["vocab"])
        self._index = {v: i + 1 for i, v in enumerate(self.vocab)}


# ---------------------------------------------------------------------------------- helpers
FEATURES: dict[str, type[Feature]] = {"text": TextFeature, "image": ImageFeature,
                                      "numeric": NumericFeature, "category": CategoryFeature,
                                      "sequence": SequenceFeature, "audio": AudioFeature}
FEATURES_FILE = "features.json"


def build_features(cfg: RunConfig) -> dict[str, Feature]:
    """One unfitted feature per input of ``cfg``, in the config's order."""
    if cfg.model.name == "pretrained":
        return {inp.name: PretrainedTextFeature(inp, cfg.model.path) if inp.type == "text"
                else FEATURES[inp.type](inp) for inp in cfg.inputs}
    return {inp.name: FEATURES[inp.type](inp) for inp in cfg.inputs}


def save_features(features: dict[str, Feature], folder: Path) -> list[str]:
    """Write ``features.json`` and each feature's files into ``folder``; returns the names."""
    files = [FEATURES_FILE]
    state = {name: {"type": f.kind, **f.state()} for name, f in features.items()}
    for f in features.values():
        files.extend(f.save_files(folder))
    with atomic_file(folder / FEATURES_FILE) as tmp:
        tmp.write_text(json.dumps(state, indent=2, ensure_ascii=False), encoding="utf-8")
    return files


def load_features(cfg: RunConfig, folder: Path) -> dict[str, Feature]:
    state = json.loads((folder / FEATURES_FILE).read_text(encoding="utf-8"))
    features = build_features(cfg)
    for name, f in features.items():
        f.set_state(state[name], folder)
    return features
