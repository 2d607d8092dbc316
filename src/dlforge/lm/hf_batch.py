"""Continuous batching for a pretrained (Hugging Face) causal LM: many generations decoded
together, a token each per step, each joining and leaving between steps.

:class:`~dlforge.lm.batch.DecodeBatcher` does this for our own GPT with a cache of fixed rows.
A transformers model keeps its keys and values in a ``DynamicCache`` of ``(B, heads, L, hd)``
tensors per layer, and takes an ``attention_mask`` and ``position_ids`` per row; so here the
running generations share one such cache, **left-padded** to the longest:

```
row 0   . . . p p p p t t      mask 0 0 0 1 1 1 1 1 1    next position 6
row 1   p p p p p p p t t      mask 1 1 1 1 1 1 1 1 1    next position 9
```

A new generation's prompt is encoded alone into a cache of its own (its first token sampled
from it), then that cache is padded on the left (or the batch's, if the prompt is longer) and
joins the batch at the next step. A step feeds every row its last token at its own position
(the count of its real tokens) with the mask hiding the padding, so each row computes what it
would alone, up to float rounding (tested against one-at-a-time decoding). A row that ends
(an end-of-text token, ``max_new_tokens``, the model's context, or its stream closed) is
dropped from the cache, and the columns that have become padding in every row are cut.

Models whose cache is not plain (sliding-window or recurrent layers) or whose forward takes no
``position_ids`` are not padded: each generation keeps a cache of its own and the worker
decodes them one after another, a token each per round (still concurrent, still each its own
tokens, without the batched step's speed).

Sampling is :func:`~dlforge.lm.generate._pick` with each generation's settings and seeded
generator, as :meth:`~dlforge.estimators.pretrained_lm.PretrainedLM.tokens` samples.
"""

from __future__ import annotations

import inspect
import queue
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from dlforge.errors import ConfigError
from dlforge.lm.batch import _END, BatcherThread, TokenStream
from dlforge.lm.generate import _pick, check_sampling

__all__ = ["HFDecodeBatcher"]


@dataclass
class _Seq:
    """One running generation: its sampling state, its last token (not yet in a cache) and
    its own cache until it joins the batch (for good, on a model that is not padded)."""

    stream: TokenStream
    prompt: list[int]
    remaining: int  # tokens it may still generate: max_new_tokens, within the context
    temperature: float
    top_k: int | None
    top_p: float | None
    penalty: float
    gen: torch.Generator
    seen: set[int] = field(default_factory=set)
    last: int = -1
    pos: int = 0  # its real tokens in the cache (the position of ``last``)
    cache: Any = None


