"""Numeric sequences and series: parse a cell into a sequence (``parse_sequence``), and the
data side of forecasting — check a time column, read numeric series, scale them, cut sliding
windows, split chronologically, and score forecasts against naive baselines.

A sample at time step ``t`` has the input ``values[t - window:t]`` and the target
``targets[t:t + horizon]``. Splits and folds are ranges of *target* time steps, so a later split's
inputs may look back into earlier history while no target ever lands in two splits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from pandas.api.types import (
    is_bool_dtype,
    is_datetime64_any_dtype,
    is_numeric_dtype,
    is_timedelta64_dtype,
)
from pandas.tseries.frequencies import to_offset

from dlforge.data.clean import is_missing
from dlforge.errors import DataError, NotFittedError

__all__ = [
    "SeriesScaler",
    "check_time_column",
    "chronological_split",
    "forecast_metrics",
    "guess_season",
    "make_windows",
    "naive_forecast",
    "numeric_matrix",
    "parse_sequence",
    "seasonal_naive_forecast",
    "time_series_folds",
]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


# ---------------------------------------------------------------------------------- reading
def _show(value: Any) -> str:
    """A value as a message shows it: strings quoted, everything else as printed."""
    return repr(value) if isinstance(value, str) else str(value)


def _column(df: pd.DataFrame, column: str, source: str, what: str = "column") -> pd.Series:
    if column not in df.columns:
        raise DataError(f"{source}: {what} {column!r} not found; columns are "
                        f"{[str(c) for c in df.columns]}")
    col = df[column]
    if isinstance(col, pd.DataFrame):
        raise DataError(f"{source}: {what} {column!r} appears {col.shape[1]} times; "
                        "column names must be unique")
    return col.reset_index(drop=True)


def _blank(col: pd.Series) -> np.ndarray:
    """Missing values, counting empty or all-space strings as missing."""
    missing = np.array(col.isna(), dtype=bool)  # a writeable copy (pandas views are read-only)
    if not (is_numeric_dtype(col) or is_datetime64_any_dtype(col)):
        missing |= np.array([isinstance(v, str) and not v.strip() for v in col], dtype=bool)
    return missing


def _parse_time(col: pd.Series, column: str, source: str) -> pd.Series:
    """The time column as pandas datetimes or float numbers; DataError on the first bad row."""
    missing = _blank(col)
    if missing.any():
        row = int(np.argmax(missing))
        raise DataError(f"{source}: row {row + 1}, column {column!r}: missing time value "
                        "(every row needs a time)")
    if is_datetime64_any_dtype(col):
        return col
    if is_bool_dtype(col) or is_timedelta64_dtype(col):
        raise DataError(f"{source}: column {column!r} holds {col.dtype} values; a time column "
                        "needs dates/times or numbers")
    if is_numeric_dtype(col):
        parsed = col.astype("float64")
    else:
        parsed = pd.to_numeric(col, errors="coerce")
        if parsed.isna().any():  # not all numbers: read as dates/times instead
            parsed = _to_datetime(col)
    bad = np.array(parsed.isna(), dtype=bool)
    if not is_datetime64_any_dtype(parsed):
        bad |= ~np.isfinite(parsed.to_numpy(dtype="float64", na_value=np.nan))
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(f"{source}: row {row + 1}, column {column!r}: {_show(col.iloc[row])} "
                        "cannot be parsed as a date/time or a number (use one date format "
                        "throughout, e.g. 2020-01-31, or plain numbers)")
    return parsed


def _to_datetime(col: pd.Series) -> pd.Series:
    """Dates/times with unparseable values as NaT (mixed time zones are converted to UTC)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for utc in (False, True):
            try:
                return pd.to_datetime(col, errors="coerce", utc=utc)
            except (ValueError, TypeError, OverflowError):
                continue
        out = []
        for value in col:
            try:
                out.append(pd.to_datetime(value, utc=True))
            except (ValueError, TypeError, OverflowError):
                out.append(pd.NaT)
        return pd.Series(out, dtype="datetime64[ns, UTC]")


def check_time_column(df: pd.DataFrame, column: str, source: str) -> pd.DataFrame:
    """Check that ``column`` holds parseable, strictly increasing times (dates or numbers).

    Returns ``df`` unchanged; rows are never reordered. Raises DataError naming the first bad row.
    """
    col = _column(df, column, source, what="time column")
    times = _parse_time(col, column, source)
    previous = times.shift(1)
    backwards = (times < previous).to_numpy(dtype=bool)
    repeated = (times == previous).to_numpy(dtype=bool)
    wrong = backwards | repeated
    if wrong.any():
        row = int(np.argmax(wrong))
        now, before = _show(col.iloc[row]), _show(col.iloc[row - 1])
        if backwards[row]:
            raise DataError(f"{source}: row {row + 1}, column {column!r}: time goes backwards "
                            f"({now} comes after {before} on row {row}); sort the rows by time "
                            "first")
        raise DataError(f"{source}: row {row + 1}, column {column!r}: duplicate time {now} "
                        f"(same as row {row}); each time step must appear once")
    return df


