"""Deployment for real-time prediction: an HTTP server with dynamic batching.

``dlforge serve RUN_DIR [RUN_DIR ...]``; :func:`dlforge.serve.app.create_app` builds the
FastAPI app, :class:`dlforge.serve.batcher.DynamicBatcher` coalesces concurrent requests.
"""

from dlforge.errors import ConfigError

BACKENDS = ("torch", "onnx")


def check_backend(backend: str) -> str:
    """``backend`` if it is one ``dlforge serve --backend`` knows, else ConfigError."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: {' or '.join(BACKENDS)}, got {backend!r}")
    return backend
