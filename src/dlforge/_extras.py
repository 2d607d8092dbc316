"""The optional dependencies, by extra (``pip install 'dlforge[serve]'``), and the one way a
feature imports one: :func:`require` returns the module, or raises
:class:`~dlforge.errors.MissingExtraError` whose one line names the extra and the pip command
(the CLI prints it as a user error, exit code 2). Core, ``pip install dlforge``, is what
training, saving, loading and predicting need.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from dlforge.errors import MissingExtraError

__all__ = ["EXTRAS", "PRIVACY_FEATURE", "missing_extra", "require", "require_extra"]

# extra -> the modules its features import (keep in step with pyproject.toml's extras).
EXTRAS: dict[str, tuple[str, ...]] = {
    "serve": ("fastapi", "uvicorn", "orjson", "prometheus_client"),  # dlforge serve
    "tune": ("optuna",),                                              # dlforge tune
    "onnx": ("onnx", "onnxruntime", "skl2onnx"),      # dlforge export, serve --backend onnx
    "audit": ("fairlearn", "captum"),                 # dlforge audit, dlforge explain
    "privacy": ("opacus",),                           # DP-SGD: --dp-epsilon, privacy:
    "llm": ("peft", "gguf", "accelerate"),            # dlforge lm import / finetune
    "track": ("mlflow", "tensorboard"),               # --track, tracking: (experiment tracking)
    "audio": ("soundfile",),                          # --audio, AudioClassifier: audio files
    "seq2seq": ("sacrebleu",),                        # BLEU and chrF of Seq2Seq runs
}

# The ``feature`` of the privacy extra: training with DP-SGD, and loading a run trained so.
PRIVACY_FEATURE = "differentially private training (--dp-epsilon, privacy:)"


def missing_extra(extra: str, feature: str) -> MissingExtraError:
    """The error (to raise) saying that ``feature`` needs ``extra``."""
    return MissingExtraError(f"{feature} needs the {extra} extra, which is not installed: "
                             f"pip install 'dlforge[{extra}]'")


def require(module: str, extra: str, feature: str) -> ModuleType:
    """``import module`` (e.g. ``"optuna"``), or MissingExtraError naming ``extra`` if it (or
    something it imports) is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise missing_extra(extra, feature) from err


def require_extra(extra: str, feature: str) -> None:
    """Import every module of ``extra`` (see :data:`EXTRAS`), or MissingExtraError."""
    for module in EXTRAS[extra]:
        require(module, extra, feature)
