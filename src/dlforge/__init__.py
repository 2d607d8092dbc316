"""dlforge: from a data file to a tuned, audited, served deep-learning model.

The public API; everything else is private unless documented.
"""

from __future__ import annotations

__version__ = "0.1.0"

from dlforge.api import cross_validate  # noqa: E402
from dlforge.audit.explain import explain  # noqa: E402
from dlforge.audit.fairness import audit  # noqa: E402  (dlforge.audit is this function)
from dlforge.config import RunConfig, load_config  # noqa: E402
from dlforge.errors import (  # noqa: E402
    ConfigError,
    DataError,
    DlforgeError,
    NotFittedError,
    RunDirError,
)
from dlforge.estimate import estimate  # noqa: E402
from dlforge.estimators import (  # noqa: E402
    ImageClassifier,
    SequenceModel,
    TabularClassifier,
    TabularRegressor,
    TextClassifier,
)
from dlforge.forecast import Forecaster  # noqa: E402
from dlforge.lm import LanguageModel  # noqa: E402
from dlforge.run import load  # noqa: E402
from dlforge.tune import tune  # noqa: E402

__all__ = [
    "ConfigError",
    "DataError",
    "DlforgeError",
    "Forecaster",
    "ImageClassifier",
    "LanguageModel",
    "NotFittedError",
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
