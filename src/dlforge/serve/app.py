"""The HTTP server: FastAPI routes over run directories, with dynamic batching.

Routes follow the Open Inference Protocol v2 (KServe, Triton, Seldon) plus a plain JSON route:

```
GET  /v2/health/live              GET  /v2/health/ready          GET  /v2
GET  /v2/models/{name}            GET  /v2/models/{name}/ready
POST /v2/models/{name}/infer      POST /v1/models/{name}/predict {"instances": [{...}, ...]}
(the three also under /v2/models/{name}/versions/1/...; infer with binary tensor data and
errors as {"error": ...}: serve/oip.py)
POST /v1/models/{name}/explain    (Integrated Gradients per instance; Shapley for a baseline)
POST /v2/models/{name}/generate   POST /v2/models/{name}/generate_stream (language models)
GET  /v1/models                   POST /v1/completions           POST /v1/chat/completions
                                  (OpenAI-compatible, language models: serve/openai_api.py)
GET  /metrics (Prometheus)        GET  /docs (OpenAPI)           GET  / (the playground page)
```

Limits: a body-size limit (413), a maximum of instances per request (413), every field
validated (422 naming it), an optional API key read from an environment variable (401; the key
is never logged), a per-request timeout (504), and a bounded queue (503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from dlforge._extras import missing_extra, require_extra

try:  # without the serve extra: one line naming it, not an ImportError traceback
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route
except ImportError as _err:
    raise missing_extra("serve", "dlforge serve") from _err

from dlforge._version import __version__
from dlforge.errors import ConfigError, DlforgeError, MissingExtraError
from dlforge.serve.batcher import DynamicBatcher, Overloaded
from dlforge.serve.forecast import ServedForecaster
from dlforge.serve.generate import Generations, ServedLM, add_generate_routes
from dlforge.serve.models import ServedModel, served_run
from dlforge.serve.oip import (
    EXTENSIONS,
    INFER_OPENAPI,
    add_error_shape,
    decode_inputs,
    encode_response,
    parse_infer_request,
)
from dlforge.serve.openai_api import add_openai_routes, is_openai_path, openai_error

__all__ = ["ServeSettings", "ServedModel", "app_from_env", "create_app", "served_run"]

_PLAYGROUND = (Path(__file__).parent / "static" / "playground.html").read_text(encoding="utf-8")
OPEN_PATHS = ("/", "/v2/health/live", "/v2/health/ready", "/metrics", "/docs", "/openapi.json",
              "/docs/oauth2-redirect")


@dataclass
class ServeSettings:
    max_batch_size: int = 64
    max_delay_ms: float = 5.0
    max_queue: int = 1024  # requests waiting; more get 503
    max_instances: int = 1024  # per request
    max_body_bytes: int = 10 * 2**20
    timeout_s: float = 30.0
    api_key: str | None = None
    max_generations: int = 32  # language models: generations at once (decoded together)
    max_new_tokens: int = 4096  # language models: the most tokens one request may ask for


class _FastJSON(JSONResponse):
    """JSON through orjson: the predictions are plain lists, dicts and floats already, so this
    skips FastAPI's recursive ``jsonable_encoder`` and the stdlib encoder (~3x faster)."""

    def render(self, content: Any) -> bytes:
        import orjson

        return orjson.dumps(content)



# ---------------------------------------------------------------------------------- requests
class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[Any] = Field(min_length=1)


class ExplainParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: str | int | float | bool | None = None
    steps: int | None = Field(None, ge=2, le=10_000)


class ExplainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[Any] = Field(min_length=1, max_length=16)
    parameters: ExplainParameters = Field(default_factory=ExplainParameters)