def _numeric_column(col: pd.Series, column: str, source: str) -> np.ndarray:
    if is_datetime64_any_dtype(col) or is_timedelta64_dtype(col):
        raise DataError(f"{source}: column {column!r} holds {col.dtype} values, not numbers")
    missing = _blank(col)
    if is_bool_dtype(col) and not missing.any():
        values = col.to_numpy(dtype="float64")
    elif is_numeric_dtype(col):
        values = col.to_numpy(dtype="float64", na_value=np.nan)
    else:
        try:
            values = pd.to_numeric(col, errors="coerce").to_numpy(dtype="float64",
                                                                   na_value=np.nan)
        except (TypeError, ValueError):
            values = np.array([_one_number(v) for v in col], dtype="float64")
    problem = missing | ~np.isfinite(values) | (np.abs(values) > _FLOAT32_MAX)
    if problem.any():
        row = int(np.argmax(problem))
        where = f"{source}: row {row + 1}, column {column!r}"
        raw = col.iloc[row]
        if missing[row]:
            raise DataError(f"{where}: missing value (series must have no gaps; fill or drop "
                            "them first)")
        if np.isnan(values[row]):
            raise DataError(f"{where}: {_show(raw)} is not a number")
        if np.isinf(values[row]):
            raise DataError(f"{where}: {_show(raw)} is not a finite number")
        raise DataError(f"{where}: {_show(raw)} is too large (beyond float32 range)")
    return values


