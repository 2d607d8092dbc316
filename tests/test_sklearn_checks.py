"""scikit-learn's own estimator checks on dlforge's estimators, with tiny settings.

The tabular estimators run every check of ``parametrize_with_checks``; the few that do not
apply are published by ``dlforge.testing.sklearn_expected_failed_checks``, each with its
reason. ``check_estimator`` cannot feed texts, so ``TextClassifier`` runs the checks that take
an estimator only, and the data checks' equivalents on texts; then a ``Pipeline`` in
``GridSearchCV``.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import DataConversionWarning
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils import estimator_checks as ec
from sklearn.utils.estimator_checks import parametrize_with_checks
from sklearn.utils.validation import check_is_fitted

from dlforge import TabularClassifier, TabularRegressor, TextClassifier, load
from dlforge.errors import DataError, DataTypeError, DlforgeError
from dlforge.testing import sklearn_expected_failed_checks, toy_texts

pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny: an 8-unit MLP trained for 3 epochs.
TABLE = dict(hidden=[8], epochs=3, batch_size=16, verbose=0, precision="fp32")
TEXT = dict(model="transformer", vocab_size=300, max_length=16, d_model=16, heads=2, layers=1,
            epochs=3, batch_size=16, lr=1e-2, patience=0, verbose=0, precision="fp32")


@parametrize_with_checks([TabularClassifier(**TABLE), TabularRegressor(**TABLE)],
                         expected_failed_checks=sklearn_expected_failed_checks)
def test_tabular_estimators_pass_sklearn_checks(estimator, check):
    check(estimator)


def test_expected_failures_are_few_and_explained():
    for est in (TabularClassifier(), TabularRegressor(), TextClassifier()):
        failed = sklearn_expected_failed_checks(est)
        assert len(failed) <= 3 and all(name.startswith("check_") and len(reason) > 40
                                        for name, reason in failed.items())
    assert sklearn_expected_failed_checks(TabularRegressor()) == {}


# ------------------------------------------------------------------------------- tables
@pytest.fixture(scope="module")
def frame():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.normal(size=60), "city": rng.choice(["a", "b", "c"], 60),
                       "income": rng.normal(size=60)})
    df.loc[3, "age"] = np.nan  # missing numbers are imputed
    return df, (df["income"] > 0).astype(int).to_numpy()


def test_tabular_columns_by_name_or_position(tmp_path, frame):
    df, y = frame
    clf = TabularClassifier(**TABLE).fit(df, y)
    assert clf.n_features_in_ == 3 and list(clf.feature_names_in_) == ["age", "city", "income"]
    pred = clf.predict(df)
    # A DataFrame's columns are matched by name: extra ones (a label, a sensitive feature)
    # are ignored, order does not matter, a missing one is an error.
    assert np.array_equal(clf.predict(df.assign(extra=1)[["income", "extra", "city", "age"]]),
                          pred)
    with pytest.raises(DataError, match="column 'city' is missing"):
        clf.predict(df.drop(columns="city"))
    # An array's columns are matched by position, so their number must be right.
    with pytest.warns(UserWarning, match="X does not have valid feature names"):
        assert np.array_equal(clf.predict(df.to_numpy()), pred)
    for bad in (df.to_numpy()[:, :2], df.assign(z=1).to_numpy()):
        with pytest.raises(DataError, match=rf"X has {bad.shape[1]} features, but "
                                            "TabularClassifier is expecting 3 features as "
                                            r"input \(.*age, city, income\)"):
            clf.predict(bad)
    clf.save(tmp_path / "run")
    same = load(tmp_path / "run")
    assert same.n_features_in_ == 3 and list(same.feature_names_in_) == list(df.columns)
    assert np.array_equal(same.predict(df), pred)

    reg = TabularRegressor(**TABLE).fit(df[["age", "income"]].to_numpy(), df["income"])
    assert reg.n_features_in_ == 2 and not hasattr(reg, "feature_names_in_")
    assert not hasattr(reg, "predict_proba") and hasattr(clf, "predict_proba")


def test_tabular_bad_input_is_one_clear_error(frame):
    df, y = frame
    clf = TabularClassifier(**TABLE)
    with pytest.raises(SklearnNotFittedError, match="not fitted yet"):
        clf.predict(df)
    cases = [
        (df.assign(age=np.inf), y, DataError, "column 'age', row 0 holds inf: infinite"),
        (df.assign(city=[{"a": 1}] + ["a"] * 59), y, DataTypeError,
         r"column 'city', row 0 holds a dict \(\{'a': 1\}\): float\(\) argument must be a "
         "string or a number"),
        (df[["age", "income"]].to_numpy() + 1j, y, DataError, "Complex data not supported"),
        (sp.csr_matrix(df[["age", "income"]].fillna(0).to_numpy()), y, DataError,
         "sparse input is not supported"),
        (df["age"].to_numpy(), y, DataError, "got a 1-D array of shape \\(60,\\). Reshape"),
        (np.empty((60, 0)), y, DataError, r"0 feature\(s\)"),
        (df, y + 0.5, DataError, "Unknown label type: continuous .* use TabularRegressor"),
        (df, None, DataError, "TabularClassifier requires y to be passed"),
        (df.iloc[:1], y[:1], DataError, "one class"),
    ]
    for X, target, error, message in cases:
        with pytest.raises(error, match=message):
            clf.fit(X, target)
    with pytest.raises(DataError, match="1 sample left after cleaning"):
        TabularRegressor(**TABLE).fit(df.iloc[:1], [1.5])
    assert issubclass(DataTypeError, TypeError) and issubclass(DataTypeError, DlforgeError)


# ------------------------------------------------------------------------------- texts
# The checks that take an estimator only (check_estimator feeds every other one numbers).
TEXT_CHECKS = [ec.check_estimator_cloneable, ec.check_estimator_repr,
               ec.check_no_attributes_set_in_init, ec.check_parameters_default_constructible,
               ec.check_get_params_invariance, ec.check_set_params,
               ec.check_do_not_raise_errors_in_init_or_set_params,
               ec.check_estimator_tags_renamed, ec.check_valid_tag_types, ec.check_mixin_order,
               ec.check_estimators_unfitted]


@pytest.mark.parametrize("check", TEXT_CHECKS, ids=lambda c: c.__name__)
def test_text_classifier_estimator_checks(check):
    check("TextClassifier", TextClassifier(**TEXT))


def test_text_classifier_predictions_and_classes():
    """scikit-learn's check_classifiers_predictions, on texts of three classes."""
    texts, labels = toy_texts(90, seed=4, classes=3)
    ec.check_classifiers_predictions(texts, np.array(labels), "TextClassifier",
                                     TextClassifier(**TEXT))


