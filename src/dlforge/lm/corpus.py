"""A language model's data: the corpus, its tokenizer, the token array and the batches.

The corpus (UTF-8 text files, a table's text column, or strings) is tokenised once into a
memory-mapped uint16 (uint32 past 65,535 tokens) array, split 90/10 into train and val by
position, and batches are random contiguous blocks of ``block_size + 1`` tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from dlforge.data.io import FORMATS, _read_utf8, read_table, require_columns
from dlforge.errors import DataError

__all__ = ["BPETokenizer", "CharTokenizer", "TokenData", "load_tokenizer", "read_corpus",
           "train_tokenizer"]

VAL_FRACTION = 0.1
CHUNK_CHARS = 1 << 16  # the BPE tokenizer encodes the corpus in batches of ~64k-char pieces


# ---------------------------------------------------------------------------------- corpus
def read_corpus(source: str | Path | Sequence[str | Path], column: str | None = None) -> str:
    """The corpus as one string. ``source``: a text, a path, or a list of paths (or texts);
    files are read as UTF-8, a .csv/.tsv/.jsonl/.parquet file's ``column`` rows are joined
    with newlines. Several sources are joined with a newline."""
    items = [source] if isinstance(source, str | Path) else list(source)
    if not items:
        raise DataError("corpus: no text given; pass a text, a file or a list of files")
    parts = [_read_one(s, column) for s in items]
    text = "\n".join(parts)
    if not text.strip():
        raise DataError(f"corpus: {_describe(items)} holds no text (empty or whitespace only)")
    return text


def _read_one(item: str | Path, column: str | None) -> str:
    if isinstance(item, str) and not _is_path(item):
        return item  # a text, not a path
    p = Path(item)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if p.is_dir():
        raise DataError(f"{p}: is a folder; give text files (or a table with --column)")
    if p.suffix.lower() in FORMATS:
        if column is None:
            raise DataError(f"{p}: is a table; name its text column (--column / column=)")
        df = read_table(p)
        require_columns(df, {column: "--column"}, str(p))
        return "\n".join(str(v) for v in df[column].dropna())
    return _read_utf8(p)


def _is_path(s: str) -> bool:
    """A string is a file name when such a file exists, or when it is one short line ending
    in a text or table suffix (so a mistyped name is 'not found', not a 10-character corpus).
    Pass ``pathlib.Path`` objects to leave no doubt."""
    if "\n" in s or len(s) > 1024:
        return False
    try:
        if Path(s).is_file():
            return True
    except OSError:  # e.g. a name longer than the file system allows: a text
        return False
    return Path(s).suffix.lower() in {".txt", ".text", ".md", *FORMATS} and " " not in s


def _describe(items: list) -> str:
    names = [str(i) for i in items if isinstance(i, Path) or _is_path(str(i))]
    return ", ".join(names) if len(names) == len(items) else "the text"


# ---------------------------------------------------------------------------------- tokenizers
class CharTokenizer:
    """One token per character of the training corpus.

    Written here rather than with ``tokenizers``: it is a lookup table (sorted characters), and
    having it in hand lets a prompt with unseen characters fail naming them.
    """

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        self.chars = list(chars)
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str, source: str = "text") -> np.ndarray:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise DataError(f"{source}: characters not in the model's vocabulary: {shown}{more}; "
                            f"the char tokenizer knows the {len(self.chars)} characters of its "
                            "training corpus only. Remove them, or train with --tokenizer bpe")
        if len(text) > 4096 and max(map(ord, self.chars), default=0) < 1 << 16:
            # A corpus: one lookup over its code points instead of a dict lookup per character.
            table = np.zeros(1 << 16, dtype=np.int64)
            table[[ord(c) for c in self.chars]] = np.arange(len(self.chars))
            return table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
        return np.fromiter((self.index[c] for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict:
        return {"kind": "char", "chars": self.chars}


class BPETokenizer:
    """Byte-level BPE from Hugging Face ``tokenizers``: every text encodes (no unknown
    characters), and decoding gives back the text exactly (no normalisation)."""

    kind = "bpe"

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int) -> BPETokenizer:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(_chunks(text), trainer=trainer)
        return cls(tok)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str, source: str = "text") -> np.ndarray:
        encs = self.tokenizer.encode_batch(list(_chunks(text)), add_special_tokens=False)
        ids = [np.asarray(e.ids, dtype=np.int64) for e in encs]
        return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)


def _chunks(text: str) -> Iterator[str]:
    """Pieces of about CHUNK_CHARS characters, cut after a newline where there is one."""
    i = 0
    while i < len(text):
        j = min(len(text), i + CHUNK_CHARS)
        if j < len(text):
            nl = text.rfind("\n", i, j)
            j = nl + 1 if nl > i else j
        yield text[i:j]
        i = j


def train_tokenizer(text: str, kind: str = "char",
                    vocab_size: int = 2000) -> CharTokenizer | BPETokenizer:
    if kind == "char":
        return CharTokenizer.train(text)
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size)
    raise DataError(f"tokenizer: expected char or bpe, got {kind!r}")


def save_tokenizer(tok: CharTokenizer | BPETokenizer, path: Path) -> None:
    """``tokenizer.json``: {"kind": "char", "chars": [...]}, or the Hugging Face file."""
    if isinstance(tok, CharTokenizer):
        path.write_text(json.dumps(tok.to_dict(), ensure_ascii=False), encoding="utf-8")
    else:
        tok.tokenizer.save(str(path))


def load_tokenizer(path: Path) -> CharTokenizer | BPETokenizer:
    d = json.loads(path.read_text(encoding="utf-8"))
    if d.get("kind") == "char":
        return CharTokenizer(d["chars"])
    return BPETokenizer(Tokenizer.from_str(json.dumps(d)))


# ---------------------------------------------------------------------------------- tokens
class TokenData:
    """The corpus as tokens in two memory-mapped files (``train.bin``, ``val.bin`` under
    ``folder``), and random contiguous blocks from them."""

    def __init__(self, folder: Path, block_size: int):
        meta = json.loads((folder / "tokens.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        self.train = np.memmap(folder / "train.bin", dtype=dtype, mode="r")
        self.val = np.memmap(folder / "val.bin", dtype=dtype, mode="r")
        self.block_size = block_size
        self.chars_per_token = meta["chars_per_token"]

    @staticmethod
    def write(tokens: np.ndarray, vocab_size: int, n_chars: int, folder: Path,
              block_size: int) -> None:
        """Split ``tokens`` 90/10 and write both parts; a corpus too small for one block in
        the validation part is a DataError."""
        n = len(tokens)
        n_val = int(round(n * VAL_FRACTION))
        need = block_size + 1
        if n_val < need:
            raise DataError(
                f"corpus: {n:,} tokens is too small for block_size {block_size}: the "
                f"{VAL_FRACTION:.0%} validation part needs at least {need} tokens (a block and "
                f"its next token), so the corpus needs at least "
                f"{int(np.ceil(need / VAL_FRACTION)):,}. Give more text or lower --block-size")
        dtype = np.uint16 if vocab_size <= 1 << 16 else np.uint32
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in (("train.bin", tokens[: n - n_val]), ("val.bin", tokens[n - n_val:])):
            mm = np.memmap(folder / name, dtype=dtype, mode="w+", shape=(len(part),))
            mm[:] = part
            mm.flush()
            del mm
        meta = {"dtype": np.dtype(dtype).name, "tokens": n, "train_tokens": n - n_val,
                "val_tokens": n_val, "chars_per_token": n_chars / max(n, 1)}
        (folder / "tokens.json").write_text(json.dumps(meta), encoding="utf-8")

    def batch(self, split: str, batch_size: int,
              gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y), each (B, T) int64: B random windows of the split and the same shifted by
        one token."""
        data = self.train if split == "train" else self.val
        T = self.block_size
        ix = torch.randint(len(data) - T, (batch_size,), generator=gen).numpy()
        rows = np.stack([data[i:i + T + 1] for i in ix]).astype(np.int64)  # (B, T + 1)
        t = torch.from_numpy(rows)
        return t[:, :-1], t[:, 1:]

    def records(self) -> int:
        """How many disjoint records (a window and its next token) the training part holds:
        the private unit of DP training (``dlforge.lm.dp``)."""
        return len(self.train) // (self.block_size + 1)

    def record_batch(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) for the given records: record i is tokens [i·(T+1), (i+1)·(T+1)) of the
        training part."""
        T = self.block_size
        rows = np.stack([self.train[i * (T + 1):(i + 1) * (T + 1)] for i in index]) \
            if len(index) else np.zeros((0, T + 1))
        t = torch.from_numpy(rows.astype(np.int64))
        return t[:, :-1], t[:, 1:]

