"""Sampling from a GPT: temperature, top-k, top-p, repetition penalty, a stop string, a seed.

Decoding is incremental with a :class:`~dlforge.models.gpt.KVCache`: after the prompt, each new
token costs one position (a :class:`~dlforge.models.gpt.Decoder` step). The context window is
``block_size`` tokens (learned absolute positions cannot go past it), so longer generations
**slide**: when the context is full it is cut to its last ``block_size // 2`` tokens, which are
encoded again, and decoding continues incrementally from there. Every token therefore sees
between half a window and a whole window of context; a prompt longer than the window keeps its
last ``block_size`` tokens. Decoding without the cache follows the same rule, so both give the
same tokens.

Nothing here holds state between calls, and no inference or autocast mode stays set across a
``yield``: several threads may generate from one model at once, and a stream may be advanced
from different threads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from dlforge.errors import ConfigError
from dlforge.models.gpt import GPT, Decoder, KVCache
from dlforge.train.device import autocast

__all__ = ["TextPieces", "check_sampling", "sample_tokens", "stream_text"]


def check_sampling(max_new_tokens: int, temperature: float, top_k: int | None,
                   top_p: float | None, repetition_penalty: float) -> None:
    """Each bad setting is a ConfigError naming it and the range it must be in."""
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ConfigError(f"max_new_tokens: must be a whole number >= 0, got {max_new_tokens!r}")
    if not temperature >= 0:
        raise ConfigError(f"temperature: must be >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ConfigError(f"top_k: must be a whole number >= 1 (or unset), got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ConfigError(f"top_p: must be in (0, 1] (or unset), got {top_p!r}")
    if not repetition_penalty > 0:
        raise ConfigError(f"repetition_penalty: must be > 0 (1 is none), got "
                          f"{repetition_penalty!r}")


def _pick(logits: torch.Tensor, seen: torch.Tensor | None, temperature: float, top_k: int | None,
          top_p: float | None, penalty: float, gen: torch.Generator) -> int:
    """The next token from (V,) logits."""
    logits = logits.float().clone()
    if seen is not None and seen.numel():
        # CTRL's penalty: tokens already in the text get less likely (logit / p if positive,
        # * p if negative), once each however often they occurred.
        prev = logits[seen]
        logits[seen] = torch.where(prev > 0, prev / penalty, prev * penalty)
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits[logits < kth] = float("-inf")
    if top_p is not None and top_p < 1.0:
        # Nucleus: the fewest most-likely tokens whose probabilities sum to top_p.
        sorted_logits, order = torch.sort(logits, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        drop = torch.cumsum(probs, dim=-1) - probs > top_p  # the first token always stays
        logits[order[drop]] = float("-inf")
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


def sample_tokens(model: GPT, prompt: Sequence[int], max_new_tokens: int,
                  temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                  repetition_penalty: float = 1.0, seed: int | None = None,
                  use_cache: bool = True, precision: str = "fp32") -> Iterator[int]:
    """Yield ``max_new_tokens`` token ids after ``prompt`` (at least one id). ``model`` must
    be in eval mode. Same seed, same settings -> same tokens."""
    check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
    device = next(model.parameters()).device
    block = model.config.block_size
    keep = max(1, block // 2)
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    cache = KVCache(model.config, 1, device, dtype) if use_cache else None
    step = Decoder(model, dtype) if use_cache else None
    ctx = list(prompt)[-block:]
    seen = set(prompt)
    for _ in range(max_new_tokens):
        with torch.inference_mode(), autocast(device, precision):
            if cache is not None and cache.pos > 0:  # one new position
                logits = step(torch.tensor(ctx[-1:], device=device), cache)[0]  # (V,)
            else:  # the whole context: no cache, or a fresh or cut one
                logits = model(torch.tensor([ctx], device=device), cache=cache)[0][0, -1]
            seen_t = (torch.tensor(sorted(seen), device=device, dtype=torch.long)
                      if repetition_penalty != 1.0 else None)
            nxt = _pick(logits, seen_t, temperature, top_k, top_p, repetition_penalty, gen)
        yield nxt
        seen.add(nxt)
        ctx.append(nxt)
        if len(ctx) > block:  # the window is full: slide (see the module docstring)
            ctx = ctx[-keep:]
            if cache is not None:
                cache.reset()


def stream_text(decode, tokens: Iterator[int], stop: str | Sequence[str] | None = None,
                details: dict | None = None) -> Iterator[str]:
    """Decoded text, piece by piece as ``tokens`` arrive, ending before ``stop`` (a string, or
    several: the first that appears) if it appears.

    A piece is held back while it could still be the start of a stop string, or while it ends
    in an incomplete UTF-8 sequence (a byte-level BPE token can hold part of a character). When
    the stream ends, ``details`` (if given) gets ``generated_tokens`` and ``finish_reason``
    (``"stop"``: a stop string appeared, or the model ended its text; ``"length"``:
    max_new_tokens were generated); a ``tokens`` that ends on its own says which in its
    ``finish_reason`` attribute (a batcher's :class:`~dlforge.lm.batch.TokenStream`). When it
    ends or is closed early, ``tokens`` is closed too (a batched generation then stops)."""
    stops = [stop] if isinstance(stop, str) else [s for s in stop or () if s]
    try:
        yield from _pieces(decode, tokens, stops, details)
    finally:
        close = getattr(tokens, "close", None)
        if close is not None:
            close()


def _pieces(decode, tokens: Iterator[int], stops: list[str],
            details: dict | None) -> Iterator[str]:
    text = TextPieces(decode, stops)
    for t in tokens:
        piece = text.feed(t)
        if text.stopped and details is not None:
            details.update(generated_tokens=len(text.ids), finish_reason="stop")
        if piece:
            yield piece
        if text.stopped:
            return
    if details is not None:
        details.update(generated_tokens=len(text.ids),
                       finish_reason=getattr(tokens, "finish_reason", "length"))
    rest = text.rest()
    if rest:
        yield rest


class TextPieces:
    """Token ids in, text out, a token at a time: :meth:`feed` returns the text that can be
    sent now ("" while a piece is held back), :attr:`stopped` turns true when a stop string
    appears (the text ends before it), and :meth:`rest` is what is left when the tokens end.

    A piece is held back while it could still be the start of a stop string, or while it ends
    in an incomplete UTF-8 sequence (a byte-level BPE token can hold part of a character).
    Only the ids after the last piece sent in full are decoded again, so the work is linear
    in the length of the text."""

    def __init__(self, decode: Callable[[list[int]], str],
                 stop: str | Sequence[str] | None = None):
        self.decode = decode
        self.stops = [stop] if isinstance(stop, str) else [s for s in stop or () if s]
        self.ids: list[int] = []
        self.stopped = False
        self._base = 0  # ids before this are decoded and sent in full
        self._sent = 0  # characters of decode(ids[base:]) already sent
        self._text = ""

    def feed(self, token: int) -> str:
        self.ids.append(token)
        text = self._text = self.decode(self.ids[self._base:])
        sent = self._sent
        found = [at for at in (text.find(s, sent) for s in self.stops) if at >= 0]
        if found:
            at = min(found)
            self.stopped = True
            self._sent = len(text)  # nothing after the stop string is sent
            return text[sent:at]
        safe = len(text)
        while safe > sent and text[safe - 1] == "\ufffd":
            safe -= 1
        held = 0  # the longest tail that could still begin a stop string
        for s in self.stops:
            for j in range(min(len(s) - 1, safe - sent), held, -1):
                if text[safe - j:safe] == s[:j]:
                    held = j
                    break
        safe -= held
        piece = ""
        if safe > sent:
            piece = text[sent:safe]
            self._sent = safe
        if self._sent == len(text):  # nothing held back: the next tokens start a fresh piece
            self._base, self._sent, self._text = len(self.ids), 0, ""
        return piece

    def rest(self) -> str:
        """The text held back when the tokens end (none after a stop string)."""
        return "" if self.stopped else self._text[self._sent:]
