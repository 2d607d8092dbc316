"""Text generation over HTTP for language models: our own GPT runs, pretrained causal LMs (a
Hugging Face folder) and fine-tunes of them. The Open Inference Protocol's generate extension,
as Triton speaks it, is here; the OpenAI-compatible routes are in ``serve/openai_api.py``:

```
POST /v2/models/{name}/generate         {"text_input": "...", "parameters": {...}}
                                         -> {"model_name", "text_output", "finish_reason", ...}
POST /v2/models/{name}/generate_stream  the same body -> Server-Sent Events: one event per
                                         token {"text_output": piece}, then a final event with
                                         "finish_reason" and the token counts
```

The tokens of every running generation of a model are decoded together, one batched step per
token (continuous batching: ``dlforge.lm.batch.DecodeBatcher`` for a GPT,
``dlforge.lm.hf_batch.HFDecodeBatcher`` for a pretrained model, started with the server); the
batcher's thread hands each token to the event loop, where it becomes text. A client that
disconnects (or a request that times out) closes its token stream, and the batcher drops it
before the next step. A bounded number run at once;
past it, 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from dlforge.errors import ConfigError, DataError, DlforgeError
from dlforge.estimators.language import LanguageModel
from dlforge.lm.batch import TokenStream
from dlforge.lm.generate import TextPieces

__all__ = ["GenerateParameters", "GenerateRequest", "Generations", "ServedLM",
           "add_generate_routes"]

_END = object()  # a generation's last item on its queue


class ServedLM:
    """A loaded language model, served through the generate and OpenAI routes: a GPT run
    (``LanguageModel``) or a pretrained model folder or fine-tune run (``PretrainedLM``)."""

    kind = "language model"

    def __init__(self, run_dir: str | Path, name: str | None = None, backend: str = "torch"):
        if backend != "torch":
            raise ConfigError(f"{run_dir}: language models are served with --backend torch "
                              "(the server decodes them in batches; dlforge export writes a "
                              "GPT's ONNX graph, with its key/value cache, for other runtimes)")
        self.path = Path(run_dir)
        self.name = name or self.path.resolve().name
        self.lm = LanguageModel.load(self.path)
        self.pretrained = not isinstance(self.lm, LanguageModel)
        self.created = int(self.path.stat().st_mtime)
        self.batcher: Any = None  # a running decode batcher while the server runs

    def start_batcher(self, max_batch: int) -> None:
        self.batcher = self.lm.decode_batcher(max_batch).start()

    def stop_batcher(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
            self.batcher = None

    # ---------------------------------------------------------------- prompts
    @property
    def context(self) -> int | None:
        """The most tokens a prompt and its answer may hold together; None for a GPT, whose
        context slides past its window (see dlforge.lm.generate)."""
        return self.lm.context if self.pretrained else None

    @property
    def chat_template(self) -> bool:
        return self.pretrained and bool(getattr(self.lm.tokenizer, "chat_template", None))

    def prompt_ids(self, text: str) -> list[int]:
        """The token ids of a plain prompt (DataError for a GPT's empty prompt or characters
        outside its vocabulary)."""
        return self.lm.encode_prompt(text) if self.pretrained else self.lm._prompt_ids(text)

    @property
    def vocab_size(self) -> int:
        """Token ids run from 0 to this, less one (the rows of the input embedding)."""
        if self.pretrained:
            return int(self.lm.model.get_input_embeddings().num_embeddings)
        return int(self.lm.model_.config.vocab_size)

    def token_ids(self, ids: Sequence[int]) -> list[int]:
        """A prompt given as token ids, checked: at least one, each in the vocabulary."""
        if not ids:
            raise DataError("prompt: no token ids; give at least one")
        v = self.vocab_size
        for i, t in enumerate(ids):
            if not 0 <= t < v:
                raise DataError(f"prompt: token id {t} (position {i}) is outside the model's "
                                f"vocabulary (0 to {v - 1})")
        return [int(t) for t in ids]

    def chat_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The conversation rendered by the model's chat template, the assistant's turn
        opened, as token ids; ConfigError for a model without a template."""
        if not self.pretrained:
            raise ConfigError(f"model {self.name!r} is a GPT trained from scratch on plain "
                              "text: it has no chat template, so it cannot chat; use "
                              "/v1/completions")
        return self.lm.chat_ids(messages)

    def check_length(self, n_prompt: int, max_new_tokens: int) -> None:
        if self.pretrained:
            self.lm.check_length(n_prompt, max_new_tokens)

    def decode(self, ids: Sequence[int]) -> str:
        return self.lm._decode(ids) if self.pretrained else self.lm.tokenizer_.decode(ids)

    def metadata(self) -> dict[str, Any]:
        if self.pretrained:
            cfg = self.lm.model.config
            params = {"task": self.kind, "model": cfg.model_type,
                      "tokenizer": type(self.lm.tokenizer).__name__,
                      "block_size": self.lm.context, "n_layer": cfg.num_hidden_layers,
                      "chat_template": self.chat_template,
                      "source": self.lm.info.get("kind")}
        else:
            cfg = self.lm.config_
            params = {"task": self.kind, "model": "gpt", "tokenizer": cfg.tokenizer,
                      "block_size": cfg.block_size, "n_layer": cfg.n_layer,
                      "d_model": cfg.d_model, "chat_template": False,
                      "val_loss": self.lm.metrics_.get("val_loss")}
        return {"name": self.name, "versions": ["1"], "platform": "dlforge",
                "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
                "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}],
                "parameters": params}


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_new_tokens: int = Field(200, ge=0)
    temperature: float = Field(0.8, ge=0.0)
    top_k: int | None = Field(None, ge=1)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0)
    stop: str | None = Field(None, min_length=1)
    seed: int | None = None


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text_input: str = Field(min_length=1)
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)


