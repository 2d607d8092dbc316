"""The tokenizer of a local Hugging Face model folder, and the check that a folder is one.

Data-side half of fine-tuning a pretrained encoder (the model side is
:mod:`dlforge.models.pretrained`): the folder's own ``AutoTokenizer`` behind our
``encode`` / ``save`` interface. Nothing is ever downloaded (``local_files_only=True``), and
``transformers`` is imported only when a tokenizer is loaded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlforge.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["PICKLE_FILES", "SAFETENSORS_FILES", "TOKENIZER_FILES", "PretrainedTokenizer",
           "check_pretrained_folder", "one_line", "quiet_progress"]

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
                   "sentencepiece.bpe.model")


def check_pretrained_folder(path: str | os.PathLike[str], *, config: bool = True,
                            weights: bool = True, tokenizer: bool = True) -> Path:
    """Resolve ``path`` and check it is a Hugging Face model folder; ConfigError if not.

    ``config``, ``weights`` and ``tokenizer`` choose which parts are required (a saved run's
    encoder folder, for instance, holds config and tokenizer but its weights live elsewhere).
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ConfigError(f"{path}: pretrained model folder not found")
    if not folder.is_dir():
        raise ConfigError(f"{path}: is a file; expected a Hugging Face model folder")
    if config and not (folder / "config.json").is_file():
        raise ConfigError(f"{path}: not a Hugging Face model folder: config.json is missing")
    if weights and not any((folder / f).is_file() for f in SAFETENSORS_FILES + PICKLE_FILES):
        raise ConfigError(
            f"{path}: no model weights (model.safetensors or pytorch_model.bin) in the folder")
    if tokenizer and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)}) in the "
                          "folder; save one beside the model with tokenizer.save_pretrained(dir)")
    return folder.resolve()


def one_line(err: BaseException) -> str:
    """The first non-empty line of an exception message (messages from transformers run long)."""
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' per-load progress bars ("Loading weights ...") and restore the setting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class PretrainedTokenizer:
    """The folder's own tokenizer (``AutoTokenizer``), with our ``encode`` / ``save`` interface.

    ``encode`` adds the model's special tokens ([CLS] ... [SEP] for BERT) and truncates to
    ``max_length``; it does not pad. Batches are padded elsewhere: pad with ``pad_value`` (the
    model's pad id). ``PretrainedEncoder`` also overwrites every masked position with its own pad
    id, so batches padded with 0 by our text collate (``dlforge.data.inputs``) are safe too.
    """

    def __init__(self, path: str | os.PathLike[str], max_length: int):
        folder = check_pretrained_folder(path, config=False, weights=False)
        from transformers import AutoTokenizer

        try:
            with quiet_progress():
                tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # any failure here comes from the user's folder
            raise ConfigError(f"{path}: could not load the tokenizer: {one_line(e)}") from e
        self.path = folder
        self.tokenizer: PreTrainedTokenizerBase = tok
        n_special = tok.num_special_tokens_to_add(pair=False)
        if max_length < n_special + 1:
            raise ConfigError(f"max_length={max_length} leaves no room for text: the tokenizer in "
                              f"{path} adds {n_special} special tokens")
        model_max = tok.model_max_length
        if model_max is not None and model_max < 1_000_000 and max_length > model_max:
            raise ConfigError(f"max_length={max_length} is longer than the {model_max} tokens the "
                              f"model in {path} accepts")
        self.max_length = max_length
        self.pad_value: int = self.pad_id

    @classmethod
    def load(cls, path: str | os.PathLike[str], max_length: int) -> PretrainedTokenizer:
        """Same as the constructor; mirrors ``TextTokenizer.load``."""
        return cls(path, max_length)

    @property
    def pad_id(self) -> int:
        """Id of the pad token (0 when the tokenizer has none, as GPT-2's)."""
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else 0

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return len(self.tokenizer)

    def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
        """int64 token ids per text, special tokens added, truncated to max_length, not padded."""
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise DataError(f"text #{i} is {type(text).__name__} ({text!r}); expected a string")
        if not texts:
            return []
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=True,
                             max_length=self.max_length, padding=False,
                             return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        unk = self.tokenizer.unk_token_id
        empty = [unk if unk is not None else self.pad_id]
        return [np.asarray(row if row else empty, dtype=np.int64) for row in ids]

    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write the tokenizer files into ``folder`` (created if needed) via ``save_pretrained``."""
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(str(folder))
