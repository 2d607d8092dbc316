"""Fitted feature state: the label map and the tokenizer. Both save to JSON in the run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from dlforge._atomic import atomic_file
from dlforge.data.clean import is_missing
from dlforge.errors import DataError

__all__ = ["MASK", "PAD", "SPECIAL_TOKENS", "UNK", "LabelEncoder", "NumericTarget", "TextTokenizer",
           "fit_target", "load_target"]

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP, MASK]  # [PAD] is id 0, [UNK] id 1


def _py(v: Any) -> Any:
    """NumPy scalars to plain Python, so labels round-trip through JSON."""
    return v.item() if isinstance(v, np.generic) else v


class LabelEncoder:
    """Maps labels to targets. ``kind`` is binary, category or multilabel."""

    def __init__(self, kind: str, classes: list[Any]):
        self.kind = kind
        self.classes = list(classes)
        self._index = {c: i for i, c in enumerate(self.classes)}

    # ---------------------------------------------------------------- fitting
    @classmethod
    def fit(cls, values: Sequence[Any], kind: str = "auto", separator: str = "|",
            source: str = "labels") -> LabelEncoder:
        values = list(values)
        listlike = [isinstance(v, list | tuple | np.ndarray) for v in values]
        if kind == "auto":
            kind = "multilabel" if any(listlike) else "single"
        if kind == "multilabel":
            sets = [_as_label_list(v, separator) for v in values]
            classes = sorted({_py(x) for s in sets for x in s}, key=_sort_key)
            if len(classes) < 2:
                raise DataError(f"{source}: multi-label output needs at least 2 distinct labels, "
                                f"found {len(classes)}: {classes}")
            return cls("multilabel", classes)
        if any(listlike):
            raise DataError(f"{source}: labels are lists but output.type is {kind!r}; "
                            "use output.type: multilabel")
        classes = sorted({_py(v) for v in values}, key=_sort_key)
        if len(classes) < 2:
            raise DataError(f"{source}: a single class in the labels ({classes[0]!r}); "
                            "a classifier needs at least 2 classes, not one class")
        if kind == "binary" and len(classes) != 2:
            raise DataError(f"{source}: output.type is binary but there are {len(classes)} "
                            f"classes: {_preview(classes)}")
        if kind == "single":
            kind = "binary" if len(classes) == 2 else "category"
        return cls(kind, classes)

    # ---------------------------------------------------------------- use
    @property
    def n_outputs(self) -> int:
        return 1 if self.kind == "binary" else len(self.classes)

    def encode(self, values: Sequence[Any], separator: str = "|",
               source: str = "labels") -> np.ndarray:
        if self.kind == "multilabel":
            out = np.zeros((len(values), len(self.classes)), dtype=np.float32)
            for i, v in enumerate(values):
                for lab in _as_label_list(v, separator):
                    out[i, self._lookup(lab, source, i)] = 1.0
            return out
        return np.array([self._lookup(v, source, i) for i, v in enumerate(values)],
                        dtype=np.int64)

    def _lookup(self, value: Any, source: str, row: int) -> int:
        value = _py(value)
        idx = self._index.get(value)
        if idx is None and isinstance(value, str):
            # Labels read back from CSV may be strings of what were ints when training.
            for c, i in self._index.items():
                if str(c) == value:
                    idx = i
                    break
        if idx is None:
            raise DataError(f"{source}: row {row + 1}: label {value!r} was not seen in training; "
                            f"known labels: {_preview(self.classes)}")
        return idx

    def decode(self, indices: np.ndarray) -> list[Any]:
        if self.kind == "multilabel":
            return [[self.classes[j] for j in np.flatnonzero(row)] for row in indices]
        return [self.classes[int(i)] for i in indices]

    # ---------------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "classes": self.classes}

    def save(self, path: Path) -> None:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False),
                           encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> LabelEncoder:
        d = json.loads(path.read_text(encoding="utf-8"))
        return cls(d["kind"], d["classes"])


class NumericTarget:
    """A numeric output (regression): standardised with the training split's mean and std for
    training; ``decode`` turns model outputs back into the column's units."""

    kind = "numeric"
    classes: list[Any] = []
    n_outputs = 1

    def __init__(self, mean: float, std: float):
        self.mean, self.std = float(mean), float(std)

    @classmethod
    def fit(cls, values: Sequence[Any], source: str = "labels") -> NumericTarget:
        y = _numbers(values, source)
        return cls(y.mean(), y.std() if y.std() > 0 else 1.0)

    def encode(self, values: Sequence[Any], separator: str = "|",
               source: str = "labels") -> np.ndarray:
        return ((_numbers(values, source) - self.mean) / self.std).astype(np.float32)

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        return np.asarray(outputs, dtype=np.float64).reshape(-1) * self.std + self.mean

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": self.mean, "std": self.std}

    def save(self, path: Path) -> None:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")


