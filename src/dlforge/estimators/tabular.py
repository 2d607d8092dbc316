"""Tables: ``TabularClassifier`` and ``TabularRegressor``.

Numeric columns are standardised (missing values imputed with the mean, with a 0/1 indicator),
categorical columns embedded, and an MLP sits on top (the finance use: credit scoring, risk).
Text columns named in ``text`` get the family's text encoder: mixed inputs, one encoder per
column, concatenated, then the head.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, RegressorMixin

from dlforge.data.clean import is_missing
from dlforge.errors import DataError
from dlforge.estimators.base import DeepModel, table_init
from dlforge.estimators.validate import class_labels, table, target_values
from dlforge.train.callbacks import Callback

__all__ = ["TabularClassifier", "TabularRegressor", "infer_inputs"]

# ------------------------------------------------------------------------------------ tables
def infer_inputs(df: pd.DataFrame, exclude: Sequence[str] = (), numeric: Sequence[str] = (),
                 category: Sequence[str] = (), text: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Input configs for a table's columns: the named ones as given; every other column
    (except ``exclude``) numeric if all its values are numbers, else category."""
    named = {**{c: "numeric" for c in numeric}, **{c: "category" for c in category},
             **{c: "text" for c in text}}
    missing = [c for c in named if c not in df.columns]
    if missing:
        raise DataError(f"column {missing[0]!r} is not in the table; its columns are: "
                        f"{', '.join(map(str, df.columns))}")
    out = []
    for col in df.columns:
        if col in exclude:
            continue
        kind = named.get(col) or _guess_kind(df[col])
        out.append({"name": str(col), "type": kind})
    if not out:
        raise DataError("the table has no input columns besides the output")
    return out


def _guess_kind(col: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(col):
        return "category"
    if pd.api.types.is_numeric_dtype(col):
        return "numeric"
    values = [v for v in col.tolist() if not is_missing(v) and v != ""]
    try:
        [float(v) for v in values]
    except (TypeError, ValueError):
        return "category"
    return "numeric" if values else "category"


# The columns of the table, by kind (the rest are guessed from their values): not
# hyperparameters, so not in the parameter table.
_COLUMN_ARGS = tuple(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                       annotation="list[str] | None")
                     for name in ("numeric", "category", "text"))


class _Tabular(DeepModel):
    """A table: numeric columns standardised (missing values imputed, with an indicator),
    categorical columns embedded, an MLP on top; text columns named in ``text`` get the
    family's text encoder (mixed inputs).

    ``X`` is a pandas DataFrame (its columns are matched by name when predicting: extra ones,
    such as the label or a sensitive feature, are ignored) or a 2-D array (its columns are
    matched by position: exactly ``n_features_in_`` of them). Missing numbers (NaN) are
    imputed; infinite, complex and non-scalar cells and sparse matrices are errors."""

    OUTPUT_TYPE = "auto"

    KIND = "tabular"
    __init__ = table_init("tabular", *_COLUMN_ARGS)

    def fit(self, X: Any, y: Any, *, epochs: int | None = None, batch_size: int | None = None,
            validation_split: float | None = None, callbacks: Sequence[Callback] = ()
            ) -> Self:
        """Train on a table ``X`` (a pandas DataFrame, or a 2-D array whose columns become
        x0, x1, ...) and outputs ``y``."""
        frame = table(X, min_rows=1)
        labels = self._targets(y)
        if len(frame) != len(labels):
            raise DataError(f"X has {len(frame)} rows but y has {len(labels)} labels")
        output = "__label__" if "label" in frame.columns else "label"
        base = {"inputs": infer_inputs(frame, (), self.numeric or (), self.category or (),
                                       [self.text] if isinstance(self.text, str)
                                       else self.text or ()),
                "output": {"name": output, "type": self.OUTPUT_TYPE}}
        cfg = self._fit_overrides(epochs, batch_size, validation_split, base)
        df = frame.copy()
        df[cfg.output.name] = labels
        self._fit_frame(df, cfg, source="X", callbacks=callbacks)
        return self

    def _targets(self, y: Any) -> list[Any]:
        """``y`` checked and as a list (a classifier also refuses a continuous target)."""
        return target_values(y, type(self).__name__)

    # The fitted columns, derived from the run's inputs (one per column of the table), so a
    # model loaded from a run directory has them too. A table given as an array has columns
    # named x0, x1, ...: such a model has no feature names.
    @property
    def n_features_in_(self) -> int:
        """The number of columns of the table the model was fitted on."""
        self._check_fitted()
        return len(self.config_.inputs)

    @property
    def feature_names_in_(self) -> np.ndarray:
        """The column names of the DataFrame the model was fitted on (absent, as in
        scikit-learn, when it was fitted on an array)."""
        names = self._input_names()
        if names == _positional(len(names)):
            raise AttributeError(f"{type(self).__name__} was fitted on an array, without "
                                 "column names: it has no feature_names_in_")
        return np.asarray(names, dtype=object)

    def _input_names(self) -> list[str]:
        self._check_fitted()
        return [i.name for i in self.config_.inputs]

    def _columns(self, X: Any) -> pd.DataFrame:
        frame = table(X)
        names = self._input_names()
        named = names != _positional(len(names))
        missing = [n for n in names if n not in frame.columns]
        if isinstance(X, pd.DataFrame) and (named or not missing):
            if missing:
                raise DataError(f"X: column {missing[0]!r} is missing; the model was trained "
                                f"on columns {', '.join(names)}")
            return frame[names]
        if frame.shape[1] != len(names):
            raise DataError(f"X has {frame.shape[1]} features, but {type(self).__name__} is "
                            f"expecting {len(names)} features as input (the columns it was "
                            f"trained on, in this order: {_preview(names)})")
        if named or isinstance(X, pd.DataFrame):  # as scikit-learn warns
            what = ("X does not have valid feature names, but {} was fitted with feature names"
                    if named else "X has feature names, but {} was fitted without feature "
                    "names")
            warnings.warn(what.format(type(self).__name__) + ": its columns are taken by "
                          f"position as {_preview(names)}", UserWarning, stacklevel=4)
        frame.columns = names
        return frame

    def __sklearn_tags__(self):  # noqa: ANN204 - scikit-learn's own type
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # missing numbers are imputed (with an indicator)
        return tags


def _positional(n: int) -> list[str]:
    """The column names a table given as an array gets."""
    return [f"x{j}" for j in range(n)]


def _preview(names: list[str], k: int = 10) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


class TabularClassifier(ClassifierMixin, _Tabular):
    __doc__ = "Classify the rows of a table. " + (_Tabular.__doc__ or "")
    OUTPUT_TYPE = "auto"

    def _targets(self, y: Any) -> list[Any]:
        return class_labels(super()._targets(y), "TabularRegressor")


class TabularRegressor(RegressorMixin, _Tabular):
    __doc__ = "Predict a number for each row of a table (MAE, RMSE, R²). " + (
        _Tabular.__doc__ or "")
    OUTPUT_TYPE = "numeric"