# ---------------------------------------------------------------------------------- metrics
class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("dlforge_requests", "HTTP requests", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("dlforge_request_seconds", "Request latency", ["route"],
                                 registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1,
                                          2.5, 5, 10))
        self.batch = Histogram("dlforge_batch_size", "Instances per forward pass", ["model"],
                               registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024))
        self.tokens = Counter("dlforge_generated_tokens", "Tokens generated", ["model"],
                              registry=self.registry)
        self.aborted = Counter("dlforge_generations_aborted", "Generations stopped early (client "
                               "gone, timeout)", ["model"], registry=self.registry)
        self.queue = Histogram("dlforge_queue_seconds", "Time the oldest request of a batch "
                               "waited", ["model"], registry=self.registry,
                               buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1))
        # Language models (serve/generate.py). Gauges sum over --workers processes.
        self.gen_queued = Gauge("dlforge_generations_queued", "Generations waiting for their "
                                "first token (for a place in the batch, or their prompt's "
                                "encoding)", ["model"], registry=self.registry,
                                multiprocess_mode="livesum")
        self.gen_running = Gauge("dlforge_generations_running", "Generations being decoded",
                                 ["model"], registry=self.registry, multiprocess_mode="livesum")
        self.ttft = Histogram("dlforge_time_to_first_token_seconds", "From the request to its "
                              "first generated token", ["model"], registry=self.registry,
                              buckets=(.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.tokens_per_second = Gauge("dlforge_generated_tokens_per_second", "Tokens "
                                       "generated per second over the last 10 s (with --workers,"
                                       " the scraped process's; rate() of "
                                       "dlforge_generated_tokens_total covers all)", ["model"],
                                       registry=self.registry, multiprocess_mode="livesum")


# ---------------------------------------------------------------------------------- the app
def create_app(models: list[ServedModel], settings: ServeSettings | None = None) -> FastAPI:
    require_extra("serve", "dlforge serve")  # prometheus_client and orjson too
    settings = settings or ServeSettings()
    by_name = {m.name: m for m in models}
    if len(by_name) != len(models):
        raise ConfigError("two models would be served under the same name; use --name")
    metrics = _Metrics()
    gens = Generations(metrics, settings)
    batchers: dict[str, DynamicBatcher] = {}
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202 - FastAPI's own protocol
        for m in models:
            if isinstance(m, ServedLM):  # generations decoded together (serve/generate.py)
                m.start_batcher(settings.max_generations)
                continue
            b = DynamicBatcher(m.predict, settings.max_batch_size, settings.max_delay_ms,
                               settings.max_queue, on_batch=_observer(metrics, m.name))
            b.start()
            batchers[m.name] = b
        state["ready"] = True
        yield
        state["ready"] = False  # graceful shutdown: finish what is queued
        for b in batchers.values():
            await b.stop()
        for m in models:
            if isinstance(m, ServedLM):
                await asyncio.to_thread(m.stop_batcher)

    app = FastAPI(title="dlforge", version=__version__, lifespan=lifespan,
                  description="Predictions from dlforge run directories (Open Inference "
                              "Protocol v2, plus /v1/models/{name}/predict).")

    app.add_middleware(_Guard, settings=settings, metrics=metrics, models=set(by_name),
                       routes=app.router.routes)

    def lookup(name: str) -> Any:
        if name not in by_name:
            raise HTTPException(404, f"no model {name!r}; served: {', '.join(by_name)}")
        return by_name[name]

    def versioned(name: str, version: str) -> Any:
        m = lookup(name)
        if version != "1":
            raise HTTPException(404, f"model {name!r} has no version {version!r}; its "
                                     "versions are: 1")
        return m

    def model(name: str) -> ServedModel | ServedForecaster:
        m = lookup(name)
        if isinstance(m, ServedLM):
            raise HTTPException(422, f"model {name!r} is a language model; use "
                                     f"/v2/models/{name}/generate or generate_stream, or "
                                     "/v1/completions")
        return m

    async def run(m: ServedModel | ServedForecaster,
                  rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(rows) > settings.max_instances:
            raise HTTPException(413, f"{len(rows)} instances; the limit is "
                                     f"{settings.max_instances} per request (--max-instances)")
        try:
            async with asyncio.timeout(settings.timeout_s):  # no task per request (wait_for's)
                return await batchers[m.name].submit(rows)
        except Overloaded:
            raise HTTPException(503, "the server is busy; retry shortly",
                                headers={"Retry-After": "1"}) from None
        except TimeoutError:
            raise HTTPException(504, f"no answer within {settings.timeout_s:g} s "
                                     "(--timeout)") from None
        except DlforgeError as err:
            raise HTTPException(422, str(err)) from None

    @app.get("/", include_in_schema=False)
    async def playground() -> HTMLResponse:
        """The playground page: pick a model, type an input, see the label and probabilities."""
        return HTMLResponse(_PLAYGROUND)

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        ok = state["ready"]
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "dlforge", "version": __version__, "extensions": EXTENSIONS,
                "models": list(by_name)}

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        return lookup(name).metadata()

    @app.get("/v2/models/{name}/versions/{version}")
    async def version_metadata(name: str, version: str) -> dict[str, Any]:
        return versioned(name, version).metadata()

    def readiness(name: str) -> Response:
        ok = state["ready"]
        return JSONResponse({"name": name, "ready": ok}, status_code=200 if ok else 503)

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        lookup(name)
        return readiness(name)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def version_ready(name: str, version: str) -> Response:
        versioned(name, version)
        return readiness(name)

    @app.post("/v1/models/{name}/predict", response_model=None)
    async def predict(name: str, body: PredictRequest) -> Response:
        """``{"instances": [{"<input>": value, ...}, ...]}`` → one prediction per instance:
        the label and every class's probability (or the number, for regression)."""
        m = model(name)
        rows = m.check(body.instances)
        # Plain JSON types already: skip FastAPI's (slow, recursive) jsonable_encoder.
        return _FastJSON({"model": name, "predictions": await run(m, rows)})

    @app.post("/v1/models/{name}/explain", response_model=None)
    async def explain(name: str, body: ExplainRequest) -> Response:
        """Integrated Gradients (Captum) for each instance (baseline Shapley values for a
        simple-baseline run): per-token (per-step, per-column, per-pixel) attributions of the
        predicted class (or ``parameters.target``), with the convergence delta. At most 16
        instances: each costs 50-800 forward/backward passes."""
        from dlforge.audit.explain import explain_instances

        m = model(name)
        rows = m.check(body.instances)
        p = body.parameters
        try:
            result = await asyncio.wait_for(asyncio.to_thread(
                explain_instances, m.clf, rows, p.target, p.steps), settings.timeout_s)
        except TimeoutError:
            raise HTTPException(504, f"no answer within {settings.timeout_s:g} s (--timeout); "
                                     "give fewer instances or fewer steps") from None
        except MissingExtraError as err:  # Captum is not installed on the server
            raise HTTPException(501, str(err)) from None
        except DlforgeError as err:
            raise HTTPException(422, str(err)) from None
        return _FastJSON({"model": name, "explanations": result})

    async def infer_route(request: Request) -> Response:
        """POST /v2/models/{name}[/versions/{version}]/infer: the body read as it comes (any
        Content-Type; binary tensor data), the outputs in JSON or binary (serve/oip.py)."""
        name, version = request.path_params["name"], request.path_params.get("version")
        if version is not None:
            versioned(name, version)
        m = model(name)
        req, raw = parse_infer_request(await request.body(), request.headers,
                                       settings.max_body_bytes)
        instances = decode_inputs(m, req, raw, settings.max_instances)
        preds = await run(m, m.check(instances, where="inputs"))
        return encode_response(name, req, m.infer_outputs(preds, len(instances)))

    # The infer routes are answered by plain Starlette routes placed first (below): FastAPI's
    # per-request machinery (dependency solving, its hooks) cost as much of the event loop
    # as the whole protocol did. These twins give /docs and openapi.json their schema.
    @app.post("/v2/models/{name}/infer", response_model=None, openapi_extra=INFER_OPENAPI)
    async def infer(name: str, request: Request) -> Response:
        """Open Inference Protocol v2: one input tensor per input column, each of shape
        [N] (images [N, H, W(, C)], sequences [N, T(, F)]), in the JSON or as binary tensor
        data after it; outputs in binary when asked (``parameters.binary_data``)."""
        return await infer_route(request)

    @app.post("/v2/models/{name}/versions/{version}/infer", response_model=None,
              openapi_extra=INFER_OPENAPI)
    async def version_infer(name: str, version: str, request: Request) -> Response:
        """The same, for the model's one version, 1."""
        return await infer_route(request)

    app.router.routes[:0] = [Route(path, infer_route, methods=["POST"]) for path in (
        "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer")]

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        gens.refresh()
        registry = metrics.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # --workers N: every worker's counts
            from prometheus_client import CollectorRegistry, multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    add_generate_routes(app, lookup, gens, settings)
    add_openai_routes(app, by_name, gens, settings)
    add_error_shape(app)  # after the OpenAI routes' handler, which it keeps for their paths
    app.state.batchers = batchers
    app.state.models = by_name
    return app


# ---------------------------------------------------------------------------------- workers
SPEC_ENV = "DLFORGE_SERVE_SPEC"


def app_from_env() -> FastAPI:
    """The app of one ``--workers N`` process (uvicorn's factory): the runs and settings come
    from $DLFORGE_SERVE_SPEC; the API key from the variable it names, never from the spec."""
    import torch

    spec = json.loads(os.environ[SPEC_ENV])
    settings = ServeSettings(**spec["settings"])
    if spec.get("api_key_env"):
        settings.api_key = os.environ[spec["api_key_env"]]
    # The workers share the machine's cores rather than each taking all of them.
    torch.set_num_threads(max(1, spec.get("threads", 1)))
    models = [served_run(path, name, spec["backend"]) for path, name in spec["models"]]
    return create_app(models, settings)


class _Guard:
    """API key, body-size limit and request metrics, as a plain ASGI middleware (Starlette's
    ``BaseHTTPMiddleware`` costs a task and a stream per request: a third of the server's time
    under load)."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: _Metrics,
                 models: set[str], routes: list[Any]):
        self.app, self.settings, self.metrics = app, settings, metrics
        self.models, self.routes = models, routes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        status = {"code": 500}

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            key = self.settings.api_key
            if key and path not in OPEN_PATHS:
                given = headers.get("x-api-key") or _bearer(headers)
                if not given or not hmac.compare_digest(given, key):
                    why = "missing or wrong API key (send it as X-API-Key or Authorization: Bearer)"
                    await JSONResponse(self._error(path, why, "invalid_api_key"),
                                       status_code=401, headers={"WWW-Authenticate": "Bearer"})(
                        scope, receive, send_status)
                    return
            if scope["method"] == "POST":
                limit = self.settings.max_body_bytes
                declared = headers.get("content-length")
                whole = declared is not None and declared.isascii() and declared.isdigit()
                too_big = whole and int(declared) > limit
                body = b""
                if not too_big:  # read it (counting) and hand it on
                    more = True
                    while more:
                        message = await receive()
                        body += message.get("body", b"")
                        more = message.get("more_body", False)
                        if len(body) > limit:
                            too_big = True
                            break
                if too_big:
                    size = int(declared) if whole else len(body)
                    why = f"request body is {size} bytes; the limit is {limit} (--max-body-bytes)"
                    await JSONResponse(self._error(path, why, "request_too_large"),
                                       status_code=413)(scope, receive, send_status)
                    return
                sent = {"done": False}

                async def replay() -> dict:
                    if not sent["done"]:
                        sent["done"] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_status)
                return
            await self.app(scope, receive, send_status)
        finally:
            route = _route_label(scope, self.routes, self.models)
            self.metrics.requests.labels(route, str(status["code"])).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - t0)


    @staticmethod
    def _error(path: str, message: str, code: str) -> dict[str, Any]:
        """The error body: OpenAI's shape on its routes (its clients read it), else ours."""
        if is_openai_path(path):
            return openai_error(message, code=code)
        return {"error": message}


def _observer(metrics: _Metrics, name: str):  # noqa: ANN202 - a small closure
    def observe(size: int, waited: float) -> None:
        metrics.batch.labels(name).observe(size)
        metrics.queue.labels(name).observe(waited)

    return observe


def _bearer(headers: Any) -> str | None:
    auth = headers.get("authorization", "")
    return auth[7:] if auth.lower().startswith("bearer ") else None


def _route_label(scope: dict, routes: list[Any], models: set[str]) -> str:
    """A low-cardinality label for the metrics: the route's template (``/v2/models/{name}/
    infer``) with a served model's name written in, ``unmatched`` for any path no route
    takes (a new series per random path would grow /metrics without bound)."""
    from starlette.routing import Match

    route = scope.get("route")  # set by the router; absent when _Guard answered (401, 413)
    params = scope.get("path_params", {})
    if route is None:
        for candidate in routes:
            match, child = candidate.matches(scope)
            if match != Match.NONE:
                route, params = candidate, child.get("path_params", {})
                break
    template = getattr(route, "path", None)
    if template is None:
        return "unmatched"
    name = params.get("name")
    return template.replace("{name}", name) if name in models else template
