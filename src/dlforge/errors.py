"""The errors dlforge raises for things a user can fix.

The CLI turns every ``DlforgeError`` into one line on stderr and exit code 2; anything else is a
bug in dlforge and keeps its traceback.
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SklearnNotFittedError

__all__ = ["ConfigError", "DataError", "DataTypeError", "DlforgeError", "MissingExtraError",
           "NotFittedError", "RunDirError"]


class DlforgeError(Exception):
    """Base class of errors caused by user input (bad data, config or paths)."""


class ConfigError(DlforgeError, ValueError):
    """A config key is unknown, has the wrong type or an invalid value."""


class DataError(DlforgeError, ValueError):
    """A data file is missing, unreadable or does not hold what the config asks for."""


class DataTypeError(DataError, TypeError):
    """A value in the data is of a type dlforge cannot read (a dict in a table's cell)."""


class RunDirError(DlforgeError):
    """A folder is not a complete dlforge run directory."""


class NotFittedError(DlforgeError, _SklearnNotFittedError):
    """An estimator was used before ``fit``: scikit-learn's ``NotFittedError`` too (a
    ``ValueError`` and an ``AttributeError``), so its tools and checks recognise it."""


class MissingExtraError(DlforgeError, ImportError):
    """A feature's optional dependencies (its extra, e.g. ``dlforge[serve]``) are not installed;
    the message names the ``pip install`` that adds them (see ``dlforge._extras``)."""
