"""``PretrainedLM``: a pretrained causal language model (a local Hugging Face folder, or a
dlforge fine-tune of one): generate, chat, score; and fine-tune it (``PretrainedLM.finetune``,
also ``LanguageModel.finetune``).

>>> lm = PretrainedLM.finetune("models/smollm2", "chats.jsonl", out="runs/support")
>>> print(lm.chat([{"role": "user", "content": "Where is my order?"}], max_new_tokens=60))
>>> PretrainedLM.load("models/smollm2").generate("The capital of France is", temperature=0)

Decoding runs the model with its key/value cache, one token per step after the prompt, and
samples with the same rules as dlforge's own GPT (temperature, top-k, top-p, repetition
penalty, a stop string, a seed). A prompt longer than the model's context is an error naming
both numbers, never silently cut; a generation that reaches the context ends there
(``finish_reason`` ``"length"``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dlforge.config.lm import FinetuneConfig, finetune_config
from dlforge.errors import ConfigError, DataError
from dlforge.lm.generate import _pick, check_sampling, stream_text
from dlforge.lm.hf_batch import HFDecodeBatcher

__all__ = ["PretrainedLM"]

Messages = Sequence[dict[str, str]]


class PretrainedLM:
    """A loaded causal LM and its tokenizer (see the module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, info: dict[str, Any]):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        cfg = model.config
        self.context = int(getattr(cfg, "max_position_embeddings", None)
                           or getattr(cfg, "n_positions", 2048))
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        eos |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None
                   else [])
        self.eos = eos

    # ------------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> PretrainedLM:
        """A model folder (``config.json`` + safetensors + tokenizer) or a fine-tune run."""
        from dlforge.lm.finetune import load_finetuned

        model, tok, info = load_finetuned(Path(path), device=device)
        return cls(model, tok, info)

    @classmethod
    def finetune(cls, model: str | Path, data: str | Path, out: str | Path,
                 val_data: str | Path | None = None, chat_template: str | Path | None = None,
                 overwrite: bool = False, resume: bool = False, verbose: int = 1,
                 **settings: Any) -> PretrainedLM:
        """Fine-tune the causal LM in folder ``model`` on ``data`` (JSONL / CSV / Parquet of
        messages, prompt/completion or text; or a .txt) into the run ``out``, and load it.
        ``settings`` are :class:`~dlforge.config.lm.FinetuneConfig`'s (``lora=False`` for a
        full fine-tune, ``lora_r``, ``epochs``, ``lr``, ``packing``, ...)."""
        from dlforge.lm.finetune import finetune

        cfg = finetune_config(settings) if settings else FinetuneConfig()
        lm_metrics = finetune(model, data, out, cfg, val_data=val_data,
                              chat_template=chat_template, overwrite=overwrite,
                              resume=resume, verbose=verbose)
        lm = cls.load(out)
        lm.metrics_ = lm_metrics
        return lm

    # ---------------------------------------------------------------------------- decoding
    def encode_prompt(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        if not ids:
            bos = self.tokenizer.bos_token_id
            ids = [bos if bos is not None else next(iter(self.eos), 0)]
        return ids

    def render_chat(self, messages: Messages) -> str:
        """The conversation as the model's chat template renders it, with the assistant's
        turn opened (what the model continues)."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("this model has no chat template, so it cannot chat; use a "
                              "plain completion (generate / /v1/completions), or fine-tune "
                              "with --chat-template FILE")
        for j, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise DataError(f"messages[{j}]: needs a role and a content")
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False,
                                                  add_generation_prompt=True)

    def check_length(self, n_prompt: int, max_new_tokens: int) -> None:
        if n_prompt >= self.context:
            raise ConfigError(f"the prompt is {n_prompt} tokens; the model's context is "
                              f"{self.context} (leave room for the answer)")
        if max_new_tokens > self.context:
            raise ConfigError(f"max_new_tokens {max_new_tokens} is above the model's context "
                              f"of {self.context} tokens")

    def tokens(self, prompt: Sequence[int], max_new_tokens: int = 200,
               temperature: float = 0.8, top_k: int | None = None, top_p: float | None = None,
               repetition_penalty: float = 1.0, seed: int | None = None) -> Iterator[int]:
        """Yield new token ids after ``prompt`` until an end-of-text token (not yielded),
        ``max_new_tokens`` or the end of the context."""
        check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
        self.check_length(len(prompt), max_new_tokens)
        from transformers import DynamicCache

        device = next(self.model.parameters()).device
        gen = torch.Generator(device=device)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        cache = DynamicCache(config=self.model.config)
        ids = torch.tensor([list(prompt)], device=device)
        seen = set(prompt)
        limit = min(max_new_tokens, self.context - len(prompt))
        for _ in range(limit):
            with torch.inference_mode():
                logits = self.model(input_ids=ids, cache=cache, use_cache=True
                                    ).logits[0, -1]
                seen_t = (torch.tensor(sorted(seen), device=device)
                          if repetition_penalty != 1.0 else None)
                nxt = _pick(logits, seen_t, temperature, top_k, top_p, repetition_penalty, gen)
            if nxt in self.eos:
                return
            yield nxt
            seen.add(nxt)
            ids = torch.tensor([[nxt]], device=device)

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def decode_batcher(self, max_batch: int = 16) -> HFDecodeBatcher:
        """A :class:`~dlforge.lm.hf_batch.HFDecodeBatcher` of this model (not started): many
        generations decoded together (continuous batching; the server runs one)."""
        return HFDecodeBatcher(self.model, self.eos, self.context, max_batch)

    def text_stream(self, ids: Sequence[int], max_new_tokens: int = 200,
                    stop: str | Sequence[str] | None = None, details: dict | None = None,
                    batcher: HFDecodeBatcher | None = None, **sampling: Any) -> Iterator[str]:
        """The text after the token ids ``ids``, piece by piece: decoded here, or in
        ``batcher`` (a running :meth:`decode_batcher` of this model) with the generations it
        runs. ``details`` gets ``prompt_tokens`` now, ``generated_tokens`` and
        ``finish_reason`` (``"stop"``: a stop string or the end of the text) at the end."""
        if details is not None:
            details["prompt_tokens"] = len(ids)
        if batcher is not None:
            self.check_length(len(ids), max_new_tokens)
            toks: Iterator[int] = batcher.submit(ids, max_new_tokens, **sampling)
        else:
            toks = _Ended(self.tokens(ids, max_new_tokens, **sampling),
                          min(max_new_tokens, self.context - len(ids)))
        return stream_text(self._decode, toks, stop, details)

    def generate_stream(self, prompt: str, max_new_tokens: int = 200,
                        stop: str | Sequence[str] | None = None, details: dict | None = None,
                        batcher: HFDecodeBatcher | None = None, **sampling: Any
                        ) -> Iterator[str]:
        """The continuation of ``prompt``, piece by piece."""
        return self.text_stream(self.encode_prompt(prompt), max_new_tokens, stop, details,
                                batcher, **sampling)

    def generate(self, prompt: str, max_new_tokens: int = 200, stop: str | None = None,
                 **sampling: Any) -> str:
        return "".join(self.generate_stream(prompt, max_new_tokens, stop, **sampling))

    def chat_ids(self, messages: Messages) -> list[int]:
        """The token ids of :meth:`render_chat`: what the model continues to answer."""
        return self.tokenizer(self.render_chat(messages), add_special_tokens=False)["input_ids"]

    def chat_stream(self, messages: Messages, max_new_tokens: int = 200,
                    stop: str | Sequence[str] | None = None, details: dict | None = None,
                    batcher: HFDecodeBatcher | None = None, **sampling: Any
                    ) -> Iterator[str]:
        """The assistant's answer to ``messages`` ([{role, content}, ...]), piece by piece."""
        return self.text_stream(self.chat_ids(messages), max_new_tokens, stop, details,
                                batcher, **sampling)

    def chat(self, messages: Messages, max_new_tokens: int = 200, stop: str | None = None,
             **sampling: Any) -> str:
        return "".join(self.chat_stream(messages, max_new_tokens, stop, **sampling))

    # ------------------------------------------------------------------------------ scoring
    def evaluate(self, data: str | Path, max_length: int | None = None, exact_match: int = 50,
                 max_new_tokens: int = 64) -> dict[str, Any]:
        """On held-out ``data`` (the fine-tune formats): loss per supervised token, perplexity,
        token accuracy; and for the first ``exact_match`` prompt/completion or chat examples,
        the share whose greedy answer equals the reference (whitespace-trimmed)."""
        from dlforge.lm.finetune import evaluate
        from dlforge.lm.sft import encode, read_examples

        examples = read_examples(Path(data))
        max_length = max_length or min(512, self.context)
        enc, _ = encode(examples, self.tokenizer, max_length, True, str(data))
        device = next(self.model.parameters()).device
        out = evaluate(self.model, enc, self.tokenizer.pad_token_id, device, "fp32",
                       max_length=max_length)
        pairs = []
        for ex in examples:
            if "prompt" in ex:
                pairs.append((ex["prompt"], ex["completion"], False))
            elif "messages" in ex and ex["messages"][-1]["role"] == "assistant":
                pairs.append((ex["messages"][:-1], ex["messages"][-1]["content"], True))
        pairs = pairs[:exact_match]
        hits = 0
        for prompt, want, chat in pairs:
            got = (self.chat(prompt, max_new_tokens, temperature=0) if chat else
                   self.generate(prompt, max_new_tokens, temperature=0))
            hits += got.strip() == want.strip()
        out.update(exact_match=(hits / len(pairs)) if pairs else math.nan,
                   exact_match_examples=len(pairs), examples=len(examples))
        return out


class _Ended:
    """:meth:`PretrainedLM.tokens` with the ``finish_reason`` that ``stream_text`` reads:
    ``"stop"`` when the model ended its text (an end-of-text token) before ``limit`` tokens,
    the most it may generate (max_new_tokens, within the context)."""

    def __init__(self, tokens: Iterator[int], limit: int):
        self.tokens, self.limit, self.n = tokens, limit, 0
        self.finish_reason = "length"

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        try:
            t = next(self.tokens)
        except StopIteration:
            if self.n < self.limit:
                self.finish_reason = "stop"
            raise
        self.n += 1
        return t

    def close(self) -> None:
        self.tokens.close()