class _Inbox:
    """Items from the batcher's thread to the event loop, handed over in batches: the thread
    appends ``(generation, item)`` and schedules one drain on the loop unless one is pending,
    so a step that decodes a token for 32 generations wakes the loop once, not 32 times."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.items: deque[tuple[_Generation, Any]] = deque()
        self.lock = threading.Lock()
        self.scheduled = False

    def put(self, gen: _Generation, item: Any) -> None:
        with self.lock:
            self.items.append((gen, item))
            if self.scheduled:
                return
            self.scheduled = True
        with contextlib.suppress(RuntimeError):  # a closed loop: the server is shutting down
            self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self.lock:
            items, self.items, self.scheduled = self.items, deque(), False
        for gen, item in items:
            gen.feed(item)


class _Generation:
    """One generation: the prompt (text, or token ids) is encoded and checked and submitted
    to the model's batcher, whose thread hands each token to the event loop (through the
    :class:`_Inbox`); there it becomes text (:class:`~dlforge.lm.generate.TextPieces`), and
    the pieces go on an asyncio queue as ``(index, piece)``, then ``_END``. ``queue`` may be
    shared by the choices of one request. No thread of its own: a thousand streams cost a
    thousand small objects, not a thousand threads contending with the batcher."""

    def __init__(self, gens: Generations, served: ServedLM, prompt: str | list[int],
                 max_new_tokens: int, stop: str | Sequence[str] | None,
                 sampling: dict[str, Any], t0: float, queue: asyncio.Queue | None = None,
                 index: int = 0) -> None:
        self.details: dict[str, Any] = {}
        self.queue: asyncio.Queue = queue if queue is not None else asyncio.Queue()
        self.gens, self.served, self.prompt = gens, served, prompt
        self.max_new_tokens, self.sampling = max_new_tokens, sampling
        self.text = TextPieces(served.decode, stop)
        self.t0, self.index = t0, index
        self.tokens: Any = None  # the batcher's TokenStream, once submitted
        self.first_token: float | None = None  # when it came (perf_counter)
        self.done = False

    def start(self) -> _Generation:
        m = self.served
        self.gens.queued(m.name, +1)
        inbox = self.gens.inbox()
        try:
            ids = m.prompt_ids(self.prompt) if isinstance(self.prompt, str) else self.prompt
            self.details["prompt_tokens"] = len(ids)
            m.check_length(len(ids), self.max_new_tokens)
            self.tokens = m.batcher.submit(ids, self.max_new_tokens, **self.sampling,
                                           sink=lambda item: inbox.put(self, item))
        except Exception as err:  # noqa: BLE001 - handed to the request (DlforgeError: 4xx)
            self._put(err)
            self._finish()
        return self

    def close(self) -> None:
        """Stop it: the batcher drops it before its next step."""
        if self.tokens is not None:
            self.tokens.close()
        self._finish()

    def feed(self, item: Any) -> None:
        """On the event loop: the batcher's next item (a token id, an error, or the end)."""
        if self.done:
            return
        try:
            if item is TokenStream.END:
                self.details.update(generated_tokens=len(self.text.ids),
                                    finish_reason=self.tokens.finish_reason)
                rest = self.text.rest()
                if rest:
                    self._put(rest)
                self._finish()
                return
            if isinstance(item, BaseException):
                raise item
            self._on_token()
            piece = self.text.feed(item)
            if piece:
                self._put(piece)
            if self.text.stopped:
                self.details.update(generated_tokens=len(self.text.ids), finish_reason="stop")
                self.close()
        except Exception as err:  # noqa: BLE001 - handed to the request
            self._put(err)
            self.close()

    def _put(self, item: Any) -> None:
        self.queue.put_nowait((self.index, item))

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.first_token is None:
            self.gens.queued(self.served.name, -1)
        else:
            self.gens.running(self.served.name, -1)
        self._put(_END)

    def _on_token(self) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()
            self.gens.first_token(self.served.name, self.first_token - self.t0)
        self.gens.token(self.served.name)

    async def pieces(self) -> AsyncIterator[str]:
        """The text pieces (of a generation with a queue of its own); raises what the
        generation raised."""
        while True:
            _, item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class _Rate:
    """Tokens per second over the last ``window`` seconds, counted in one-second buckets."""

    def __init__(self, window: int = 10):
        self.window = window
        self.buckets: deque[list[int]] = deque()  # [second, tokens]
        self.lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        now = int(time.monotonic())
        with self.lock:
            if self.buckets and self.buckets[-1][0] == now:
                self.buckets[-1][1] += n
            else:
                self.buckets.append([now, n])
                while self.buckets and self.buckets[0][0] <= now - self.window:
                    self.buckets.popleft()

    def per_second(self) -> float:
        now = int(time.monotonic())
        with self.lock:
            total = sum(n for sec, n in self.buckets if sec > now - self.window)
        return total / self.window


