"""The parameter table is the one place a hyperparameter is named: the estimators' keyword
arguments, the train flags and the tuning aliases all come from it."""

from __future__ import annotations

import inspect

import pytest
from sklearn.base import clone

from dlforge import (
    ConfigError,
    Forecaster,
    ImageClassifier,
    SequenceModel,
    TabularClassifier,
    TabularRegressor,
    TextClassifier,
)
from dlforge.config import TUNE_ALIASES, validate_config
from dlforge.config.params import PARAMS, estimator_params, flag_params, resolve_path

ESTIMATORS = {"text": TextClassifier, "image": ImageClassifier, "sequence": SequenceModel,
              "tabular": TabularClassifier, "forecast": Forecaster}


@pytest.mark.parametrize("kind", sorted(ESTIMATORS))
def test_each_estimator_takes_exactly_its_rows(kind):
    cls = ESTIMATORS[kind]
    names = [n for n in inspect.signature(cls).parameters if n not in ("config", "verbose")]
    extra = ["numeric", "category", "text"] if kind == "tabular" else []
    assert sorted(names) == sorted([p.name for p in estimator_params(kind)] + extra)
    assert list(inspect.signature(cls).parameters)[0] == "model"  # positional first
    params = cls().get_params()
    assert set(params) == set(names) | {"config", "verbose"}


def test_the_four_old_tables_agree_now():
    # Forecaster had no warmup while every other estimator had it.
    assert "warmup" in inspect.signature(Forecaster).parameters
    cfg = Forecaster(warmup=0.3).resolve_config({"forecast": {"targets": ["y"]}})
    assert cfg.train.warmup == 0.3
    assert {p.name: p.path for p in PARAMS if p.tune} == TUNE_ALIASES
    assert TUNE_ALIASES["lr"] == "train.lr" and TUNE_ALIASES["model"] == "model.name"


def test_arguments_reach_their_config_key_through_the_slots():
    assert TextClassifier(vocab_size=500, augment={"mask": 0.1}).resolve_config().inputs[0] \
        .vocab_size == 500
    img = ImageClassifier(image_size=(8, 8), color="gray").resolve_config().inputs[0]
    assert (tuple(img.size), img.color) == ((8, 8), "gray")
    seq = SequenceModel(max_length=7, augment={"jitter": 0.2}).resolve_config().inputs[0]
    assert (seq.max_length, seq.augment.jitter) == (7, 0.2)
    # A config whose image is not its first input: the slot finds it by kind.
    cfg = validate_config({"inputs": [{"name": "n", "type": "numeric"},
                                      {"name": "img", "type": "image"}],
                           "output": {"name": "y"}})
    assert ImageClassifier(config=cfg, image_size=(4, 4)).resolve_config().inputs[1].size \
        == (4, 4)


def test_clone_and_set_params_keep_the_generated_signature():
    clf = TabularRegressor("mlp", hidden=[4], numeric=["a"], epochs=2)
    again = clone(clf)
    assert again.get_params() == clf.get_params()
    again.set_params(epochs=3)
    assert again.epochs == 3 and clf.epochs == 2


def test_a_misspelt_argument_names_the_valid_ones():
    with pytest.raises(TypeError, match="TextClassifier: .*'dmodel'.*valid arguments are: .*"
                                        "d_model"):
        TextClassifier(dmodel=64)


def test_resolve_path():
    inputs = [{"name": "n", "type": "numeric"}, {"name": "t", "type": "text"}]
    assert resolve_path("<text>.vocab_size", inputs) == "inputs.1.vocab_size"
    assert resolve_path("<text|sequence>.max_length", [{"name": "s", "type": "sequence"}]) \
        == "inputs.0.max_length"
    assert resolve_path("<series>.augment.jitter", [], forecast=True) == \
        "forecast.augment.jitter"
    assert resolve_path("train.lr", inputs) == "train.lr"
    with pytest.raises(ConfigError, match="--augment-flip: this run has no image input"):
        resolve_path("<image>.augment.flip", inputs, name="--augment-flip")


def test_every_flagged_row_is_a_train_flag():
    from typer.testing import CliRunner

    from dlforge.cli import app

    shown = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output
    for p in flag_params():
        assert f"--{p.flag}" in shown, p.flag
