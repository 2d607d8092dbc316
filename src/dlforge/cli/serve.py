"""``dlforge export`` and ``dlforge serve``: deployment."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from dlforge._extras import require_extra
from dlforge.cli._common import Commands
from dlforge.cli._common import examples as _examples
from dlforge.errors import ConfigError

__all__ = ["COMMANDS"]

COMMANDS = Commands()


# ----------------------------------------------------------------------------------- export
@COMMANDS(epilog=_examples(
    "dlforge export runs/tweets --format onnx                 # writes runs/tweets.onnx",
    "dlforge export runs/credit --format onnx --out models/credit.onnx",
))
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    format: Annotated[str, typer.Option("--format", help="onnx.")] = "onnx",
    out: Annotated[Path | None, typer.Option(
        help="The file to write (default: RUN_DIR.onnx beside the run).")] = None,
) -> None:
    """Export a run's model to ONNX (dynamic batch and length) and verify it on the spot:
    onnxruntime must match PyTorch (the simple baseline: scikit-learn) within 1e-4 on sample
    inputs, or nothing is written. A network that blends in the simple baseline also writes
    the baseline's graph (RUN_DIR.baseline.onnx); the JSON says how the two combine."""
    require_extra("onnx", "dlforge export")
    from dlforge.serve.export import export_onnx

    if format != "onnx":
        raise ConfigError(f"--format: only onnx is supported, got {format!r}")
    info = export_onnx(run_dir, out)
    target = out or run_dir.with_suffix(".onnx")
    typer.echo(f"wrote {target} and {target.with_suffix('.onnx.json').name}: "
               f"inputs {', '.join(i['name'] for i in info['inputs'])}; onnxruntime matches "
               f"{info.get('verified_against', 'PyTorch')} within "
               f"{info['max_abs_difference']:.1e}")
    if "blend" in info:
        base = info["baseline"]
        typer.echo(f"wrote {target.with_suffix('.baseline.onnx')}: the simple baseline "
                   f"({base['name']}, a {info['blend']['baseline_weight']:g} share of the "
                   f"predictions), inputs {', '.join(i['name'] for i in base['inputs'])}; "
                   f"onnxruntime matches scikit-learn within {base['max_abs_difference']:.1e}")


