"""Text generation over HTTP for language-model runs (the Open Inference Protocol's generate
extension, as Triton speaks it):

```
POST /v2/models/{name}/generate         {"text_input": "...", "parameters": {...}}
                                         -> {"model_name", "text_output", "finish_reason", ...}
POST /v2/models/{name}/generate_stream  the same body -> Server-Sent Events: one event per
                                         token {"text_output": piece}, then a final event with
                                         "finish_reason" and the token counts
```

The tokens of every running generation of a model are decoded together, one batched step per
token (continuous batching: ``dlforge.lm.batch.DecodeBatcher``, started with the server); each
generation has a thread of its own that turns its tokens into text and hands the pieces to the
event loop through a queue, and checks a stop flag between tokens: a client that disconnects
(or a request that times out) stops its generation within a token. A bounded number run at
once; past it, 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from dlforge.errors import ConfigError, DlforgeError
from dlforge.estimators.language import LanguageModel

__all__ = ["GenerateParameters", "GenerateRequest", "ServedLM", "add_generate_routes"]

_END = object()  # the producer thread's last item


class ServedLM:
    """A loaded language-model run, served through the generate routes."""

    kind = "language model"

    def __init__(self, run_dir: str | Path, name: str | None = None, backend: str = "torch"):
        if backend != "torch":
            raise ConfigError(f"{run_dir}: language models are served with --backend torch "
                              "(the server decodes them in batches; dlforge export writes their "
                              "ONNX graph, with its key/value cache, for other runtimes)")
        self.path = Path(run_dir)
        self.name = name or self.path.resolve().name
        self.lm = LanguageModel.load(self.path)
        self.batcher: Any = None  # a DecodeBatcher while the server runs (start_batcher)

    def start_batcher(self, max_batch: int) -> None:
        self.batcher = self.lm.decode_batcher(max_batch).start()

    def stop_batcher(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()
            self.batcher = None

    def metadata(self) -> dict[str, Any]:
        cfg = self.lm.config_
        return {"name": self.name, "versions": ["1"], "platform": "dlforge",
                "inputs": [{"name": "text_input", "datatype": "BYTES", "shape": [1]}],
                "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [1]}],
                "parameters": {"task": self.kind, "model": "gpt", "tokenizer": cfg.tokenizer,
                               "block_size": cfg.block_size, "n_layer": cfg.n_layer,
                               "d_model": cfg.d_model,
                               "val_loss": self.lm.metrics_.get("val_loss")}}


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


class _Generation:
    """One generation in its own thread; pieces arrive on an asyncio queue."""

    def __init__(self, served: ServedLM, body: GenerateRequest,
                 on_token: Callable[[], None]) -> None:
        self.details: dict[str, Any] = {}
        self.stop = threading.Event()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.served, self.body, self.on_token = served, body, on_token
        self.thread = threading.Thread(target=self._produce, daemon=True,
                                       name=f"generate-{served.name}")

    def start(self) -> _Generation:
        self.thread.start()
        return self

    def _put(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)

    def _produce(self) -> None:
        p = self.body.parameters
        try:
            stream = self.served.lm.generate_stream(
                self.body.text_input, max_new_tokens=p.max_new_tokens,
                temperature=p.temperature, top_k=p.top_k, top_p=p.top_p,
                repetition_penalty=p.repetition_penalty, stop=p.stop, seed=p.seed,
                details=self.details, batcher=self.served.batcher)
            try:
                for piece in stream:
                    if self.stop.is_set():
                        break
                    self.on_token()
                    self._put(piece)
            finally:
                stream.close()
        except DlforgeError as err:  # bad prompt or setting: raised before the first piece
            self._put(err)
        except Exception as err:  # noqa: BLE001 - handed to the request, which answers 500
            self._put(err)
        finally:
            self._put(_END)

    async def pieces(self) -> AsyncIterator[str]:
        """The text pieces; raises what the generation raised."""
        while True:
            item = await self.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def add_generate_routes(app: FastAPI, lookup: Callable[[str], Any], metrics: Any,
                        settings: Any) -> None:
    """The two generate routes on ``app``; ``lookup(name)`` gives the served model or 404;
    ``settings``: the server's ServeSettings (timeout_s, max_generations, max_new_tokens)."""
    active = {"n": 0}

    def language_model(name: str) -> ServedLM:
        m = lookup(name)
        if not isinstance(m, ServedLM):
            raise HTTPException(422, f"model {name!r} is a classifier, not a language model; "
                                     f"use /v1/models/{name}/predict or /v2/models/{name}/infer")
        return m

    def begin(m: ServedLM, body: GenerateRequest) -> _Generation:
        if body.parameters.max_new_tokens > settings.max_new_tokens:
            raise HTTPException(422, f"parameters.max_new_tokens: {body.parameters.max_new_tokens}"
                                     f" is over this server's limit of "
                                     f"{settings.max_new_tokens} (--max-new-tokens)")
        if active["n"] >= settings.max_generations:
            raise HTTPException(503, f"{settings.max_generations} generations are running (the "
                                     "limit); retry shortly", headers={"Retry-After": "1"})
        active["n"] += 1
        tokens = metrics.tokens.labels(m.name)
        return _Generation(m, body, tokens.inc).start()

    def finish(g: _Generation, aborted: bool) -> None:
        g.stop.set()
        active["n"] -= 1
        if aborted:
            metrics.aborted.labels(g.served.name).inc()

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
        g = begin(m, body)
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
            finish(g, aborted)
        return Response(orjson.dumps(final(g, name, t0, text)), media_type="application/json")

    @app.post("/v2/models/{name}/generate_stream", response_model=None)
    async def generate_stream(name: str, body: GenerateRequest, request: Request) -> Response:
        """Server-Sent Events: ``data: {"text_output": piece}`` per token, then a final event
        with ``finish_reason`` ("stop" or "length") and the token counts. Disconnecting stops
        the generation."""
        m = language_model(name)
        t0 = time.perf_counter()
        g = begin(m, body)
        pieces = g.pieces()
        try:  # a bad prompt fails here, as a 422, before any event is sent
            first = await pieces.__anext__()
        except StopAsyncIteration:
            first = None
        except DlforgeError as err:
            finish(g, aborted=False)
            raise HTTPException(422, str(err)) from None
        except BaseException:
            finish(g, aborted=True)
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
                finish(g, aborted=not done)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache",
                                          "X-Accel-Buffering": "no"})
