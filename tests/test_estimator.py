import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import cross_val_score

from dlforge import TextClassifier, load
from dlforge.errors import ConfigError, DataError, NotFittedError
from dlforge.testing import toy_texts


def test_the_articles_example_runs(tmp_path, toy, tiny_params):
    """The article's code, as our API: fit, predict, predict_proba, evaluate, save, load."""
    texts, labels = toy
    clf = TextClassifier(**tiny_params)
    assert clf.fit(texts, labels, epochs=2, batch_size=32, validation_split=0.1) is clf
    assert clf.config_.train.epochs == 2 and clf.config_.train.batch_size == 32
    pred = clf.predict(texts)
    proba = clf.predict_proba(texts)
    assert pred.shape == (len(texts),) and set(pred) <= {"neg", "pos"}
    assert proba.shape == (len(texts), 2) and np.allclose(proba.sum(1), 1)
    assert list(clf.classes_) == ["neg", "pos"]
    report = clf.evaluate(texts, labels)
    assert {"loss", "accuracy", "macro_f1", "roc_auc", "per_class", "confusion_matrix",
            "baseline"} <= set(report)
    clf.save(tmp_path / "tweets")
    same = load(tmp_path / "tweets")
    assert np.array_equal(same.predict(texts), pred)
    assert np.array_equal(same.predict_proba(texts), proba)
    assert same.evaluate(texts, labels) == report


@pytest.mark.parametrize("kind", ["list", "numpy", "series"])
def test_inputs_may_be_lists_arrays_or_series(toy, tiny_params, kind):
    texts, labels = toy
    conv = {"list": list, "numpy": np.array, "series": pd.Series}[kind]
    clf = TextClassifier(**{**tiny_params, "epochs": 1}).fit(conv(texts), conv(labels))
    assert len(clf.predict(conv(texts[:7]))) == 7


def test_sklearn_contract(toy, tiny_params):
    clf = TextClassifier(**tiny_params)
    params = clf.get_params()
    assert params["d_model"] == 16 and params["model"] == "transformer"
    assert clf.set_params(d_model=32) is clf and clf.d_model == 32
    twin = clone(clf)
    assert twin.get_params() == clf.get_params() and not hasattr(twin, "model_")
    with pytest.raises(ValueError):
        clf.set_params(d_modle=3)


def test_cross_val_score(tiny_params):
    texts, labels = toy_texts(120, seed=1)
    scores = cross_val_score(TextClassifier(**{**tiny_params, "epochs": 6}), texts,
                             np.array(labels), cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8


def test_multiclass_with_int_labels(tiny_params):
    texts, labels = toy_texts(240, seed=2, classes=4)
    ints = [["pos", "neg", "odd", "fast"].index(x) * 10 for x in labels]
    clf = TextClassifier(**{**tiny_params, "epochs": 6}).fit(texts, ints)
    assert clf.labels_.kind == "category" and list(clf.classes_) == [0, 10, 20, 30]
    proba = clf.predict_proba(texts[:5])
    assert proba.shape == (5, 4) and np.allclose(proba.sum(1), 1)
    assert clf.predict(texts[:5]).dtype == np.int64
    assert clf.score(texts, ints) > 0.8


def test_multilabel(tmp_path, tiny_params):
    texts, labels = toy_texts(200, seed=3, classes=4)
    tags = [[lab] + (["long"] if len(t.split()) > 5 else []) for t, lab in zip(texts, labels,
                                                                              strict=True)]
    clf = TextClassifier(**{**tiny_params, "epochs": 6}).fit(texts, tags)
    assert clf.labels_.kind == "multilabel"
    pred = clf.predict(texts[:10])
    assert isinstance(pred, list) and all(isinstance(p, list) for p in pred)
    assert clf.predict_proba(texts[:3]).shape == (3, 5)
    assert clf.evaluate(texts, tags)["micro_f1"] > 0.7
    clf.save(tmp_path / "ml")
    assert load(tmp_path / "ml").predict(texts[:10]) == pred


@pytest.mark.parametrize("family", ["cnn", "rnn"])
def test_other_families_fit(toy, tiny_params, family):
    texts, labels = toy
    params = {**tiny_params, "model": family, "heads": None, "layers": None, "epochs": 6}
    clf = TextClassifier(**params).fit(texts, labels)
    assert clf.config_.model.name == family
    assert clf.metrics_["validation"]["accuracy"] > 0.8


def test_errors(toy, tiny_params):
    texts, labels = toy
    with pytest.raises(NotFittedError, match="not fitted"):
        TextClassifier().predict(["x"])
    with pytest.raises(DataError, match="160 texts but y has 3 labels"):
        TextClassifier(**tiny_params).fit(texts, labels[:3])
    with pytest.raises(ConfigError, match=r"model\.heads: unknown key"):
        TextClassifier(**{**tiny_params, "model": "cnn"}).fit(texts, labels)
    with pytest.raises(DataError, match="a single class"):
        TextClassifier(**tiny_params).fit(texts, ["a"] * len(texts))
    with pytest.raises(DataError, match="single string"):
        TextClassifier(**tiny_params).fit("just one text", ["a"])
