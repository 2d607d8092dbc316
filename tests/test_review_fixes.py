"""Regression tests for bugs found in review of the every-kind change."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from dlforge import Forecaster, TabularRegressor
from dlforge.config import CategoryInput, validate_config
from dlforge.data.augment import TokenAugmenter
from dlforge.data.inputs import CategoryFeature
from dlforge.errors import ConfigError


def test_category_codes_match_however_the_column_was_read():
    feat = CategoryFeature(CategoryInput(name="grade", type="category"))
    feat.fit(feat.load([1, 2, 3, 2], "x"), "x")
    # a CSV integer column with a gap is read as floats; strings come from JSON or text
    assert feat.encode(feat.load([1.0, 2.0, np.nan, "3", "2.0"], "x")).tolist() == [
        feat._index["1"], feat._index["2"], 0, feat._index["3"], feat._index["2"]]


def test_numeric_target_scaled_on_training_rows_only():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=100)})
    y = np.r_[rng.normal(0, 1, 70), rng.normal(50, 1, 30)]  # the tail is very different
    reg = TabularRegressor(epochs=1, verbose=0, validation_split=0.2).fit(X, y)
    train_rows = reg.data_report_["target_train"]
    assert reg.labels_.mean == pytest.approx(train_rows["mean"])


def test_pretrained_style_special_tokens_are_never_augmented():
    aug = TokenAugmenter(delete=0.5, swap=0.5, mask=0.5, mask_id=4, seed=0, protect=[2, 3])
    ids = np.array([2, 10, 11, 12, 13, 14, 3])
    for _ in range(200):
        out = aug(ids)
        assert out[0] == 2 and out[-1] == 3 and (out[1:-1] != 2).all()


def test_sequence_cnn_output_does_not_depend_on_the_batch():
    from dlforge.testing import check_model

    check_model("cnn", "sequence", max_length=12)  # includes length-1..3 sequences
    from dlforge.models.registry import build_model

    cfg = validate_config({"inputs": [{"name": "s", "type": "sequence"}],
                           "output": {"name": "y"}, "model": {"name": "cnn"}})
    m = build_model(cfg, {"s": {"features": 1, "max_length": 64}}, 2).eval()
    short = torch.randn(1, 3, 1)
    alone = m({"s": {"values": short, "attention_mask": torch.ones(1, 3, dtype=torch.bool)}})
    padded = torch.zeros(2, 20, 1)
    padded[0, :3] = short[0]
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[0, :3] = True
    mask[1] = True
    batched = m({"s": {"values": padded, "attention_mask": mask}})
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


def test_model_selection_never_sees_the_test_rows(toy_csv):
    from dlforge.estimators import base
    from dlforge.estimators import files as api

    cfg = validate_config({
        "data": {"path": str(toy_csv), "test_split": 0.3},
        "inputs": [{"name": "review", "vocab_size": 300, "max_length": 16}],
        "output": {"name": "sentiment"},
        "model": {"name": "auto", "families": ["cnn"], "cv": 2},
        "train": {"epochs": 1, "precision": "fp32"}})
    seen = {}
    real = base.cross_validate_frame

    def spy(estimator, c, k, frame, source, verbose=1, only=None, **kwargs):
        seen["rows"] = len(frame)
        return real(estimator, c, k, frame, source, verbose, only, **kwargs)

    base.cross_validate_frame = spy
    try:
        clf = api.estimator_for(cfg, "binary")(config=cfg, verbose=0)
        clf._fit_frame(pd.read_csv(toy_csv), cfg, "toy")
    finally:
        base.cross_validate_frame = real
    total = sum(clf.data_report_["splits"].values())
    assert seen["rows"] == total - clf.data_report_["splits"]["test"]


def test_roc_auc_selection_only_for_binary():
    from dlforge.estimators.select import _metric

    cfg = validate_config({"inputs": [{"name": "t"}], "output": {"name": "y"},
                           "model": {"name": "auto", "metric": "roc_auc"}})
    assert _metric(cfg, "binary") == "roc_auc"
    with pytest.raises(ConfigError, match="roc_auc"):
        _metric(cfg, "category")


def test_cross_validation_dedupes_on_every_input(tmp_path):
    from dlforge.estimators import files as api
    from dlforge.estimators import select

    df = pd.DataFrame({"t": ["same text"] * 6 + ["other text"] * 6,
                       "price": [1, 2, 3, 4, 5, 6] * 2, "y": ["a", "b"] * 6})
    csv = tmp_path / "d.csv"
    df.to_csv(csv, index=False)
    cfg = validate_config({"data": {"path": str(csv)},
                           "inputs": [{"name": "t", "vocab_size": 300},
                                      {"name": "price", "type": "numeric"}],
                           "output": {"name": "y"}, "model": {"name": "cnn"},
                           "train": {"epochs": 1, "precision": "fp32"}})
    seen = {}
    real = select.kfold

    def spy(strata, k, seed):
        seen["rows"] = len(strata)
        return real(strata, k, seed)

    select.kfold = spy
    try:
        api.cross_validate(cfg, 2, verbose=0)
    finally:
        select.kfold = real
    assert seen["rows"] == 12  # rows differ in price: none is a duplicate


def test_forecaster_bad_refit_leaves_the_fitted_model_intact():
    df = pd.DataFrame({"y": np.sin(np.arange(80) / 3)})
    fc = Forecaster(window=6, horizon=3, epochs=1, verbose=0).fit(df, "y")
    fc.set_params(horizon=5, monitor="r2")
    with pytest.raises(ConfigError, match="train.monitor"):
        fc.fit(df, "y")
    assert len(fc.predict(df)) == 3
    smape = Forecaster(window=6, horizon=2, epochs=1, monitor="smape", verbose=0).fit(df, "y")
    assert smape.metrics_["monitor"] == "smape"
    arr = Forecaster(window=6, horizon=2, epochs=1, verbose=0).fit(df["y"].to_numpy(), "sales")
    assert list(arr.predict(df["y"].to_numpy()).columns) == ["step", "sales"]
    with pytest.raises(ConfigError, match="forecast.augment.slice"):
        Forecaster(window=6, horizon=2, augment={"slice": 0.2}).fit(df, "y")
