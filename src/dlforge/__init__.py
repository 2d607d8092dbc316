"""dlforge: from a data file to a tuned, audited, served deep-learning model.

The public API; everything else is private unless documented.
"""

from __future__ import annotations

from dlforge._version import __version__
from dlforge.config import RunConfig, load_config
from dlforge.errors import (
    ConfigError,
    DataError,
    DlforgeError,
    MissingExtraError,
    NotFittedError,
    RunDirError,
)
from dlforge.estimate import estimate
from dlforge.estimators import (
    AudioClassifier,
    Forecaster,
    ImageClassifier,
    LanguageModel,
    PretrainedLM,
    Seq2Seq,
    SequenceModel,
    TabularClassifier,
    TabularRegressor,
    TextClassifier,
    audit,
    cross_validate,
    explain,
    load,
    tune,
)

__all__ = [
    "AudioClassifier",
    "ConfigError",
    "DataError",
    "DlforgeError",
    "Forecaster",
    "ImageClassifier",
    "LanguageModel",
    "MissingExtraError",
    "NotFittedError",
    "PretrainedLM",
    "Seq2Seq",
    "RunConfig",
    "RunDirError",
    "SequenceModel",
    "TabularClassifier",
    "TabularRegressor",
    "TextClassifier",
    "__version__",
    "audit",
    "cross_validate",
    "estimate",
    "explain",
    "load",
    "load_config",
    "tune",
]
