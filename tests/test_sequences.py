"""Sequences (classification) and time series (forecasting): API, CLI, bad inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dlforge import Forecaster, SequenceModel, load
from dlforge.errors import DataError
from tests.test_cli import _assert_nothing_written, assert_user_error, run_cli

FAST = dict(epochs=6, batch_size=16, lr=5e-3, patience=0, verbose=0, precision="fp32")


def waves(n: int = 160, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Noisy sine waves of varying length: slow ones and fast ones."""
    rng = np.random.default_rng(seed)
    seqs, labels = [], []
    for _ in range(n):
        fast = bool(rng.random() < 0.5)
        t = np.arange(int(rng.integers(12, 30)))
        freq = 0.8 if fast else 0.2
        seqs.append(np.sin(freq * t + rng.uniform(0, 6)) + rng.normal(0, 0.1, len(t)))
        labels.append("fast" if fast else "slow")
    return seqs, labels


@pytest.mark.parametrize("model", ["rnn", "cnn", "transformer"])
def test_sequence_model_families(model, tmp_path):
    seqs, labels = waves()
    small = {"rnn": dict(hidden=16, d_model=8, epochs=10),
             "cnn": dict(d_model=8, filters=8, epochs=10),
             "transformer": dict(d_model=16, heads=2, epochs=20, lr=3e-3)}[model]
    clf = SequenceModel(model, **{**FAST, **small}).fit(seqs, labels)
    assert clf.metrics_["task"] == "sequence classification"
    assert clf.metrics_["validation"]["accuracy"] >= 0.8
    clf.save(tmp_path / "run")
    again = load(tmp_path / "run")
    assert type(again) is SequenceModel
    assert np.array_equal(again.predict_proba(seqs[:20]), clf.predict_proba(seqs[:20]))


def test_sequences_from_a_table_with_augmentation(tmp_path, capsys):
    seqs, labels = waves(80)
    df = pd.DataFrame({"trace": [" ".join(f"{v:.3f}" for v in s) for s in seqs],
                       "speed": labels})
    csv = tmp_path / "waves.csv"
    df.to_csv(csv, index=False)
    args = ["train", "--data", csv, "--sequence", "trace", "--label", "speed", "--hidden", "8",
            "--d-model", "8", "--epochs", "2", "--precision", "fp32", "--augment-jitter",
            "0.05", "--augment-scaling", "0.1", "--augment-slice", "0.2", "--quiet"]
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "a")
    assert code == 0, err
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "b")
    assert code == 0, err
    ha = pd.read_csv(tmp_path / "a" / "history.csv")["train_loss"]
    hb = pd.read_csv(tmp_path / "b" / "history.csv")["train_loss"]
    assert ha.tolist() == hb.tolist()  # seeded
    code, _, err = run_cli(capsys, "predict", tmp_path / "a", "--data", csv, "--out",
                           tmp_path / "p.csv")
    assert code == 0, err
    assert set(pd.read_csv(tmp_path / "p.csv")["prediction"]) <= {"fast", "slow"}
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "a", "--data", csv)
    assert code == 0 and "majority baseline" in out, err
    df.loc[3, "trace"] = "0.1 0.2 oops 0.4"
    df.to_csv(csv, index=False)
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "c")
    assert_user_error(code, err, "waves.csv", "row 4, column 'trace'", "'oops' is not a number")
    _assert_nothing_written(tmp_path / "c")


def test_series_augmenter():
    from dlforge.data.augment import SeriesAugmenter

    x = np.sin(np.linspace(0, 6, 40))[:, None].astype(np.float32)
    aug = SeriesAugmenter(jitter=0.1, scaling=0.2, slice=0.3, seed=1)
    out = aug(x)
    assert out.shape == x.shape and not np.allclose(out, x)
    a, b = SeriesAugmenter(slice=0.3, seed=2), SeriesAugmenter(slice=0.3, seed=2)
    a.set_epoch(3)
    b.set_epoch(3)
    assert np.array_equal(a(x), b(x))
    assert np.array_equal(SeriesAugmenter()(x), x)
    with pytest.raises(ValueError, match="augment.slice"):
        SeriesAugmenter(slice=1.0)


