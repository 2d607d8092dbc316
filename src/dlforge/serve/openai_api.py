"""OpenAI-compatible routes for language models, so that the ``openai`` client (and whatever
speaks its API) works against ``dlforge serve``:

```
GET  /v1/models                  the language models served      GET /v1/models/{name}
POST /v1/completions             {"model", "prompt", ...}         GPT runs and pretrained models
POST /v1/chat/completions        {"model", "messages", ...}       models with a chat template
```

A completion's ``prompt`` is a text, a list of texts, the token ids of one prompt or a list of
those (ids checked against the vocabulary).

Parameters: ``max_tokens`` (chat: or ``max_completion_tokens``), ``temperature`` (default 1),
``top_p``, ``stop`` (a string or a list), ``seed`` (choice j of a request samples with
``seed + j``), ``n`` (several choices, decoded in the same batch), ``stream`` (Server-Sent
Events in OpenAI's chunk format, ending with ``data: [DONE]``) with
``stream_options.include_usage``; and, as vLLM accepts them, ``top_k`` and
``repetition_penalty``. Every response counts ``usage`` (prompt, completion, total tokens);
each choice has a ``finish_reason`` (``stop``: a stop string or the model's end of text;
``length``: max_tokens or the context).

An unknown parameter is a 400 naming it; the OpenAI parameters this server does not implement
(penalties, logit bias, log-probabilities, tools, response formats, echo, suffix, best_of) are a
400 too, unless sent at the value that changes nothing (``presence_penalty: 0``, ...), which
some clients always send. Errors are OpenAI's ``{"error": {"message", "type", "param",
"code"}}``: 400 for a bad request (a prompt as long as the context, or ``max_tokens`` past the
context or past ``--max-new-tokens``: both numbers named; a chat request to a model without a
chat template), 401 for a missing or wrong API key (``Authorization: Bearer``; ``--api-key-env``),
404 for an unknown model, 503 when the queue is full, 504 past ``--timeout`` (non-streaming).
Requests past ``--max-generations`` running wait in a queue of ``--max-queue``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from dlforge.errors import DlforgeError
from dlforge.serve.generate import _END, Generations, ServedLM

__all__ = ["ChatRequest", "CompletionRequest", "OpenAIError", "add_openai_routes",
           "is_openai_path", "openai_error"]

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
          404: "invalid_request_error", 413: "invalid_request_error"}


def is_openai_path(path: str) -> bool:
    """The routes whose errors take OpenAI's shape (``/v1/models/{name}/predict`` is ours)."""
    return path in ("/v1/models", "/v1/completions", "/v1/chat/completions") or (
        path.startswith("/v1/models/") and path.count("/") == 3)


