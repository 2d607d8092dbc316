"""Model selection: model=auto / dlforge compare, and --cv on any kind."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dlforge import Forecaster, TabularRegressor, TextClassifier, load
from dlforge.config import validate_config
from dlforge.errors import ConfigError
from tests.test_cli import _assert_nothing_written, assert_user_error, run_cli
from tests.test_sequences import seasonal_series

TINY = ["--vocab-size", "300", "--max-length", "16", "--epochs", "2", "--batch-size", "16",
        "--lr", "1e-2", "--precision", "fp32", "--quiet"]


def test_compare_prints_a_leaderboard_and_keeps_the_winner(toy_csv, tmp_path, capsys):
    run = tmp_path / "best"
    code, out, err = run_cli(capsys, "compare", "--data", toy_csv, "--text", "review",
                             "--label", "sentiment", *TINY, "--folds", "2", "--ensemble",
                             "--out", run)
    assert code == 0, err
    assert "Model selection: 2-fold cross-validation" in out and "← kept" in out
    metrics = json.loads((run / "metrics.json").read_text())
    sel = metrics["model_selection"]
    board = sel["leaderboard"]
    assert [r["model"] for r in board] != [] and {r["model"] for r in board} == {
        "transformer", "cnn", "rnn", "baseline", "ensemble"}  # the simple baseline competes
    # (--ensemble is on here: the average of the two best candidates is scored too)
    # Successive halving: the best third of the networks (one of three) and the baseline ran
    # both folds, ranked first; the other two networks stopped after the last fold (run first).
    ensemble = next(r for r in board if r["model"] == "ensemble")
    full = [r for r in board if "stopped" not in r]
    stopped = [r for r in board if "stopped" in r]
    assert board == full + stopped and sel["halving"] is True
    assert {r["model"] for r in full} >= {"baseline"} and len(full) == 3 and len(stopped) == 2
    # The average of the two fully cross-validated candidates, scored on the same folds.
    assert sorted(ensemble["members"]) == sorted(r["model"] for r in full if r is not ensemble)
    full = [r for r in full if r is not ensemble]
    assert all(len(r["folds"]) == 2 for r in full) and all(len(r["folds"]) == 1 and r["std"]
                                                          is None for r in stopped)
    net = next(r for r in full if r["model"] != "baseline")
    assert all(net["folds"][-1] >= r["folds"][0] for r in stopped)  # kept on that score
    means = [r["mean"] for r in board if "stopped" not in r]
    assert means == sorted(means, reverse=True)
    assert sel["winner"] == next(r["model"] for r in board if "not_kept" not in r)
    assert all(r["parameters"] > 0 for r in board)
    assert "the weakest networks stopped" in out and "fold)" in out
    model = load(run)
    assert model.config_.model.name == sel["winner"]  # the run is the winner, loadable


def test_auto_from_python_with_families_and_the_metric(toy):
    texts, labels = toy
    clf = TextClassifier(model="auto", max_length=16, vocab_size=300, epochs=2, batch_size=16,
                         lr=1e-2, verbose=0, precision="fp32").fit(texts, labels)
    assert clf.config_.model.name in ("transformer", "cnn", "rnn", "baseline", "ensemble")
    assert clf.metrics_["model_selection"]["metric"] == "accuracy"
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=150), "b": rng.normal(size=150)})
    y = X["a"] * 2 + rng.normal(0, 0.1, 150)
    reg = TabularRegressor(model="auto", epochs=3, verbose=0, precision="fp32").fit(X, y)
    sel = reg.metrics_["model_selection"]
    assert sel["metric"] == "rmse" and {r["model"] for r in sel["leaderboard"]} == {
        "mlp", "baseline"}  # no ensemble unless asked


def test_auto_forecaster_uses_time_series_folds():
    df = seasonal_series(100)
    fc = Forecaster(model="auto", window=12, horizon=3, epochs=2, verbose=0, precision="fp32")
    fc.fit(df, "sales", time="month")
    sel = fc.metrics_["model_selection"]
    assert sel["metric"] == "mae" and len(sel["leaderboard"]) == 3
    # Without halving every family runs every fold, and the board is sorted by the mean.
    cfg = validate_config({**fc.config_.model_dump(mode="json"),
                           "model": {"name": "auto", "halving": False}})
    fc = Forecaster(config=cfg, verbose=0).fit(df, "sales", time="month")
    board = fc.metrics_["model_selection"]["leaderboard"]
    assert all(len(r["folds"]) == 3 and "stopped" not in r for r in board)
    assert [r["mean"] for r in board] == sorted(r["mean"] for r in board)


def test_selection_bad_options(toy_csv, tmp_path, capsys):
    code, _, err = run_cli(capsys, "compare", "--data", toy_csv, "--text", "review", "--label",
                           "sentiment", "--families", "mlp", *TINY, "--out", tmp_path / "r")
    assert_user_error(code, err, "'mlp' does not fit this data", "transformer, cnn, rnn")
    _assert_nothing_written(tmp_path / "r")
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, "--text", "review", "--label",
                           "sentiment", "--folds", "3", *TINY, "--out", tmp_path / "r")
    assert_user_error(code, err, "--folds: only for model selection")
    code, _, err = run_cli(capsys, "compare", "--data", toy_csv, "--model", "cnn",
                           "--out", tmp_path / "r")
    assert_user_error(code, err, "compare chooses the model itself")
    texts = [f"{w} film {i}" for i, w in enumerate(["good", "bad"] * 10)]
    with pytest.raises(ConfigError, match="model.metric: 'rmse' does not score a binary"):
        TextClassifier(config=validate_config({
            "inputs": [{"name": "text"}], "output": {"name": "label"},
            "model": {"name": "auto", "metric": "rmse"}}), verbose=0).fit(texts, ["p", "n"] * 10)


def test_cv_for_a_table(tmp_path, capsys):
    from tests.test_kinds import credit_table

    credit_table(200).to_csv(tmp_path / "c.csv", index=False)
    code, out, err = run_cli(capsys, "train", "--data", tmp_path / "c.csv", "--kind", "table",
                             "--label", "default", "--epochs", "2", "--cv", "3", "--quiet",
                             "--precision", "fp32", "--out", tmp_path / "r")
    assert code == 0, err
    assert "3-fold cross-validation: accuracy" in out