def _one_number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def numeric_matrix(df: pd.DataFrame, columns: Sequence[str], source: str) -> np.ndarray:
    """The given columns as a float32 matrix (T, k); DataError on a missing or non-numeric value,
    naming its row and column."""
    columns = list(columns)
    out = np.empty((len(df), len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        out[:, j] = _numeric_column(_column(df, name, source), name, source)
    return out


# ---------------------------------------------------------------------------------- scaling
class SeriesScaler:
    """Per-column standardisation ``(x - mean) / std``, fitted on the training part only."""

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> SeriesScaler:
        """Learn mean and std of each column of ``x`` (T, F); a constant column gets std 1."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or len(x) == 0:
            raise DataError(f"cannot fit a scaler on data of shape {x.shape}; "
                            "need at least one time step (T, F)")
        std = x.std(axis=0)
        self.mean_ = x.mean(axis=0)
        self.std_ = np.where(std > 1e-12, std, 1.0)
        return self

    def _fitted(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mean_ is None or self.std_ is None:
            raise NotFittedError("SeriesScaler is not fitted; call fit() first")
        return self.mean_, self.std_

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Scaled float32 copy of ``x`` (..., F)."""
        mean, std = self._fitted()
        x = np.asarray(x)
        if x.shape[-1] != len(mean):
            raise ValueError(f"scaler was fitted on {len(mean)} columns, got {x.shape[-1]}")
        return ((x - mean) / std).astype(np.float32)

    def inverse(self, x: np.ndarray, columns: Sequence[int] | None = None) -> np.ndarray:
        """Undo the scaling of ``x`` (..., K) whose last axis holds the fitted columns at indices
        ``columns`` (all fitted columns when None)."""
        mean, std = self._fitted()
        idx = np.arange(len(mean)) if columns is None else np.asarray(columns, dtype=np.int64)
        x = np.asarray(x)
        if x.shape[-1] != len(idx):
            raise ValueError(f"inverse of {len(idx)} columns got an array with {x.shape[-1]}")
        return (x * std[idx] + mean[idx]).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-able state."""
        mean, std = self._fitted()
        return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeriesScaler:
        """A fitted scaler from :meth:`to_dict` output."""
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            std = np.asarray(d["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"scaler state needs numeric lists 'mean' and 'std': {e}") from e
        if mean.ndim != 1 or mean.shape != std.shape or not (std > 0).all():
            raise DataError("scaler state needs 'mean' and 'std' lists of equal length with "
                            "every std > 0")
        scaler = cls()
        scaler.mean_, scaler.std_ = mean, std
        return scaler


# ---------------------------------------------------------------------------------- windows
def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a[:, None] if a.ndim == 1 else a


def make_windows(values: np.ndarray, targets: np.ndarray, window: int, horizon: int,
                 start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, window, F) and targets (N, horizon, K): one sample per step ``t`` whose target
    range ``[t, t + horizon)`` lies inside ``[start, stop)`` and whose input ``values[t-window:t]``
    exists (it may reach back before ``start``). 1-D arrays count as one column."""
    values, targets = _as_2d(values), _as_2d(targets)
    n_steps = len(values)
    if len(targets) != n_steps:
        raise ValueError(f"values have {n_steps} steps but targets have {len(targets)}")
    if window < 1 or horizon < 1:
        raise ValueError(f"window and horizon must be >= 1, got {window} and {horizon}")
    stop = n_steps if stop is None else stop
    if not 0 <= start <= stop <= n_steps:
        raise ValueError(f"need 0 <= start <= stop <= {n_steps}, got start={start} stop={stop}")
    first, last = max(start, window), stop - horizon  # first and last sample step t
    if last < first:
        return (np.empty((0, window, values.shape[1]), values.dtype),
                np.empty((0, horizon, targets.shape[1]), targets.dtype))
    # sliding_window_view puts the window on a new last axis: (T - w + 1, F, w)
    inputs = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)
    outputs = np.lib.stride_tricks.sliding_window_view(targets, horizon, axis=0)
    x = inputs[first - window:last - window + 1].transpose(0, 2, 1)
    y = outputs[first:last + 1].transpose(0, 2, 1)
    return np.array(x, order="C"), np.array(y, order="C")  # writeable copies of the views


# ---------------------------------------------------------------------------------- splits
def chronological_split(n_steps: int, window: int, horizon: int, validation: float,
                        test: float) -> dict[str, tuple[int, int]]:
    """Target ranges ``{"train", "validation", "test"}`` in time order; validation and test take
    those fractions of the steps at the end (a zero fraction gives an empty range)."""
    for name, frac in (("validation", validation), ("test", test)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} fraction must be in [0, 1), got {frac}")
    if validation + test >= 1:
        raise ValueError(f"validation + test fractions must be < 1, got {validation + test}")
    need = window + horizon
    if n_steps < need:
        raise DataError(f"series has {n_steps} steps; window {window} + horizon {horizon} "
                        f"needs at least {need}")
    n_test = int(round(test * n_steps))
    n_val = int(round(validation * n_steps))
    for name, frac, size in (("validation", validation, n_val), ("test", test, n_test)):
        if frac > 0 and size < horizon:
            raise DataError(f"{name} split gets {size} of {n_steps} steps ({frac:g}) but needs "
                            f"at least {horizon} (the horizon) for one full window; use a longer "
                            f"series, a larger {name} fraction or a shorter horizon")
    test_start = n_steps - n_test
    val_start = test_start - n_val
    if val_start - window < horizon:
        raise DataError(f"train split gets {val_start} of {n_steps} steps but needs at least "
                        f"{need} (window {window} + horizon {horizon}) for one full window; use "
                        "a longer series or smaller validation/test fractions")
    return {"train": (window, val_start), "validation": (val_start, test_start),
            "test": (test_start, n_steps)}


def time_series_folds(n_steps: int, window: int, horizon: int,
                      k: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """``k`` expanding-window folds ``((train_start, train_stop), (test_start, test_stop))`` of
    target ranges: fold i trains on ``[window, cut_i)`` and tests on ``[cut_i, cut_{i+1})``, the
    last fold ending at ``n_steps`` (as sklearn's TimeSeriesSplit)."""
    if k < 1:
        raise ValueError(f"need k >= 1 folds, got {k}")
    need = window + (k + 1) * horizon
    if n_steps < need:
        raise DataError(f"series has {n_steps} steps; {k} folds with window {window} and "
                        f"horizon {horizon} need at least {window} + {k + 1} x {horizon} = {need}")
    size = (n_steps - window) // (k + 1)
    cuts = [n_steps - (k - i) * size for i in range(k)] + [n_steps]
    return [((window, cuts[i]), (cuts[i], cuts[i + 1])) for i in range(k)]


# ---------------------------------------------------------------------------------- baselines
def naive_forecast(history_last_values: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat each sample's last observed value: (N, K) -> (N, horizon, K)."""
    last = np.asarray(history_last_values)
    if last.ndim != 2:
        raise ValueError(f"expected last values of shape (N, K), got {last.shape}")
    return np.repeat(last[:, None, :], horizon, axis=1)


def seasonal_naive_forecast(inputs_target_history: np.ndarray, horizon: int,
                            season: int) -> np.ndarray:
    """Repeat the value one season earlier: (N, window, K) -> (N, horizon, K)."""
    history = np.asarray(inputs_target_history)
    if history.ndim != 3:
        raise ValueError(f"expected history of shape (N, window, K), got {history.shape}")
    if season < 1:
        raise ValueError(f"season must be >= 1, got {season}")
    window = history.shape[1]
    if window < season:
        raise DataError(f"window {window} is shorter than season {season}; seasonal naive "
                        "needs window >= season")
    steps = window - season + np.arange(horizon) % season
    return history[:, steps, :]


# ---------------------------------------------------------------------------------- metrics
def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, dtype=np.float64)
    f = np.asarray(y_pred, dtype=np.float64)
    if a.shape != f.shape:
        raise ValueError(f"y_true has shape {a.shape} but y_pred has {f.shape}")
    if a.size == 0:
        raise ValueError("no values to score")
    return a, f


def forecast_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and sMAPE (percent, 200/n sum |F-A| / (|A|+|F|), 0/0 terms counted as 0)."""
    a, f = _pair(y_true, y_pred)
    err = f - a
    denom = np.abs(a) + np.abs(f)
    ratio = np.divide(np.abs(err), denom, out=np.zeros_like(denom), where=denom > 0)
    return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
            "smape": float(200.0 * ratio.mean())}


# ---------------------------------------------------------------------------------- seasons
_SEASONS: tuple[tuple[type, int], ...] = (
    (pd.offsets.Hour, 24),
    (pd.offsets.BusinessDay, 5),
    (pd.offsets.Day, 7),
    (pd.offsets.Week, 52),
    (pd.offsets.MonthBegin, 12),
    (pd.offsets.MonthEnd, 12),
    (pd.offsets.QuarterBegin, 4),
    (pd.offsets.QuarterEnd, 4),
)


def guess_season(index: pd.Series | pd.DatetimeIndex | None, default: int = 1) -> int:
    """Season length of regular datetime steps: 24 hourly, 7 daily, 5 business-daily, 52 weekly,
    12 monthly, 4 quarterly; of fractional years in steps of 1/12, 1/4 or 1/52: 12, 4, 52;
    ``default`` for anything else (other numbers, irregular steps, None)."""
    if index is None or len(index) < 3:
        return default
    if is_numeric_dtype(index) and not is_bool_dtype(index):
        # Fractional years (1949.0, 1949.083, ...): steps of 1/12 are monthly, 1/4 quarterly.
        steps = np.diff(np.asarray(index, dtype=np.float64))
        if len(steps) and np.allclose(steps, steps[0], rtol=1e-3) and 0 < steps[0] < 1:
            per_unit = 1.0 / steps[0]
            if abs(per_unit - round(per_unit)) < 1e-2 and round(per_unit) in (4, 12, 52):
                return int(round(per_unit))
        return default
    if not is_datetime64_any_dtype(index):
        return default
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            freq = pd.infer_freq(pd.DatetimeIndex(index))
            offset = to_offset(freq) if freq is not None else None
    except (TypeError, ValueError):
        return default
    if offset is None or offset.n != 1:
        return default
    for kind, season in _SEASONS:
        if isinstance(offset, kind):
            return season
    return default


# --------------------------------------------------------------------------------- sequence
def parse_sequence(value: Any, row: int, column: str, source: str) -> np.ndarray:
    """One cell as a (T, F) float array: a list / array of numbers (F = 1) or of equal-length
    vectors, or a string of numbers separated by spaces, commas or semicolons ("[...]" too)."""
    v = value
    if isinstance(v, str):
        text = v.strip().strip("[]")
        parts = [p for p in text.replace(",", " ").replace(";", " ").split() if p]
        try:
            v = [float(p) for p in parts]
        except ValueError:
            bad = next(p for p in parts if not _is_float(p))
            raise DataError(f"{source}: row {row + 1}, column {column!r}: {bad!r} is not a "
                            "number (a sequence is numbers separated by spaces or commas)"
                            ) from None
    elif is_missing(v):
        v = []
    try:
        arr = np.asarray(v, dtype=np.float32)
    except (TypeError, ValueError):
        raise DataError(f"{source}: row {row + 1}, column {column!r}: expected a sequence of "
                        f"numbers, got {_short(value)}") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or len(arr) == 0:
        raise DataError(f"{source}: row {row + 1}, column {column!r}: expected a non-empty "
                        f"sequence of numbers (T,) or vectors (T, F), got {_short(value)}")
    if not np.isfinite(arr).all():
        raise DataError(f"{source}: row {row + 1}, column {column!r}: missing or infinite "
                        "value inside the sequence")
    return arr


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