def openai_error(message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class OpenAIError(Exception):
    """An error answered in OpenAI's shape with ``status``."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers

    def response(self) -> JSONResponse:
        kind = _TYPES.get(self.status, "server_error")
        return JSONResponse(openai_error(self.message, kind, self.param, self.code),
                            status_code=self.status, headers=self.headers)


# ---------------------------------------------------------------------------------- requests
class _StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: _StreamOptions | None = None
    # Beyond OpenAI's own parameters, as vLLM takes them: our samplers have both.
    top_k: int | None = Field(None, ge=1)
    repetition_penalty: float | None = Field(None, gt=0.0)
    # Accepted and ignored, being harmless: an id of the caller's end user, for the caller's
    # abuse monitoring; it changes nothing in the answer.
    user: str | None = None
    # OpenAI parameters not implemented here: see `unsupported`.
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None

    # The parameters above (and below) that this server does not implement -> the value at
    # which each changes nothing (some clients always send it), or _UNSET: leave it out.
    unsupported: ClassVar[dict[str, Any]] = {"presence_penalty": 0.0,
                                             "frequency_penalty": 0.0, "logit_bias": {}}


_UNSET = object()


class CompletionRequest(_Common):
    # a text, several, the token ids of one, or of several (as OpenAI's API takes them)
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None  # equal to n changes nothing (checked in _check)
    logprobs: int | None = None  # 0 would ask for the sampled tokens' log-probabilities
    unsupported: ClassVar[dict[str, Any]] = {**_Common.unsupported, "echo": False,
                                             "suffix": "", "logprobs": _UNSET}


class ChatRequest(_Common):
    messages: list[Any] = Field(min_length=1)  # each checked by _messages (clearer errors)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    unsupported: ClassVar[dict[str, Any]] = {
        **_Common.unsupported, "logprobs": False, "top_logprobs": 0, "tools": [],
        "tool_choice": "none", "response_format": {"type": "text"}}


def _check(body: _Common) -> None:
    """What the schema does not say: an unimplemented parameter at a value that does
    something, stream_options without stream, an empty stop string."""
    for name, neutral in type(body).unsupported.items():
        value = getattr(body, name)
        if value is None or (value == neutral and type(value) is type(neutral)):
            continue
        only = ("leave it out" if neutral is _UNSET else
                f"only {orjson.dumps(neutral).decode()}, which changes nothing")
        raise OpenAIError(400, f"{name}: not supported by this server (got "
                               f"{orjson.dumps(value).decode()}; {only})", param=name,
                          code="unsupported_parameter")
    best_of = getattr(body, "best_of", None)
    if best_of is not None and best_of != body.n:
        raise OpenAIError(400, f"best_of: not supported by this server (got {best_of}; only "
                               f"best_of equal to n, {body.n}, which changes nothing)",
                          param="best_of", code="unsupported_parameter")
    if body.stream_options is not None and not body.stream:
        raise OpenAIError(400, "stream_options: only allowed with stream: true",
                          param="stream_options")
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    for j, stop in enumerate(stops):
        if not stop:
            raise OpenAIError(400, f"stop[{j}]: an empty string would stop at once",
                              param="stop")


def invalid_request(errors: list[dict[str, Any]], cls: type[BaseModel]) -> OpenAIError:
    """FastAPI's validation errors of an OpenAI route's body as OpenAI's 400: an unknown
    parameter named with the ones the route takes, else the first bad value."""
    def where(loc: tuple) -> list[str]:
        return [str(p) for p in loc[1:] if not str(p).startswith(("str", "list["))]

    unknown = [".".join(where(e["loc"])) for e in errors if e["type"] == "extra_forbidden"]
    if unknown:
        return OpenAIError(400, f"unrecognized request argument{'s' * (len(unknown) > 1)}: "
                                f"{', '.join(unknown)}; this route takes "
                                f"{', '.join(sorted(cls.model_fields))}",
                           param=unknown[0], code="unknown_parameter")
    first = errors[0]
    if first["type"] == "json_invalid":
        return OpenAIError(400, f"the request body is not valid JSON "
                                f"({first.get('ctx', {}).get('error', first['msg'])})")
    path = where(first["loc"])
    if not path and first["type"] != "missing":
        return OpenAIError(400, "the request body must be a JSON object (Content-Type: "
                                "application/json)")
    return OpenAIError(400, f"{'.'.join(path) or 'body'}: {first['msg']}",
                       param=path[0] if path else None, code="invalid_value")


def _messages(raw: list[Any]) -> list[dict[str, str]]:
    """OpenAI's messages as the chat template takes them: content parts of type text joined,
    ``developer`` as ``system``; anything else (images, tool calls) is a 400 naming it."""
    out = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise OpenAIError(400, f"{where}: expected an object with a role and a content",
                              param="messages")
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise OpenAIError(400, f"{where}.{extra[0]}: not supported by this server (a "
                                   "message has a role and a content)", param="messages",
                              code="unsupported_parameter")
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise OpenAIError(400, f"{where}.role: {role!r} is not supported; the roles are "
                                   "system, developer, user and assistant", param="messages")
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text"
                        and isinstance(part.get("text"), str)):
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise OpenAIError(400, f"{where}.content[{j}]: only text parts "
                                           f"({{\"type\": \"text\", \"text\": ...}}), got "
                                           f"{kind!r}", param="messages")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise OpenAIError(400, f"{where}.content: expected a string or a list of text "
                                   "parts", param="messages")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


# ---------------------------------------------------------------------------------- routes
def add_openai_routes(app: FastAPI, models: dict[str, Any], gens: Generations,
                      settings: Any) -> None:
    """The OpenAI routes on ``app`` over the language models among ``models`` (by name)."""

    async def handle(request: Request, err: OpenAIError) -> JSONResponse:
        return err.response()

    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        cls = {"/v1/completions": CompletionRequest,
               "/v1/chat/completions": ChatRequest}.get(request.url.path)
        if cls is None:  # every other route: FastAPI's 422
            return await request_validation_exception_handler(request, err)
        return invalid_request(list(err.errors()), cls).response()

    app.add_exception_handler(OpenAIError, handle)
    app.add_exception_handler(RequestValidationError, invalid)

    def language_model(name: str) -> ServedLM:
        m = models.get(name)
        if not isinstance(m, ServedLM):
            names = [n for n, x in models.items() if isinstance(x, ServedLM)]
            raise OpenAIError(404, f"model {name!r} does not exist here; the language models "
                                   f"served are: {', '.join(names) or 'none'}", param="model",
                              code="model_not_found")
        return m

    def card(m: ServedLM) -> dict[str, Any]:
        return {"id": m.name, "object": "model", "created": m.created, "owned_by": "dlforge"}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        """The language models served (OpenAI's model list)."""
        return {"object": "list",
                "data": [card(m) for m in models.values() if isinstance(m, ServedLM)]}

    @app.get("/v1/models/{name}")
    async def retrieve_model(name: str) -> dict[str, Any]:
        return card(language_model(name))

    @app.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """OpenAI's completions: the continuation of ``prompt`` (a string, a list of them,
        token ids, or a list of those)."""
        _check(body)
        m = language_model(body.model)
        prompt = body.prompt
        prompts = ([prompt] if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int))
                   else prompt)
        if not prompts:
            raise OpenAIError(400, "prompt: an empty list", param="prompt")
        ids = []
        for p in prompts:
            try:
                ids.append(m.prompt_ids(p) if isinstance(p, str) else m.token_ids(p))
            except DlforgeError as err:
                raise OpenAIError(400, str(err), param="prompt") from None
        return await respond(request, m, body, ids, body.max_tokens, chat=False)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: ChatRequest, request: Request) -> Response:
        """OpenAI's chat completions: the assistant's answer to ``messages``, the
        conversation rendered by the model's own chat template."""
        _check(body)
        m = language_model(body.model)
        limit = body.max_completion_tokens or body.max_tokens
        if body.max_tokens and body.max_completion_tokens and \
                body.max_tokens != body.max_completion_tokens:
            raise OpenAIError(400, "max_tokens and max_completion_tokens differ; give one",
                              param="max_completion_tokens")
        messages = _messages(body.messages)
        if not m.chat_template:
            raise OpenAIError(400, f"model {m.name!r} has no chat template, so it cannot chat: "
                                   "use /v1/completions, or fine-tune it with dlforge lm "
                                   "finetune --chat-template FILE", param="messages",
                              code="chat_template_missing")
        try:
            ids = m.chat_ids(messages)
        except DlforgeError as err:
            raise OpenAIError(400, str(err), param="messages") from None
        except Exception as err:  # noqa: BLE001 - the template refused (jinja's raise_exception)
            raise OpenAIError(400, f"messages: the model's chat template refused them: {err}",
                              param="messages") from None
        return await respond(request, m, body, [ids], limit, chat=True)

    def budgets(m: ServedLM, prompts: list[list[int]], asked: int | None, chat: bool,
                param: str) -> list[int]:
        """Each prompt's max_tokens, or a 400 naming the numbers."""
        ctx, cap = m.context, settings.max_new_tokens
        if asked is not None and asked > cap:
            raise OpenAIError(400, f"max_tokens is {asked}; this server's limit is {cap} "
                                   "(--max-new-tokens)", param="max_tokens",
                              code="max_tokens_too_large")
        out = []
        for ids in prompts:
            n = len(ids)
            if ctx is not None and n >= ctx:
                raise OpenAIError(400, f"the prompt is {n} tokens; the model's context is "
                                       f"{ctx} tokens (leave room for the answer)", param=param,
                                  code="context_length_exceeded")
            room = cap if ctx is None else min(cap, ctx - n)
            if asked is None:  # OpenAI's defaults: 16 for completions, the rest for chat
                out.append(room if chat else min(16, room))
            elif ctx is not None and n + asked > ctx:
                raise OpenAIError(400, f"the prompt is {n} tokens and max_tokens is {asked}: "
                                       f"{n + asked} in all, past the model's context of {ctx} "
                                       f"tokens; ask for at most {ctx - n}",
                                  param="max_tokens", code="context_length_exceeded")
            else:
                out.append(asked)
        return out

    async def respond(request: Request, m: ServedLM, body: Any, prompts: list[list[int]],
                       asked: int | None, chat: bool) -> Response:
        limits = budgets(m, prompts, asked, chat, "messages" if chat else "prompt")
        k = len(prompts) * body.n
        if k > settings.max_generations:
            raise OpenAIError(400, f"n: {len(prompts)} prompt(s) x n {body.n} = {k} choices; "
                                   f"this server decodes at most {settings.max_generations} "
                                   "at once (--max-generations)", param="n")
        try:
            gens.admit(k, settings.max_generations + settings.max_queue)
        except HTTPException as err:
            raise OpenAIError(503, err.detail, headers=err.headers) from None
        t0 = time.perf_counter()
        queue: asyncio.Queue = asyncio.Queue()
        sampling_of = {"temperature": 1.0 if body.temperature is None else body.temperature,
                       "top_k": body.top_k, "top_p": body.top_p,
                       "repetition_penalty": body.repetition_penalty or 1.0}
        started = []
        try:
            for i, ids in enumerate(prompts):
                for j in range(body.n):
                    seed = None if body.seed is None else body.seed + j
                    started.append(gens.start(m, ids, limits[i], body.stop,
                                              {**sampling_of, "seed": seed}, t0, queue,
                                              len(started)))
        except BaseException:
            gens.release(started, aborted=True)
            gens.admitted -= k - len(started)
            raise
        reply = _Reply(m.name, chat, started, prompts)
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(reply.events(queue, request, gens, usage),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache",
                                              "X-Accel-Buffering": "no"})
        aborted = True
        try:
            await asyncio.wait_for(reply.collect(queue), settings.timeout_s)
            aborted = False
        except TimeoutError:
            raise OpenAIError(504, f"no answer within {settings.timeout_s:g} s (--timeout); "
                                   "ask for fewer max_tokens or use stream: true",
                              code="timeout") from None
        finally:
            gens.release(started, aborted)
        return Response(orjson.dumps(reply.whole()), media_type="application/json")