# ----------------------------------------------------------------------------------- serve
@COMMANDS(epilog=_examples(
    "dlforge serve runs/tweets                       # http://127.0.0.1:8000/docs",
    "dlforge serve runs/tweets runs/credit --port 9000 --api-key-env DLFORGE_API_KEY",
    "dlforge serve runs/tweets --workers 4 --backend onnx   # 4 processes, one port",
    "dlforge serve models/smollm2 runs/support      # OpenAI API: /v1/chat/completions",
    "curl -s localhost:8000/v1/models/tweets/predict -H 'content-type: application/json' "
    "-d '{\"instances\": [{\"text\": \"Thank you!\"}]}'",
))
def serve(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="Run directories (or Hugging Face model folders) to serve.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    name: Annotated[list[str] | None, typer.Option(
        help="Route name of each run (default: its folder's name).")] = None,
    max_batch_size: Annotated[int, typer.Option(
        help="Instances per forward pass; 1 turns dynamic batching off.")] = 64,
    max_delay_ms: Annotated[float, typer.Option(
        help="Longest wait to fill a batch, in ms.")] = 5.0,
    max_instances: Annotated[int, typer.Option(help="Instances per request.")] = 1024,
    max_body_bytes: Annotated[int, typer.Option(help="Request body size limit.")] = 10 * 2**20,
    max_queue: Annotated[int, typer.Option(
        help="Requests waiting before the server answers 503.")] = 1024,
    timeout: Annotated[float, typer.Option(help="Per-request timeout in seconds.")] = 30.0,
    api_key_env: Annotated[str | None, typer.Option(
        help="Require the API key held in this environment variable.")] = None,
    backend: Annotated[str, typer.Option(
        help="torch, or onnx (onnxruntime on RUN_DIR.onnx, exported if missing).")] = "torch",
    workers: Annotated[int, typer.Option(
        help="Server processes sharing the port, each with its own batcher.")] = 1,
    max_new_tokens: Annotated[int, typer.Option(
        help="Language models: the most tokens one request may generate.")] = 4096,
    max_generations: Annotated[int, typer.Option(
        help="Language models: generations at once, decoded together (more get 503).")] = 32,
) -> None:
    """Serve run directories over HTTP: Open Inference Protocol v2 routes, a plain
    /v1/models/NAME/predict, /metrics (Prometheus) and /docs, with dynamic batching; language
    models (GPT runs, pretrained model folders, fine-tune runs) also through OpenAI's
    /v1/completions and /v1/chat/completions, their generations decoded together."""
    require_extra("serve", "dlforge serve")  # before importing the app: one line, not a trace
    if backend == "onnx":
        require_extra("onnx", "dlforge serve --backend onnx")
    import uvicorn

    from dlforge.serve.app import ServeSettings, create_app, served_run

    names = list(name or [])
    if names and len(names) != len(run_dirs):
        raise ConfigError(f"--name: give one name per run directory ({len(run_dirs)}), got "
                          f"{len(names)}")
    if max_batch_size < 1:
        raise ConfigError(f"--max-batch-size: must be at least 1, got {max_batch_size}")
    key = None
    if api_key_env is not None:
        key = os.environ.get(api_key_env)
        if not key:
            raise ConfigError(f"--api-key-env: the environment variable {api_key_env} is not "
                              "set or empty")
    if workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {workers}")
    # Loaded here even with --workers N: a bad run fails now with one line, not N tracebacks
    # (and the onnx backend exports once, before the workers race to do it).
    models = [served_run(d, names[i] if names else None, backend)
              for i, d in enumerate(run_dirs)]
    settings = ServeSettings(max_batch_size=max_batch_size, max_delay_ms=max_delay_ms,
                             max_queue=max_queue, max_instances=max_instances,
                             max_body_bytes=max_body_bytes, timeout_s=timeout, api_key=key,
                             max_new_tokens=max_new_tokens, max_generations=max_generations)
    typer.echo("serving " + ", ".join(f"{m.name} ({m.path})" for m in models)
               + f" on http://{host}:{port} (playground: /, docs: /docs"
               + (f", {workers} workers" if workers > 1 else "") + ")", err=True)
    graceful = int(max(timeout, 1))
    if workers == 1:
        uvicorn.run(create_app(models, settings), host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=graceful)
        return
    _serve_workers(models, settings, api_key_env, backend, workers, host, port, graceful)


def _serve_workers(models: list[Any], settings: Any, api_key_env: str | None, backend: str,
                   workers: int, host: str, port: int, graceful: int) -> None:
    """uvicorn's process manager over ``app_from_env``: N processes on one socket, each with
    its own batcher and cores/N threads; /metrics sums them (Prometheus multiprocess mode)."""
    import tempfile
    from dataclasses import asdict

    import uvicorn

    from dlforge.serve.app import SPEC_ENV

    spec_settings = asdict(settings)
    spec_settings["api_key"] = None  # the workers read the key from api_key_env themselves
    spec = {"models": [[str(m.path.resolve()), m.name] for m in models], "backend": backend,
            "settings": spec_settings, "api_key_env": api_key_env,
            "threads": (os.cpu_count() or 1) // workers}
    del models
    with tempfile.TemporaryDirectory(prefix="dlforge-metrics-") as prom:
        os.environ[SPEC_ENV] = json.dumps(spec)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom
        uvicorn.run("dlforge.serve.app:app_from_env", factory=True, workers=workers,
                    host=host, port=port, log_level="warning",
                    timeout_graceful_shutdown=graceful)
