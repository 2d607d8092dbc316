"""Tables: ``TabularClassifier`` and ``TabularRegressor``.

Numeric columns are standardised (missing values imputed with the mean, with a 0/1 indicator),
categorical columns embedded, and an MLP sits on top (the finance use: credit scoring, risk).
Text columns named in ``text`` get the family's text encoder: mixed inputs, one encoder per
column, concatenated, then the head.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, RegressorMixin

from dlforge.data.clean import is_missing
from dlforge.data.frames import as_list
from dlforge.errors import DataError
from dlforge.estimators.base import DeepModel, table_init
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
    family's text encoder (mixed inputs)."""

    OUTPUT_TYPE = "auto"

    KIND = "tabular"
    __init__ = table_init("tabular", *_COLUMN_ARGS)

    def fit(self, X: Any, y: Any, *, epochs: int | None = None, batch_size: int | None = None,
            validation_split: float | None = None, callbacks: Sequence[Callback] = ()
            ) -> _Tabular:
        """Train on a table ``X`` (a pandas DataFrame, or a 2-D array whose columns become
        x0, x1, ...) and outputs ``y``."""
        frame = _as_frame(X)
        labels = as_list(y, "y")
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
        return self._fit_frame(df, cfg, source="X", callbacks=callbacks)

    def _columns(self, X: Any) -> pd.DataFrame:
        frame = _as_frame(X)
        names = [i.name for i in self.config_.inputs]
        missing = [n for n in names if n not in frame.columns]
        if missing:
            raise DataError(f"X: column {missing[0]!r} is missing; the model was trained on "
                            f"columns {', '.join(names)}")
        return frame[names]


def _as_frame(X: Any) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X.reset_index(drop=True)
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise DataError(f"X: expected a table (a pandas DataFrame or a 2-D array), got shape "
                        f"{arr.shape}")
    return pd.DataFrame(arr, columns=[f"x{j}" for j in range(arr.shape[1])])


class TabularClassifier(ClassifierMixin, _Tabular):
    __doc__ = "Classify the rows of a table. " + (_Tabular.__doc__ or "")
    OUTPUT_TYPE = "auto"

    def fit(self, X: Any, y: Any, **kwargs: Any) -> TabularClassifier:
        y_list = as_list(y, "y")
        if any(isinstance(v, float) and not is_missing(v) and not v.is_integer()
               for v in y_list):
            raise DataError("y: non-integer numbers are not class labels; use TabularRegressor "
                            "to predict numbers")
        super().fit(X, y_list, **kwargs)
        return self


class TabularRegressor(RegressorMixin, _Tabular):
    __doc__ = "Predict a number for each row of a table (MAE, RMSE, R²). " + (
        _Tabular.__doc__ or "")
    OUTPUT_TYPE = "numeric"
