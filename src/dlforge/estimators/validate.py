"""What the estimators accept, checked once at the front door: a table ``X`` and targets ``y``.

scikit-learn's ``check_array`` and ``check_classification_targets`` would do this for numeric
arrays, but a dlforge table also holds strings (categorical columns) and missing values (NaN,
imputed by the table's numeric features, as scikit-learn's HistGradientBoosting accepts them),
so the checks are written here: each bad input is one ``DataError`` (a ``ValueError``) that
says what was found, where, and what to do, in the words scikit-learn's checks look for.
"""

from __future__ import annotations

import datetime
import decimal
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.exceptions import DataConversionWarning

from dlforge.data.clean import is_missing
from dlforge.data.frames import as_list
from dlforge.errors import DataError, DataTypeError

__all__ = ["class_labels", "table", "target_values"]

# The cells a table's object column may hold besides missing values: categories (strings,
# integers, booleans, dates) and numbers. Floats and complex numbers are checked on their own.
_SCALARS = (str, bool, int, np.integer, np.bool_, decimal.Decimal, datetime.date,
            datetime.time, datetime.timedelta)
# pandas' names (``infer_dtype``) for object columns that hold only such cells.
_CLEAN_KINDS = {"string", "integer", "boolean", "empty", "date", "datetime", "datetime64",
                "time", "timedelta", "timedelta64", "decimal", "categorical"}


def table(X: Any, name: str = "X", min_rows: int = 0) -> pd.DataFrame:
    """``X`` (a pandas DataFrame, or a 2-D array whose columns become x0, x1, ...) as a frame
    with string column names, after checking that it is a dense table of at least one column
    (and ``min_rows`` rows) whose cells are numbers, strings or missing values — never
    infinite, complex, or a container such as a dict."""
    if sparse.issparse(X):
        raise DataError(f"{name}: sparse input is not supported: a table is read column by "
                        f"column as dense data; pass {name}.toarray() (if it fits in memory) "
                        "or a pandas DataFrame")
    if isinstance(X, pd.DataFrame):
        frame = X.reset_index(drop=True)
        if not all(isinstance(c, str) for c in frame.columns):
            frame.columns = [str(c) for c in frame.columns]
    else:
        try:
            arr = np.asarray(X)
        except ValueError as err:  # ragged rows
            raise DataError(f"{name}: expected a table (a pandas DataFrame or a 2-D array) "
                            f"with the same number of values in each row: {err}") from None
        if arr.ndim == 1:
            raise DataError(
                f"{name}: expected a table (a pandas DataFrame or a 2-D array), got a 1-D "
                f"array of shape {arr.shape}. Reshape your data either using "
                "array.reshape(-1, 1) if your data has a single feature or "
                "array.reshape(1, -1) if it contains a single sample.")
        if arr.ndim != 2:
            raise DataError(f"{name}: expected a table (a pandas DataFrame or a 2-D array), "
                            f"got an array of shape {arr.shape}")
        frame = pd.DataFrame(arr, columns=[f"x{j}" for j in range(arr.shape[1])])
    if frame.shape[1] == 0:
        raise DataError(f"{name}: 0 feature(s) (shape={frame.shape}) while a minimum of 1 is "
                        "required.")
    if len(frame) < min_rows:
        raise DataError(f"{name}: {len(frame)} sample(s) (shape={frame.shape}) while a "
                        f"minimum of {min_rows} is required.")
    for col in frame.columns:
        _check_column(frame[col], name)
    return frame


def _check_column(col: pd.Series, name: str) -> None:
    """One column: no complex numbers, no infinities, no cell that is not a scalar."""
    where = f"{name}: column {col.name!r}"
    if pd.api.types.is_complex_dtype(col.dtype):
        raise DataError(f"{where} holds complex numbers: Complex data not supported; pass "
                        "the real and imaginary parts as two columns")
    if pd.api.types.is_float_dtype(col.dtype):
        inf = np.isinf(col.to_numpy(dtype=np.float64, na_value=np.nan))
        if inf.any():
            row = int(np.flatnonzero(inf)[0])
            raise DataError(_inf_message(where, row, col.iloc[row]))
        return
    if col.dtype != object or pd.api.types.infer_dtype(col, skipna=True) in _CLEAN_KINDS:
        return
    for row, v in enumerate(col.tolist()):  # floats or mixed types: find the bad cell
        if isinstance(v, _SCALARS) or is_missing(v):
            continue
        if isinstance(v, float | np.floating):
            if np.isinf(v):
                raise DataError(_inf_message(where, row, v))
            continue
        if isinstance(v, complex | np.complexfloating):
            raise DataError(f"{where}, row {row} holds {v!r}: Complex data not supported")
        text = repr(v)
        raise DataTypeError(
            f"{where}, row {row} holds a {type(v).__name__} "
            f"({text if len(text) <= 40 else text[:37] + '...'}): float() argument must be a "
            "string or a number; a table's cells are numbers (numeric columns) or strings "
            "(categorical columns)")


def _inf_message(where: str, row: int, value: Any) -> str:
    return (f"{where}, row {row} holds {value}: infinite values are not supported (NaN is: a "
            "missing number is imputed with the column's training mean); replace them, e.g. "
            "X.replace([np.inf, -np.inf], np.nan)")


def target_values(y: Any, owner: str) -> list[Any]:
    """The targets ``y`` as a list. ``None`` is an error naming the estimator (``owner``); a
    column vector (n, 1) is taken as its one column with scikit-learn's
    ``DataConversionWarning``; complex numbers are an error."""
    if y is None:
        raise DataError(f"y: {owner} requires y to be passed, but the target y is None")
    if isinstance(y, np.ndarray | pd.DataFrame) and y.ndim == 2 and y.shape[1] == 1:
        warnings.warn("A column-vector y was passed when a 1d array was expected (it is "
                      "read as its one column). Please change the shape of y to "
                      "(n_samples,), for example using ravel().", DataConversionWarning,
                      stacklevel=3)
    values = as_list(y, "y")
    if (np.iscomplexobj(y) if isinstance(y, np.ndarray) else
            any(isinstance(v, complex | np.complexfloating) for v in values)):
        raise DataError("y: Complex data not supported; targets are class labels or real "
                        "numbers")
    return values


def class_labels(values: list[Any], regressor: str) -> list[Any]:
    """``values`` unchanged if they can be class labels; a non-integer number (a continuous
    target) is an error naming the ``regressor`` to use instead."""
    for v in values:
        if (isinstance(v, float | np.floating) and not is_missing(v)
                and not float(v).is_integer()):
            raise DataError(f"y: Unknown label type: continuous (the value {v!r} is not a "
                            f"class label); use {regressor} to predict numbers")
    return values