# ------------------------------------------------------------------------------ forecasting
def seasonal_series(n: int = 150, seed: int = 0) -> pd.DataFrame:
    """Monthly: a trend, a 12-month season and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    value = 100 + 0.8 * t + 20 * np.sin(2 * np.pi * t / 12) + rng.normal(0, 2, n)
    return pd.DataFrame({"month": pd.date_range("2010-01-01", periods=n, freq="MS"),
                         "sales": value})


def test_forecaster_beats_the_naive_baselines_and_round_trips(tmp_path):
    df = seasonal_series()
    fc = Forecaster(window=24, horizon=6, hidden=32, d_model=16, epochs=40, batch_size=16,
                    lr=5e-3, patience=0, verbose=0, precision="fp32", test_split=0.15)
    fc.fit(df, "sales", time="month")
    m = fc.metrics_
    assert m["task"] == "forecasting" and fc.data_report_["season"] == 12
    for split in ("validation", "test"):
        assert m[split]["mae"] < m[split]["baseline"]["mae"]  # beats the last value
        assert "seasonal_naive" in m[split]
    splits = fc.data_report_["splits"]  # chronological, no target step in two splits
    assert splits["train"][1] == splits["validation"][0] < splits["test"][0]
    pred = fc.predict(df)
    assert list(pred.columns) == ["month", "step", "sales"] and len(pred) == 6
    assert pred["month"].iloc[0] == pd.Timestamp("2022-07-01")
    fc.save(tmp_path / "run")
    again = load(tmp_path / "run")
    assert type(again) is Forecaster
    pd.testing.assert_frame_equal(again.predict(df), pred)
    ev = again.evaluate(df)
    assert ev["n_windows"] == 150 - 24 - 6 + 1 and ev["mae"] < ev["baseline"]["mae"]


def test_forecaster_with_covariates_and_exogenous():
    rng = np.random.default_rng(0)
    n = 160
    promo = (rng.random(n) < 0.3).astype(float)  # known in advance
    temp = np.sin(np.arange(n) / 5) + rng.normal(0, 0.1, n)
    sales = 50 + 30 * promo + 5 * temp + rng.normal(0, 1, n)
    df = pd.DataFrame({"sales": sales, "temp": temp, "promo": promo})
    params = dict(window=8, horizon=3, hidden=16, d_model=8, epochs=30, batch_size=16,
                  lr=5e-3, patience=0, verbose=0, precision="fp32")
    with_exo = Forecaster(**params).fit(df, "sales", covariates=["temp"], exogenous=["promo"])
    without = Forecaster(**params).fit(df[["sales"]], "sales")
    assert (with_exo.metrics_["validation"]["mae"]
            < 0.6 * without.metrics_["validation"]["mae"])  # the future promotions matter
    pred = with_exo.predict(df)  # the last 3 rows are the "future": their promo values count
    assert len(pred) == 3
    with pytest.raises(DataError, match="window"):
        with_exo.predict(df.iloc[:5])


def test_forecast_from_the_cli_with_time_series_cv(tmp_path, capsys):
    df = seasonal_series(120)
    csv = tmp_path / "sales.csv"
    df.to_csv(csv, index=False)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", csv, "--forecast", "sales", "--time",
                             "month", "--window", "12", "--horizon", "3", "--hidden", "8",
                             "--d-model", "8", "--epochs", "3", "--precision", "fp32",
                             "--cv", "2", "--quiet", "--out", run)
    assert code == 0, err
    assert "seasonal naive (season" in out and "2-fold cross-validation" in out
    code, out, _ = run_cli(capsys, "evaluate", run, "--data", csv)
    assert code == 0 and "naive (last value)" in out
    code, _, err = run_cli(capsys, "predict", run, "--data", csv, "--out", tmp_path / "f.csv")
    assert code == 0, err
    assert len(pd.read_csv(tmp_path / "f.csv")) == 3
    code, out, _ = run_cli(capsys, "info", run)
    assert code == 0 and "3 steps ahead from a window of 12" in out


def test_forecast_bad_inputs(tmp_path, capsys):
    df = seasonal_series(40)
    csv = tmp_path / "s.csv"

    def train(frame: pd.DataFrame, *extra: str) -> tuple[int, str]:
        frame.to_csv(csv, index=False)
        out = tmp_path / "run"
        code, _, err = run_cli(capsys, "train", "--data", csv, "--forecast", "sales", "--time",
                               "month", "--epochs", "1", "--quiet", *extra, "--out", out)
        _assert_nothing_written(out)
        return code, err

    code, err = train(df, "--window", "36", "--horizon", "12")
    assert_user_error(code, err, "series has 40 steps", "window 36 + horizon 12",
                      "at least 48")
    shuffled = df.iloc[[0, 1, 3, 2, *range(4, 40)]]
    code, err = train(shuffled, "--window", "6")
    assert_user_error(code, err, "row 4, column 'month'", "time goes backwards")
    dup = df.copy()
    dup.loc[5, "month"] = dup.loc[4, "month"]
    code, err = train(dup, "--window", "6")
    assert_user_error(code, err, "row 6, column 'month'", "duplicate time")
    bad = df.astype({"sales": object})
    bad.loc[9, "sales"] = "n/a?"
    code, err = train(bad, "--window", "6")
    assert_user_error(code, err, "row 10", "column 'sales'", "not a number")
    code, err = train(df, "--window", "6", "--model", "mlp")
    assert_user_error(code, err, "'mlp' does not fit sequence inputs",
                      "families that fit sequence inputs: transformer, cnn, rnn")


def test_duplicate_rows_compare_whole_arrays():
    from dlforge.config import CleanConfig
    from dlforge.data.clean import clean_frame

    a = np.zeros(2000)
    b = a.copy()
    b[1000] = 1.0  # differs only in the middle, which repr() would elide
    df = pd.DataFrame({"s": pd.Series([a, b, a.copy()], dtype=object), "y": ["p", "p", "p"]})
    out, report = clean_frame(df, [], "y", CleanConfig(), key_cols=["s"])
    assert report["duplicates_dropped"] == 1 and len(out) == 2


def test_multivariate_forecast_two_targets():
    rng = np.random.default_rng(0)
    t = np.arange(120)
    df = pd.DataFrame({"a": np.sin(t / 4) + rng.normal(0, 0.05, 120),
                       "b": np.cos(t / 4) + rng.normal(0, 0.05, 120)})
    fc = Forecaster(window=10, horizon=2, hidden=16, d_model=8, epochs=15, batch_size=16,
                    lr=5e-3, patience=0, verbose=0, precision="fp32").fit(df, ["a", "b"])
    assert fc.labels_.n_outputs == 4
    pred = fc.predict(df)
    assert list(pred.columns) == ["step", "a", "b"] and len(pred) == 2
    assert fc.metrics_["validation"]["mae"] < fc.metrics_["validation"]["baseline"]["mae"]


def test_a_seasonal_naive_share_is_applied_and_saved(tmp_path):
    from dlforge.data.series import seasonal_naive_forecast
    from dlforge.errors import ConfigError

    df = seasonal_series(120)
    params = dict(window=24, horizon=6, hidden=8, d_model=8, epochs=2, batch_size=16,
                  lr=1e-4, patience=0, verbose=0, precision="fp32")
    net = Forecaster(**params).fit(df, "sales", time="month")
    assert net.config_.train.baseline_weight == 0.0  # auto: the network alone
    fc = Forecaster(baseline_weight=0.25, **params).fit(df, "sales", time="month")
    # The forecast is the weighted mean of the network's and seasonal naive's.
    history = df["sales"].to_numpy()[-24:].reshape(1, 24, 1)
    naive = seasonal_naive_forecast(history, 6, 12)[0, :, 0]
    mixed = fc.predict(df)["sales"].to_numpy()
    alone = net.predict(df)["sales"].to_numpy()  # the same network: same seed and settings
    np.testing.assert_allclose(mixed, 0.75 * alone + 0.25 * naive, rtol=1e-5)
    assert fc.metrics_["validation"]["mae"] != net.metrics_["validation"]["mae"]
    fc.save(tmp_path / "run")
    again = load(tmp_path / "run")
    assert again.config_.train.baseline_weight == 0.25
    pd.testing.assert_frame_equal(again.predict(df), fc.predict(df))
    whole = Forecaster(baseline_weight=1.0, **params).fit(df, "sales", time="month")
    np.testing.assert_allclose(whole.predict(df)["sales"].to_numpy(), naive, rtol=1e-5)
    with pytest.raises(ConfigError, match="needs a season > 1"):
        Forecaster(baseline_weight=0.5, **{**params, "window": 6}).fit(df, "sales",
                                                                        time="month")
