"""The errors dlforge raises for things a user can fix.

The CLI turns every ``DlforgeError`` into one line on stderr and exit code 2; anything else is a
bug in dlforge and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "DlforgeError", "MissingExtraError", "NotFittedError",
           "RunDirError"]


class DlforgeError(Exception):
    """Base class of errors caused by user input (bad data, config or paths)."""


class ConfigError(DlforgeError, ValueError):
    """A config key is unknown, has the wrong type or an invalid value."""


class DataError(DlforgeError, ValueError):
    """A data file is missing, unreadable or does not hold what the config asks for."""


class RunDirError(DlforgeError):
    """A folder is not a complete dlforge run directory."""


class NotFittedError(DlforgeError, AttributeError):
    """An estimator was used before ``fit``."""


class MissingExtraError(DlforgeError, ImportError):
    """A feature's optional dependencies (its extra, e.g. ``dlforge[serve]``) are not installed;
    the message names the ``pip install`` that adds them (see ``dlforge._extras``)."""
