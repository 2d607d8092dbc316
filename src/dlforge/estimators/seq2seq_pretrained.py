"""A pretrained encoder-decoder from a local Hugging Face folder (T5, BART, Marian, ...:
whatever ``AutoModelForSeq2SeqLM`` loads) behind the calls :class:`~dlforge.Seq2Seq` makes of
a model: ``Seq2Seq(model="models/t5-small").fit(sources, targets)``.

The folder's own tokenizer encodes both sides; training is the same teacher forcing with label
smoothing as the Transformer's (:mod:`dlforge.train.seq2seq`), on the logits of the model's
forward pass; decoding is the model's ``generate`` (greedy or beam search, its KV cache). The
fine-tuned model and its tokenizer are saved in the run's ``pretrained/`` folder
(``save_pretrained``: safetensors). Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dlforge.config.seq2seq import Seq2SeqConfig
from dlforge.data.pretrained import check_pretrained_folder, one_line, quiet_progress
from dlforge.errors import ConfigError, DataError
from dlforge.train.seq2seq import PairBatch

__all__ = ["PretrainedBackend"]

DEFAULT_MAX = 512  # source tokens, when neither the tokenizer nor the model says


class PretrainedBackend:
    kind = "pretrained"

    def __init__(self, model: Any, tokenizer: Any, max_source: int, max_new_tokens: int):
        self.model, self.tok = model, tokenizer
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.eos = tokenizer.eos_token_id
        start = model.config.decoder_start_token_id
        self.start = start if start is not None else self.pad
        self.max_source, self.max_new_tokens = max_source, max_new_tokens

    @staticmethod
    def _open(folder: Path, shown: str) -> tuple[Any, Any]:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        try:
            with quiet_progress():
                tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
                model = AutoModelForSeq2SeqLM.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ConfigError(f"{shown}: not a sequence-to-sequence model folder "
                              f"(AutoModelForSeq2SeqLM: {one_line(err)})") from None
        return model, tok

    @classmethod
    def build(cls, cfg: Seq2SeqConfig, sources: list[str], targets: list[str],
              say: Any) -> tuple[PretrainedBackend, dict[str, Any]]:
        folder = check_pretrained_folder(cfg.model)
        model, tok = cls._open(folder, cfg.model)
        limit = cfg.max_length or _model_limit(model, tok)
        backend = cls(model, tok, limit, 1)
        src_len = [len(r) for r in backend.encode_sources(sources)]
        tgt_len = [len(r) for r in backend._targets(targets)]
        if max(src_len) > limit:
            i = src_len.index(max(src_len))
            raise DataError(f"pair {i}: its source is {src_len[i]} tokens, longer than the "
                            f"{limit} this model takes (max_length); shorten it")
        longest = max(tgt_len)
        backend.max_new_tokens = cfg.max_target_length or longest + max(2, longest // 4)
        say(f"pretrained: {cfg.model} ({type(model).__name__}, "
            f"{backend.parameters():,} parameters); longest source {max(src_len)} tokens, "
            f"target {longest}")
        report = {"vocab_size": {"source": len(tok), "target": len(tok)}, "shared_vocab": True,
                  "longest": {"source": max(src_len), "target": longest},
                  "max_length": limit, "max_target_length": backend.max_new_tokens}
        return backend, report

    # ---------------------------------------------------------------- what Seq2Seq asks
    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        return [list(r) for r in self.tok(list(texts), truncation=False)["input_ids"]]

    def _targets(self, texts: list[str]) -> list[list[int]]:
        rows = [list(r) for r in self.tok(text_target=list(texts),
                                          truncation=False)["input_ids"]]
        if self.eos is not None:  # every target ends in the end token, which generation stops on
            rows = [r if r and r[-1] == self.eos else [*r, self.eos] for r in rows]
        return rows

    def training_rows(self, sources: list[str], targets: list[str]
                      ) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
        labels = self._targets(targets)
        return self.encode_sources(sources), [[self.start, *r[:-1]] for r in labels], labels

    def forward(self, b: PairBatch) -> torch.Tensor:
        return self.model(input_ids=b.src, attention_mask=b.src_mask.long(),
                          decoder_input_ids=b.tgt_in, use_cache=False).logits

    def generate(self, src: torch.Tensor, src_mask: torch.Tensor, beam_size: int,
                 length_penalty: float, max_new_tokens: int, use_cache: bool,
                 decoding: Any = None) -> list[str]:
        if decoding is not None:
            raise ConfigError("decoding: a fine-tuned pretrained model decodes with its own "
                              "generate (transformers); another decoding state is only for a "
                              "from-scratch Transformer run")
        out = self.model.generate(input_ids=src, attention_mask=src_mask.long(),
                                  num_beams=beam_size, length_penalty=length_penalty,
                                  max_new_tokens=max_new_tokens, do_sample=False,
                                  early_stopping=beam_size > 1, use_cache=use_cache,
                                  decoder_start_token_id=self.start, pad_token_id=self.pad,
                                  eos_token_id=self.eos)
        return [t.strip() for t in self.tok.batch_decode(out, skip_special_tokens=True)]

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def save(self, folder: Path) -> None:
        with quiet_progress():
            self.model.save_pretrained(folder / "pretrained", safe_serialization=True)
            self.tok.save_pretrained(folder / "pretrained")

    @classmethod
    def load(cls, folder: Path, cfg: Seq2SeqConfig, device: torch.device) -> PretrainedBackend:
        model, tok = cls._open(folder, str(folder))
        return cls(model.to(device).eval(), tok, cfg.max_length or _model_limit(model, tok),
                   cfg.max_target_length or DEFAULT_MAX)


def _model_limit(model: Any, tok: Any) -> int:
    """The most source tokens the model takes: its tokenizer's limit, else its position
    table's, else 512 (T5's relative positions have no hard limit)."""
    for v in (getattr(tok, "model_max_length", None),
              getattr(model.config, "max_position_embeddings", None),
              getattr(model.config, "n_positions", None)):
        if isinstance(v, int) and 0 < v < 1_000_000:
            return v
    return DEFAULT_MAX