class HFDecodeBatcher(BatcherThread):
    """Decodes up to ``max_batch`` generations of the transformers causal LM ``model`` (eval
    mode) together in a worker thread: ``submit`` one, iterate its
    :class:`~dlforge.lm.batch.TokenStream`. ``eos``: the end-of-text token ids (a generation
    ends there; the token is not yielded); ``context``: the model's context in tokens.
    ``threads``: the worker's intra-op threads on the CPU (None: PyTorch's setting; a
    pretrained model's matrices are large enough to use them, unlike the baby GPT's).
    ``waiting`` and ``running`` count the generations queued and in the batch."""

    thread_name = "hf-decode-batcher"

    def __init__(self, model: Any, eos: Iterable[int], context: int, max_batch: int = 16,
                 threads: int | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.max_batch, self.context = model, max_batch, context
        self.eos = set(eos)
        self.device = next(model.parameters()).device
        self.threads = threads
        self.padded = self._can_pad()
        self._pending: queue.Queue = queue.Queue()
        self._init_thread()
        self._active: list[_Seq] = []
        self._cache: Any = None  # the batch's DynamicCache (padded models), rows = _active
        self._mask: torch.Tensor | None = None  # (B, L): 1 where a row has a real token
        self.steps = 0  # batched steps run
        self.rows = 0  # the rows those steps covered: rows / steps = mean batch

    @property
    def waiting(self) -> int:
        return self._pending.qsize()

    @property
    def running(self) -> int:
        return len(self._active)

    # ---------------------------------------------------------------- public
    def submit(self, prompt: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               repetition_penalty: float = 1.0, seed: int | None = None,
               sink: Callable[[Any], None] | None = None) -> TokenStream:
        """Queue a generation of at most ``max_new_tokens`` after ``prompt`` (token ids, at
        least one, fewer than the context: a ConfigError naming both numbers otherwise).
        ``sink``: where the batcher's thread hands the tokens (see :class:`TokenStream`)."""
        check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ConfigError("prompt: no tokens; give at least one token to continue from")
        if len(prompt) >= self.context:
            raise ConfigError(f"the prompt is {len(prompt)} tokens; the model's context is "
                              f"{self.context} (leave room for the answer)")
        if not self._running:
            raise RuntimeError("the HFDecodeBatcher is not running; call start() first")
        gen = torch.Generator(device=self.device)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        stream = TokenStream(sink)
        remaining = min(max_new_tokens, self.context - len(prompt))
        seq = _Seq(stream, prompt, remaining, temperature, top_k, top_p, repetition_penalty,
                   gen, set(prompt))
        if remaining == 0:
            stream.put(_END)
        else:
            self._pending.put(seq)
            self._wake.set()
        return stream

    # ---------------------------------------------------------------- the worker
    def _can_pad(self) -> bool:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        takes = inspect.signature(self.model.forward).parameters
        layers = DynamicCache(config=self.model.config).layers
        return ("position_ids" in takes and "attention_mask" in takes and bool(layers)
                and all(type(layer) is DynamicLayer for layer in layers))

    def _work(self) -> None:
        if self.threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self.threads)  # OpenMP: this thread's own setting
        try:
            while self._running:
                while len(self._active) < self.max_batch and not self._pending.empty():
                    self._admit(self._pending.get_nowait())
                self._drop_stopped()
                if not self._active:
                    self._wake.wait(0.1)
                    self._wake.clear()
                    continue
                with torch.inference_mode():
                    if self.padded:
                        self._step()
                    else:
                        self._step_each()
                self._drop_stopped()
        except BaseException as err:  # noqa: BLE001 - every waiting stream gets the error
            for seq in self._active:
                seq.stream.put(err)
            raise
        finally:
            for seq in self._active:
                seq.stream.put(_END)
            self._active, self._cache, self._mask = [], None, None
            while not self._pending.empty():
                self._pending.get_nowait().stream.put(_END)

    def _admit(self, seq: _Seq) -> None:
        """Encode ``seq``'s prompt into a cache of its own, sample its first token, and join
        it to the batch. A failure here fails this generation only."""
        if seq.stream.stopped.is_set():
            return
        from transformers import DynamicCache

        try:
            seq.cache = DynamicCache(config=self.model.config)
            with torch.inference_mode():
                ids = torch.tensor([seq.prompt], device=self.device)
                logits = self.model(input_ids=ids, cache=seq.cache, use_cache=True
                                    ).logits[0, -1]
                seq.pos = len(seq.prompt)
                self._emit(seq, logits)
        except Exception as err:  # noqa: BLE001 - handed to its stream, whose reader raises it
            seq.stream.put(err)
            seq.stream.stopped.set()
            return
        if seq.stream.stopped.is_set():
            return
        if self.padded:
            self._join(seq)
        self._active.append(seq)

    def _join(self, seq: _Seq) -> None:
        """Append ``seq``'s own cache as the batch's last row, left-padding the shorter."""
        own = seq.cache
        seq.cache = None
        n = own.layers[0].keys.shape[-2]
        row = torch.ones(1, n, dtype=torch.long, device=self.device)
        if self._cache is None:
            self._cache, self._mask = own, row
            return
        width = self._mask.shape[1]
        L = max(width, n)
        for mine, theirs in zip(self._cache.layers, own.layers, strict=True):
            # (B, heads, L, hd): pad dim -2 on the left
            mine.keys = torch.cat([F.pad(mine.keys, (0, 0, L - width, 0)),
                                   F.pad(theirs.keys, (0, 0, L - n, 0))])
            mine.values = torch.cat([F.pad(mine.values, (0, 0, L - width, 0)),
                                     F.pad(theirs.values, (0, 0, L - n, 0))])
        self._mask = torch.cat([F.pad(self._mask, (L - width, 0)), F.pad(row, (L - n, 0))])

    def _step(self) -> None:
        """One token for every row, in one forward pass over the padded cache."""
        active = self._active
        B = len(active)
        ids = torch.tensor([[s.last] for s in active], device=self.device)  # (B, 1)
        positions = torch.tensor([[s.pos] for s in active], device=self.device)  # (B, 1)
        mask = torch.cat([self._mask, torch.ones(B, 1, dtype=torch.long, device=self.device)],
                         dim=1)  # (B, L + 1)
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                            cache=self._cache, use_cache=True).logits[:, -1]  # (B, V)
        self._mask = mask
        self.steps += 1
        self.rows += B
        for r, seq in enumerate(active):
            seq.pos += 1
            self._emit(seq, logits[r])

    def _step_each(self) -> None:
        """A model that cannot be padded: a token for each generation, from its own cache."""
        for seq in self._active:
            ids = torch.tensor([[seq.last]], device=self.device)
            logits = self.model(input_ids=ids, cache=seq.cache, use_cache=True).logits[0, -1]
            seq.pos += 1
            self._emit(seq, logits)
        self.steps += 1
        self.rows += len(self._active)

    def _emit(self, seq: _Seq, logits: torch.Tensor) -> None:
        """Sample ``seq``'s next token from its (V,) logits and hand it on, or end it."""
        seen = (torch.tensor(sorted(seq.seen), device=self.device, dtype=torch.long)
                if seq.penalty != 1.0 else None)
        nxt = _pick(logits, seen, seq.temperature, seq.top_k, seq.top_p, seq.penalty, seq.gen)
        if nxt in self.eos:
            seq.stream.finish_reason = "stop"
            self._end(seq)
            return
        seq.stream.put(nxt)
        seq.seen.add(nxt)
        seq.last = nxt
        seq.remaining -= 1
        if seq.remaining == 0:
            self._end(seq)

    @staticmethod
    def _end(seq: _Seq) -> None:
        seq.stream.put(_END)
        seq.stream.stopped.set()

    def _drop_stopped(self) -> None:
        """Drop the finished or closed rows from the batch and its cache, then the columns
        that are padding in every row left."""
        keep = [r for r, s in enumerate(self._active) if not s.stream.stopped.is_set()]
        if len(keep) == len(self._active):
            return
        self._active = [self._active[r] for r in keep]
        if not self.padded:
            return
        if not keep:
            self._cache, self._mask = None, None
            return
        idx = torch.tensor(keep, device=self.device)
        mask = self._mask[idx]
        first = int(mask.any(dim=0).nonzero()[0])  # the first column some row still uses
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[idx, :, first:]
            layer.values = layer.values[idx, :, first:]