class _Reply:
    """One request's choices: collected whole, or streamed as OpenAI's chunks."""

    def __init__(self, name: str, chat: bool, gens: list[Any], prompts: list[list[int]]):
        self.name, self.chat, self.gens = name, chat, gens
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.texts: list[list[str]] = [[] for _ in gens]

    def usage(self) -> dict[str, int]:
        done = sum(g.details.get("generated_tokens", 0) for g in self.gens)
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": done,
                "total_tokens": self.prompt_tokens + done}

    @staticmethod
    def _failed(item: BaseException) -> OpenAIError:
        if isinstance(item, DlforgeError):
            return OpenAIError(400, str(item))
        return OpenAIError(500, f"the generation failed: {type(item).__name__}: {item}")

    async def collect(self, queue: asyncio.Queue) -> None:
        ended = 0
        while ended < len(self.gens):
            idx, item = await queue.get()
            if item is _END:
                ended += 1
            elif isinstance(item, BaseException):
                raise self._failed(item)
            else:
                self.texts[idx].append(item)

    def whole(self) -> dict[str, Any]:
        choices = []
        for i, g in enumerate(self.gens):
            text = "".join(self.texts[i])
            choice: dict[str, Any] = {"index": i}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": text}
            else:
                choice["text"] = text
            choice.update(logprobs=None, finish_reason=g.details.get("finish_reason"))
            choices.append(choice)
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.name, "choices": choices, "usage": self.usage()}

    def _chunk(self, index: int, piece: str | None, finish: str | None = None,
               role: bool = False) -> bytes:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else (
                {} if piece is None else {"content": piece})
            choice: dict[str, Any] = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": piece or ""}
        choice.update(logprobs=None, finish_reason=finish)
        return _sse({"id": self.id, "object": "chat.completion.chunk" if self.chat
                     else "text_completion", "created": self.created, "model": self.name,
                     "choices": [choice], "usage": None})

    async def events(self, queue: asyncio.Queue, request: Request, gens: Generations,
                     usage: bool) -> AsyncIterator[bytes]:
        done = False
        try:
            if self.chat:
                for i in range(len(self.gens)):
                    yield self._chunk(i, None, role=True)
            ended = 0
            while ended < len(self.gens):
                idx, item = await queue.get()
                if item is _END:
                    ended += 1
                    yield self._chunk(idx, None, self.gens[idx].details.get("finish_reason"))
                    continue
                if isinstance(item, BaseException):
                    err = self._failed(item)
                    yield _sse(openai_error(err.message, "server_error", code=err.code))
                    return
                if await request.is_disconnected():
                    return
                yield self._chunk(idx, item)
            if usage:
                yield _sse({"id": self.id, "object": "chat.completion.chunk" if self.chat
                            else "text_completion", "created": self.created,
                            "model": self.name, "choices": [], "usage": self.usage()})
            yield b"data: [DONE]\n\n"
            done = True
        finally:  # also when the client went away and the response was cancelled
            gens.release(self.gens, aborted=not done)


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"