class Generations:
    """The server's generations: how many are admitted (a bound shared by every route), and
    their metrics: queued (waiting for the batch or their first token), running, tokens,
    time to first token, and tokens per second over the last 10 seconds."""

    def __init__(self, metrics: Any, settings: Any):
        self.metrics, self.settings = metrics, settings
        self.admitted = 0
        self.rates: dict[str, _Rate] = {}
        self._inbox: _Inbox | None = None

    def inbox(self) -> _Inbox:
        """The running event loop's inbox for tokens from the batchers' threads."""
        loop = asyncio.get_running_loop()
        if self._inbox is None or self._inbox.loop is not loop:
            self._inbox = _Inbox(loop)
        return self._inbox

    def admit(self, n: int, limit: int) -> None:
        """Count ``n`` more generations in, or 503 when that would pass ``limit``."""
        if self.admitted + n > limit:
            raise HTTPException(503, f"{self.admitted} generations are running or queued (the "
                                     f"limit is {limit}); retry shortly",
                                headers={"Retry-After": "1"})
        self.admitted += n

    def release(self, gens: Sequence[_Generation], aborted: bool) -> None:
        for g in gens:
            g.close()
            if aborted:
                self.metrics.aborted.labels(g.served.name).inc()
        self.admitted -= len(gens)

    def start(self, served: ServedLM, prompt: str | list[int], max_new_tokens: int,
              stop: str | Sequence[str] | None, sampling: dict[str, Any], t0: float,
              queue: asyncio.Queue | None = None, index: int = 0) -> _Generation:
        return _Generation(self, served, prompt, max_new_tokens, stop, sampling, t0, queue,
                           index).start()

    # the generations call these, on the event loop
    def queued(self, name: str, delta: int) -> None:
        self.metrics.gen_queued.labels(name).inc(delta)

    def running(self, name: str, delta: int) -> None:
        self.metrics.gen_running.labels(name).inc(delta)

    def first_token(self, name: str, seconds: float) -> None:
        self.queued(name, -1)
        self.running(name, +1)
        self.metrics.ttft.labels(name).observe(seconds)

    def token(self, name: str) -> None:
        self.metrics.tokens.labels(name).inc()
        rate = self.rates.get(name) or self.rates.setdefault(name, _Rate())
        rate.add()

    def refresh(self) -> None:
        """Set the tokens-per-second gauges (before /metrics is read)."""
        for name, rate in self.rates.items():
            self.metrics.tokens_per_second.labels(name).set(rate.per_second())


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def add_generate_routes(app: FastAPI, lookup: Callable[[str], Any], gens: Generations,
                        settings: Any) -> None:
    """The two generate routes on ``app``; ``lookup(name)`` gives the served model or 404;
    ``settings``: the server's ServeSettings (timeout_s, max_generations, max_new_tokens)."""

    def language_model(name: str) -> ServedLM:
        m = lookup(name)
        if not isinstance(m, ServedLM):
            raise HTTPException(422, f"model {name!r} is a classifier, not a language model; "
                                     f"use /v1/models/{name}/predict or /v2/models/{name}/infer")
        return m

    def begin(m: ServedLM, body: GenerateRequest, t0: float) -> _Generation:
        p = body.parameters
        if p.max_new_tokens > settings.max_new_tokens:
            raise HTTPException(422, f"parameters.max_new_tokens: {p.max_new_tokens}"
                                     f" is over this server's limit of "
                                     f"{settings.max_new_tokens} (--max-new-tokens)")
        gens.admit(1, settings.max_generations)
        sampling = {"temperature": p.temperature, "top_k": p.top_k, "top_p": p.top_p,
                    "repetition_penalty": p.repetition_penalty, "seed": p.seed}
        return gens.start(m, body.text_input, p.max_new_tokens, p.stop, sampling, t0)

    def final(g: _Generation, name: str, t0: float, text: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"model_name": name, "model_version": "1"}
        if text is not None:
            out["text_output"] = text
        seconds = time.perf_counter() - t0
        n = g.details.get("generated_tokens", 0)
        out.update(finish_reason=g.details.get("finish_reason"), prompt_tokens=g.details.get(
            "prompt_tokens"), generated_tokens=n, seconds=round(seconds, 4),
            tokens_per_second=round(n / seconds, 1) if seconds > 0 else None)
        return out

    @app.post("/v2/models/{name}/generate", response_model=None)
    async def generate(name: str, body: GenerateRequest) -> Response:
        """The whole continuation of ``text_input`` at once."""
        m = language_model(name)
        t0 = time.perf_counter()
        g = begin(m, body, t0)
        aborted = True
        try:
            async def collect() -> str:
                return "".join([piece async for piece in g.pieces()])

            text = await asyncio.wait_for(collect(), settings.timeout_s)
            aborted = False
        except TimeoutError:
            raise HTTPException(504, f"no answer within {settings.timeout_s:g} s (--timeout); "
                                     "ask for fewer max_new_tokens or use generate_stream"
                                ) from None
        except DlforgeError as err:
            aborted = False
            raise HTTPException(422, str(err)) from None
        finally:
            gens.release([g], aborted)
        return Response(orjson.dumps(final(g, name, t0, text)), media_type="application/json")

    @app.post("/v2/models/{name}/generate_stream", response_model=None)
    async def generate_stream(name: str, body: GenerateRequest, request: Request) -> Response:
        """Server-Sent Events: ``data: {"text_output": piece}`` per token, then a final event
        with ``finish_reason`` ("stop" or "length") and the token counts. Disconnecting stops
        the generation."""
        m = language_model(name)
        t0 = time.perf_counter()
        g = begin(m, body, t0)
        pieces = g.pieces()
        try:  # a bad prompt fails here, as a 422, before any event is sent
            first = await pieces.__anext__()
        except StopAsyncIteration:
            first = None
        except DlforgeError as err:
            gens.release([g], aborted=False)
            raise HTTPException(422, str(err)) from None
        except BaseException:
            gens.release([g], aborted=True)
            raise

        async def events() -> AsyncIterator[bytes]:
            done = False
            try:
                if first is not None:
                    yield _sse({"model_name": name, "text_output": first})
                    async for piece in pieces:
                        if await request.is_disconnected():
                            return
                        yield _sse({"model_name": name, "text_output": piece})
                yield _sse(final(g, name, t0))
                done = True
            finally:  # also when the client went away and the response was cancelled
                gens.release([g], aborted=not done)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})