def _numbers(values: Sequence[Any], source: str) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except (TypeError, ValueError):
            raise DataError(f"{source}: row {i + 1}: {v!r} is not a number (the output is "
                            "numeric)") from None
        if not np.isfinite(out[i]):
            raise DataError(f"{source}: row {i + 1}: {v!r} is not a finite number")
    return out


def fit_target(values: Sequence[Any], kind: str = "auto", separator: str = "|",
               source: str = "labels") -> LabelEncoder | NumericTarget:
    """The label map (classification) or scaler (``numeric``) for an output column. ``auto``
    means numeric for a column of numbers that are not all integers, else classification."""
    values = list(values)
    if kind == "auto":
        nums = [v for v in values if isinstance(v, float | np.floating) and not is_missing(v)]
        if nums and len(nums) == len(values) and any(not float(v).is_integer() for v in nums):
            kind = "numeric"
    if kind == "numeric":
        return NumericTarget.fit(values, source)
    return LabelEncoder.fit(values, kind, separator, source)


def load_target(path: Path) -> LabelEncoder | NumericTarget:
    d = json.loads(path.read_text(encoding="utf-8"))
    if d["kind"] == "numeric":
        return NumericTarget(d["mean"], d["std"])
    return LabelEncoder(d["kind"], d["classes"])


def _sort_key(v: Any) -> tuple[int, Any]:
    return (0, v) if isinstance(v, int | float) and not isinstance(v, bool) else (1, str(v))


def _preview(items: list[Any], n: int = 10) -> str:
    shown = ", ".join(map(repr, items[:n]))
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def _as_label_list(v: Any, separator: str) -> list[Any]:
    if isinstance(v, list | tuple | np.ndarray):
        return [_py(x) for x in v]
    if is_missing(v):
        return []
    if isinstance(v, str):
        return [s.strip() for s in v.split(separator) if s.strip()]
    return [_py(v)]


class TextTokenizer:
    """A Hugging Face ``tokenizers`` BPE or WordPiece vocabulary, trained on the training split."""

    def __init__(self, tokenizer: Tokenizer, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.tokenizer.no_padding()  # padding is dynamic, per batch (see data.loader)
        self.tokenizer.enable_truncation(max_length)

    @classmethod
    def train(cls, texts: Sequence[str], kind: str = "bpe", vocab_size: int = 10_000,
              max_length: int = 128, lowercase: bool = True,
              min_frequency: int = 2) -> TextTokenizer:
        norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
        if kind == "bpe":
            tok = Tokenizer(models.BPE(unk_token=UNK))
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        elif kind == "wordpiece":
            tok = Tokenizer(models.WordPiece(unk_token=UNK))
            tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
            tok.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(
                vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
                show_progress=False)
        else:
            raise DataError(f"unknown tokenizer {kind!r}; choose bpe or wordpiece")
        tok.normalizer = normalizers.Sequence(norm)
        tok.train_from_iterator(list(texts), trainer=trainer, length=len(texts))
        return cls(tok, max_length)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids per text, truncated to max_length; an empty text becomes one [UNK]."""
        unk = self.tokenizer.token_to_id(UNK)
        encs = self.tokenizer.encode_batch(list(texts))
        return [np.asarray(e.ids if e.ids else [unk], dtype=np.int64) for e in encs]

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: Path, max_length: int) -> TextTokenizer:
        return cls(Tokenizer.from_file(str(path)), max_length)