def test_text_classifier_data_checks():
    """The data checks' equivalents on texts: fit returns self and leaves the parameters
    alone, refitting (also on a column-vector y) gives the same model, predictions do not
    depend on the rows' order or batch, pickling keeps them, and bad targets are errors."""
    texts, labels = toy_texts(80, seed=5)
    clf = TextClassifier(**TEXT)
    params = clf.get_params()
    before = set(vars(clf))
    assert clf.fit(texts, labels) is clf
    assert clf.get_params() == params
    assert all(a.endswith("_") or a.startswith("_") for a in set(vars(clf)) - before)
    check_is_fitted(clf)
    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(TextClassifier())
    proba = clf.predict_proba(texts)

    order = np.random.default_rng(0).permutation(len(texts))
    assert np.allclose(clf.predict_proba([texts[i] for i in order]), proba[order], atol=1e-6)
    assert np.allclose(np.vstack([clf.predict_proba(texts[i:i + 7])
                                  for i in range(0, len(texts), 7)]), proba, atol=1e-6)
    assert np.allclose(pickle.loads(pickle.dumps(clf)).predict_proba(texts), proba)

    with pytest.warns(DataConversionWarning, match="column-vector y"):
        again = clone(clf).fit(texts, np.array(labels)[:, None])
    assert np.allclose(again.predict_proba(texts), proba, atol=1e-6)

    with pytest.raises(DataError, match="requires y to be passed"):
        TextClassifier(**TEXT).fit(texts, None)
    with pytest.raises(DataError, match="Unknown label type: continuous"):
        TextClassifier(**TEXT).fit(texts, np.linspace(0, 1, len(texts)))


def _lowercase(texts):
    return [t.lower() for t in texts]


def test_text_classifier_in_a_pipeline_in_grid_search():
    texts, labels = toy_texts(90, seed=6)
    texts = [t.upper() if i % 3 == 0 else t for i, t in enumerate(texts)]
    pipe = Pipeline([("lower", FunctionTransformer(_lowercase)),
                     ("clf", TextClassifier(**TEXT))])
    search = GridSearchCV(pipe, {"clf__d_model": [8, 16]}, cv=2, error_score="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataConversionWarning)
        search.fit(texts, labels)
    assert len(search.cv_results_["params"]) == 2
    best = search.best_estimator_
    assert best.named_steps["clf"].d_model in (8, 16)
    assert best.predict_proba(texts[:5]).shape == (5, 2)
    assert set(best.predict(texts)) <= {"neg", "pos"} and search.score(texts, labels) > 0.8
