"""Deployment for real-time prediction: an HTTP server with dynamic batching.

``dlforge serve RUN_DIR [RUN_DIR ...]``; :func:`dlforge.serve.app.create_app` builds the
FastAPI app, :class:`dlforge.serve.batcher.DynamicBatcher` coalesces concurrent requests.
"""
