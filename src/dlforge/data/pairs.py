"""Sequence-to-sequence data: (source, target) text pairs, their checks, and their vocabulary.

Pairs come from two columns of a table (``read_pairs``) or from two lists (``check_pairs``);
either way every problem is one line naming the file or list, the column or index, and the
value. :class:`PairTokenizer` is a byte-level BPE vocabulary (Hugging Face ``tokenizers``)
with three special tokens, ``[PAD]`` = 0, ``[BOS]`` = 1, ``[EOS]`` = 2; it is trained on the
training split only, on both sides (a shared vocabulary) or on one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dlforge.data.io import read_table, require_columns
from dlforge.errors import DataError

__all__ = ["BOS", "EOS", "PAD", "PairTokenizer", "check_pairs", "read_pairs", "split_pairs"]

PAD, BOS, EOS = 0, 1, 2
SPECIAL = ["[PAD]", "[BOS]", "[EOS]"]


def read_pairs(path: str | Path, source: str, target: str) -> tuple[list[str], list[str],
                                                                    dict[str, int]]:
    """The (source, target) columns of a table as two lists of strings, and what was dropped:
    rows whose source or target is missing or blank (counted, never silent). A target column
    with no text at all, or a table left without pairs, is a DataError naming the column."""
    df = read_table(path)
    require_columns(df, {source: "--source", target: "--target"}, str(path))
    return _pairs_from_columns(df[source], df[target], str(path), source, target)


def _pairs_from_columns(src: pd.Series, tgt: pd.Series, where: str, source: str,
                        target: str) -> tuple[list[str], list[str], dict[str, int]]:
    def text(col: pd.Series) -> pd.Series:
        return col.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                       else str(v))

    s, t = text(src), text(tgt)
    if not t.str.strip().astype(bool).any():
        raise DataError(f"{where}: target column {target!r} is empty ({len(t)} rows, none with "
                        "text); name the column that holds the outputs with --target")
    if not s.str.strip().astype(bool).any():
        raise DataError(f"{where}: source column {source!r} is empty ({len(s)} rows, none with "
                        "text); name the column that holds the inputs with --source")
    keep = s.str.strip().astype(bool) & t.str.strip().astype(bool)
    dropped = {"missing_source": int((~s.str.strip().astype(bool)).sum()),
               "missing_target": int((~t.str.strip().astype(bool)).sum())}
    if not keep.any():
        raise DataError(f"{where}: no row has both a source ({source!r}) and a target "
                        f"({target!r})")
    return s[keep].tolist(), t[keep].tolist(), dropped


def check_pairs(sources: Any, targets: Any, where: str = "fit") -> tuple[list[str], list[str],
                                                                          dict[str, int]]:
    """Two lists (or Series) of strings as pairs, checked like a table's columns."""
    sources, targets = _texts(sources, "sources"), _texts(targets, "targets")
    if len(sources) != len(targets):
        raise DataError(f"{where}: {len(sources)} sources but {len(targets)} targets; give one "
                        "target per source")
    return _pairs_from_columns(pd.Series(sources, dtype=object), pd.Series(targets, dtype=object),
                               where, "sources", "targets")


def _texts(values: Any, name: str) -> list[Any]:
    if isinstance(values, str | bytes):
        raise DataError(f"{name}: expected a list of strings, got one string")
    try:
        out = list(values)
    except TypeError:
        raise DataError(f"{name}: expected a list of strings, got "
                        f"{type(values).__name__}") from None
    for i, v in enumerate(out):
        if v is not None and not isinstance(v, str) and not (isinstance(v, float) and v != v):
            raise DataError(f"{name}[{i}]: expected a string, got {type(v).__name__} ({v!r})")
    return out


def split_pairs(n: int, validation: float, test: float, seed: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled row indices for training, validation and test (at least one training row,
    and one validation row when ``validation`` > 0 and there are two rows or more)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test))
    n_val = int(round(n * validation))
    if validation > 0 and n_val == 0 and n - n_test >= 2:
        n_val = 1
    if n - n_test - n_val < 1:
        raise DataError(f"{n} pair(s): too few to split into training, validation "
                        f"({validation:g}) and test ({test:g}) rows; give more pairs")
    test_idx, val_idx = order[:n_test], order[n_test:n_test + n_val]
    return order[n_test + n_val:], val_idx, test_idx


class PairTokenizer:
    """Byte-level BPE: every text encodes (no unknown characters) and decodes back exactly."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: Sequence[str], vocab_size: int) -> PairTokenizer:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                      special_tokens=SPECIAL,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(list(texts),
                                                           add_special_tokens=False)]

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        return self.tokenizer.decode_batch([[int(i) for i in row if int(i) > EOS]
                                            for row in ids], skip_special_tokens=True)

    def save(self, path: Path) -> None:
        self.tokenizer.save(str(path))

    @classmethod
    def load(cls, path: Path) -> PairTokenizer:
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception
            raise DataError(f"{path}: not a readable tokenizer ({err})") from None
