"""Continuous batching: many generations from one GPT decoded together, a token each per step.

At batch 1 a decoding step of a small model is dozens of tiny operations whose fixed cost is
the whole step (see :class:`~dlforge.models.gpt.Decoder`); the same step over 16 sequences
costs little more. :class:`DecodeBatcher` runs one worker thread that owns a shared
:class:`~dlforge.models.gpt.KVCache` of ``max_batch`` rows: a new generation's prompt is encoded
into a free row, then every step decodes one token for every running generation at once, each
at its own position (``Decoder(..., positions=...)``), and each token is sampled with that
generation's own settings and seeded generator. Generations join and leave between steps
(continuous batching, as in Orca, Yu et al. 2022, and vLLM), so a long one never holds up a
short one.

Each generation gives the tokens that :func:`~dlforge.lm.generate.sample_tokens` gives with the
same settings and seed (same sliding past the context window, same sampling; tested), up to
float rounding between batched and single-row arithmetic.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import torch

from dlforge.lm.generate import _pick, check_sampling
from dlforge.models.gpt import GPT, Decoder, KVCache
from dlforge.train.device import autocast

__all__ = ["BatcherThread", "DecodeBatcher", "TokenStream"]

_END = object()


class TokenStream:
    """The token ids of one generation, as they are decoded (an iterator); ``close()`` stops
    the generation at the next step. ``finish_reason``: ``"stop"`` once the model has ended
    its text (an end-of-text token, which is not yielded), else ``"length"``.

    With a ``sink`` (a callable), the batcher's thread hands it each item instead: a token id,
    an exception, or :attr:`END` last; such a stream is not iterated (the server's event loop
    takes its tokens this way, with no thread per generation)."""

    END = _END

    def __init__(self, sink: Callable[[Any], None] | None = None) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._sink = sink
        self.stopped = threading.Event()
        self.finish_reason = "length"

    def put(self, item: Any) -> None:
        """From the batcher: the next token id, an exception, or ``END``."""
        if self._sink is not None:
            self._sink(item)
        else:
            self._queue.put(item)

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self._sink is not None:
            raise TypeError("a TokenStream with a sink hands its tokens to the sink")
        if self.stopped.is_set() and self._queue.empty():
            raise StopIteration
        item = self._queue.get()
        if item is _END:
            self.stopped.set()
            raise StopIteration
        if isinstance(item, BaseException):
            self.stopped.set()
            raise item
        return item

    def close(self) -> None:
        """Stop the generation (from any thread); a reader waiting for a token wakes up and
        the stream ends."""
        self.stopped.set()
        if self._sink is None:
            self._queue.put(_END)


@dataclass
class _Seq:
    """One running generation: its context, sampling state and row of the shared cache."""

    stream: TokenStream
    ctx: list[int]
    remaining: int
    temperature: float
    top_k: int | None
    top_p: float | None
    penalty: float
    gen: torch.Generator
    seen: set[int] = field(default_factory=set)
    pos: int = 0  # positions of its row that are filled; 0: (re-)encode ctx first


class BatcherThread:
    """The worker-thread lifecycle of a decoding batcher: ``start()`` runs ``_work`` in a
    daemon thread, ``stop()`` clears ``_running``, wakes it and joins it; a context manager.
    Subclasses set ``_wake``, ``_running`` and ``_thread`` in ``__init__`` (see
    :meth:`_init_thread`) and loop in ``_work`` while ``_running``."""

    thread_name = "decode-batcher"

    def _init_thread(self) -> None:
        self._wake = threading.Event()
        self._running = False
        self._thread: threading.Thread | None = None

    def _work(self) -> None:  # pragma: no cover - each batcher defines its loop
        raise NotImplementedError

    def start(self) -> Self:
        if not self._running:
            self._running = True
            self._thread = threading.Thread(target=self._work, daemon=True,
                                            name=self.thread_name)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._running = False
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class DecodeBatcher(BatcherThread):
    """Decodes up to ``max_batch`` generations of ``model`` (in eval mode) together, in a worker
    thread: ``submit`` one, iterate its :class:`TokenStream`. Start with ``start()`` (or use as
    a context manager); ``stop()`` ends every stream and the thread.

    ``threads``: the worker's intra-op threads on the CPU (None: PyTorch's setting). One by
    default: a decoding step is many small operations, and a second OpenMP team (the worker's,
    beside the one of the thread that loaded the model) contends for the cores: on 2 cores, 32
    baby-GPT generations ran at 10,100 tokens/s with one thread and 4,070 with two
    (benchmarks/lm_batch.py)."""

    def __init__(self, model: GPT, max_batch: int = 16, precision: str = "fp32",
                 threads: int | None = 1):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.max_batch = model, max_batch
        self.device = next(model.parameters()).device
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.precision = precision
        self.threads = threads
        self._pending: queue.Queue = queue.Queue()
        self._init_thread()
        self.steps = 0  # batched decoding steps run (one per token of every running sequence)
        self.rows = 0  # the sequences those steps covered, summed: rows / steps = mean batch

    # ---------------------------------------------------------------- public
    def submit(self, prompt: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None,
               repetition_penalty: float = 1.0, seed: int | None = None,
               sink: Callable[[Any], None] | None = None) -> TokenStream:
        """Queue a generation of ``max_new_tokens`` after ``prompt`` (token ids, at least one);
        settings as :func:`~dlforge.lm.generate.sample_tokens`.
        ``sink``: where the batcher's thread hands the tokens (see :class:`TokenStream`)."""
        check_sampling(max_new_tokens, temperature, top_k, top_p, repetition_penalty)
        if not self._running:
            raise RuntimeError("the DecodeBatcher is not running; call start() first")
        gen = torch.Generator(device=self.device)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        stream = TokenStream(sink)
        block = self.model.config.block_size
        seq = _Seq(stream, list(prompt)[-block:], max_new_tokens, temperature, top_k, top_p,
                   repetition_penalty, gen, set(prompt))
        if max_new_tokens == 0:
            stream.put(_END)
        else:
            self._pending.put(seq)
            self._wake.set()
        return stream

    # ---------------------------------------------------------------- the worker
    def _work(self) -> None:
        if self.threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self.threads)  # OpenMP: this thread's own setting
        cache = KVCache(self.model.config, min(self.max_batch, 4), self.device, self.dtype)
        decoder = Decoder(self.model, self.dtype)
        active: list[_Seq] = []
        try:
            while self._running:
                while len(active) < self.max_batch and not self._pending.empty():
                    active.append(self._pending.get_nowait())
                active = self._drop_stopped(active, cache)
                if not active:
                    self._wake.wait(0.1)
                    self._wake.clear()
                    continue
                cache = self._rows_for(len(active), cache)
                with torch.inference_mode():
                    self._step(active, cache, decoder)
                active = self._drop_stopped(active, cache)
        except BaseException as err:  # noqa: BLE001 - every waiting stream gets the error
            for seq in active:
                seq.stream.put(err)
            raise
        finally:
            for seq in active:
                seq.stream.put(_END)
            while not self._pending.empty():
                self._pending.get_nowait().stream.put(_END)

    def _step(self, active: list[_Seq], cache: KVCache, decoder: Decoder) -> None:
        """One token for every running sequence: sequences with nothing cached (new, or just
        slid) encode their whole context into their row; the rest decode one position
        together."""
        block = self.model.config.block_size
        logits: dict[int, torch.Tensor] = {}
        fresh = [r for r, s in enumerate(active) if s.pos == 0]
        for r in fresh:
            seq = active[r]
            row = cache.row(r)
            x = torch.tensor([seq.ctx], device=self.device)
            with autocast(self.device, self.precision):
                logits[r] = self.model(x, cache=row)[0][0, -1]
            seq.pos = len(seq.ctx)
        going = [r for r in range(len(active)) if r not in logits]
        if going:
            # Rows are kept compact (see _drop_stopped): the batched step covers rows 0..n-1,
            # those just encoded included, whose outputs are not used.
            n = max(going) + 1
            idx = torch.tensor([active[r].ctx[-1] for r in range(n)], device=self.device)
            # A row just encoded writes its (unused) key at the position its next token will
            # overwrite, within the window (a full one slides after this token anyway).
            positions = [active[r].pos if r in going else min(active[r].pos, block - 1)
                         for r in range(n)]
            out = decoder(idx, cache, positions)
            for r in going:
                logits[r] = out[r]
                active[r].pos += 1
            self.steps += 1
            self.rows += len(going)
        for r, seq in enumerate(active):
            seen = (torch.tensor(sorted(seq.seen), device=self.device, dtype=torch.long)
                    if seq.penalty != 1.0 else None)
            nxt = _pick(logits[r], seen, seq.temperature, seq.top_k, seq.top_p, seq.penalty,
                        seq.gen)
            seq.stream.put(nxt)
            seq.seen.add(nxt)
            seq.ctx.append(nxt)
            seq.remaining -= 1
            if seq.remaining == 0:
                seq.stream.put(_END)
                seq.stream.stopped.set()
            elif len(seq.ctx) > block:  # slide, as sample_tokens does
                seq.ctx = seq.ctx[-max(1, block // 2):]
                seq.pos = 0

    def _rows_for(self, n: int, cache: KVCache) -> KVCache:
        """``cache`` with at least ``n`` rows: the rows double as generations arrive (up to
        ``max_batch``), so a quiet server holds a few windows of keys and values, not 32."""
        rows = cache.k[0].shape[0]
        if n <= rows:
            return cache
        grown = KVCache(self.model.config, min(self.max_batch, max(n, 2 * rows)), self.device,
                        self.dtype)
        for new, old in zip((*grown.k, *grown.v), (*cache.k, *cache.v), strict=True):
            new[:rows] = old
        return grown

    def _drop_stopped(self, active: list[_Seq], cache: KVCache) -> list[_Seq]:
        """Remove finished or closed sequences, moving the last rows into the gaps so that the
        running ones stay in rows 0..n-1."""
        keep = [s for s in active if not s.stream.stopped.is_set()]
        if len(keep) == len(active):
            return active
        old_row = {id(s): r for r, s in enumerate(active)}
        for r, seq in enumerate(keep):
            src = old_row[id(seq)]
            if src != r and seq.pos:
                for k in (*cache.k, *cache.v):
                    k[r, :, :seq.pos] = k[src, :, :seq.pos]
        return keep
