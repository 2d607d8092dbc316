"""The strong simple baseline, as a model like the others (``model: baseline``).

What a data scientist writes in five lines, and what a deep model must beat to be worth it:

- any text input: word (1-2-gram) and character (2-5-gram; beside other columns, only where
  cross-validation prefers them) TF-IDF of each text column, one-hot categories and
  standardised numbers, into a logistic regression whose ``C`` is chosen by 3-fold
  cross-validation (ridge regression with its ``alpha`` chosen by leave-one-out for numbers);
- a table (numbers and categories only): histogram gradient-boosted trees, categories native.

It is a model selection candidate (``model: auto``), the yardstick every text or table run is
compared with, and a run of its own: saved with ``skops`` (its loader builds only the types it
is told to trust; :data:`TRUSTED` lists the few beyond scikit-learn's own that these pipelines
hold; never pickle), loaded, served and scored like every other run. It predicts *logits* as a
network does (log-odds, log-probabilities, or the standardised number), so everything after
the model is the same code.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dlforge.errors import RunDirError

__all__ = ["FILE", "TRUSTED", "SimpleModel", "describe"]

FILE = "model.skops"
# The types a saved baseline may hold beyond those skops trusts by default; anything else in a
# model.skops is refused (the file was not written by dlforge).
TRUSTED = frozenset({"numpy.dtype", "functools.partial", "sklearn.utils.validation.check_array",
                     "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"})
MISSING = "<missing>"


def _cv_score(pipeline: Any) -> float:
    """The cross-validated score a fitted pipeline's last step chose its regularisation by
    (LogisticRegressionCV: the best mean accuracy over its folds; RidgeCV: the best
    leave-one-out score); -inf for a model without one."""
    last = pipeline.steps[-1][1]
    scores = getattr(last, "scores_", None)
    if isinstance(scores, dict) and scores:
        return float(np.mean(next(iter(scores.values())), axis=0).max())
    best = getattr(last, "best_score_", None)
    return float(best) if best is not None else -np.inf


def describe(kinds: list[str], numeric: bool) -> str:
    """The baseline's name for inputs of these ``kinds`` (numeric: a regression)."""
    if "text" in kinds:
        return "TF-IDF + " + ("ridge" if numeric else "LR")
    return "gradient boosting"


class SimpleModel:
    """The baseline over input columns ``inputs`` (name -> kind: text, numeric, category)
    for an output ``kind`` (binary, category, numeric)."""

    INPUT_KINDS = frozenset({"text", "numeric", "category"})

    @classmethod
    def takes(cls, input_kinds: set[str], output_kind: str) -> bool:
        """Whether the baseline takes inputs of these kinds and this output kind."""
        return set(input_kinds) <= cls.INPUT_KINDS and output_kind != "multilabel"

    def __init__(self, inputs: dict[str, str], kind: str, n_outputs: int, seed: int = 0):
        if not self.takes(set(inputs.values()), kind):
            unsupported = sorted(set(inputs.values()) - self.INPUT_KINDS)
            what = f"{unsupported[0]} inputs" if unsupported else "multi-label outputs"
            raise ValueError(f"the simple baseline does not take {what}")
        self.inputs, self.kind, self.n_outputs, self.seed = dict(inputs), kind, n_outputs, seed
        self.pipeline: Any = None

    @property
    def name(self) -> str:
        return describe(list(self.inputs.values()), self.kind == "numeric")

    # -------------------------------------------------------------- data
    def frame(self, columns: dict[str, Any]) -> pd.DataFrame:
        """Loaded input columns (text: str, numeric: float with NaN, category: str or None)
        as the pipeline's frame."""
        out = {}
        for name, kind in self.inputs.items():
            values = columns[name]
            if kind == "numeric":
                out[name] = np.asarray(values, dtype=np.float64)
            elif kind == "category":
                out[name] = pd.Series([MISSING if v is None else str(v) for v in values],
                                      dtype=object)
            else:
                out[name] = pd.Series([str(v) for v in values], dtype=object)
        return pd.DataFrame(out)

    def _build(self, n_rows: int, chars: bool = True) -> Any:
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegressionCV, RidgeCV
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

        numeric = [n for n, k in self.inputs.items() if k == "numeric"]
        category = [n for n, k in self.inputs.items() if k == "category"]
        texts = [n for n, k in self.inputs.items() if k == "text"]
        if not texts:  # a table: gradient-boosted trees, categories as native splits
            encode = ColumnTransformer(
                [("category", OrdinalEncoder(handle_unknown="use_encoded_value",
                                             unknown_value=np.nan,
                                             encoded_missing_value=np.nan), category)],
                remainder="passthrough")
            trees = (HistGradientBoostingRegressor if self.kind == "numeric"
                     else HistGradientBoostingClassifier)
            return make_pipeline(encode, trees(
                categorical_features=list(range(len(category))) or None,
                random_state=self.seed))
        parts: list[tuple[str, Any, Any]] = []
        for n in texts:
            parts.append((f"{n}_words", TfidfVectorizer(
                ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                token_pattern=r"(?u)\b\w+\b"), n))
            if chars:
                parts.append((f"{n}_chars", TfidfVectorizer(
                    analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                    min_df=2 if n_rows > 200 else 1), n))
        if numeric:
            parts.append(("numeric", make_pipeline(SimpleImputer(strategy="median"),
                                                   StandardScaler()), numeric))
        if category:
            parts.append(("category", OneHotEncoder(handle_unknown="ignore"), category))
        encode = ColumnTransformer(parts)
        if self.kind == "numeric":
            return make_pipeline(encode, RidgeCV(alphas=np.logspace(-2, 3, 8)))
        return make_pipeline(encode, LogisticRegressionCV(Cs=np.logspace(-1, 3, 8), cv=3,
                                                          max_iter=3000))

    # -------------------------------------------------------------- fit / predict
    def fit(self, columns: dict[str, Any], y: np.ndarray) -> SimpleModel:
        """Fit on loaded columns and encoded targets (class indices, or the standardised
        number). Text alone gets word + character n-grams. A text beside other columns gets
        word n-grams alone and word + character n-grams both fitted, and the one whose
        cross-validated score (the same folds that choose ``C``) is higher is kept: character
        n-grams help on short, noisy texts and can drown a strong category or number beside a
        text."""
        X = self.frame(columns)
        y = np.asarray(y)
        kinds = set(self.inputs.values())
        mixed = "text" in kinds and kinds != {"text"}
        fitted = [self._fit_one(X, y, chars) for chars in ((True, False) if mixed else (True,))]
        self.pipeline = max(fitted, key=_cv_score)  # the first (with characters) on a tie
        return self

    def _fit_one(self, X: pd.DataFrame, y: np.ndarray, chars: bool) -> Any:
        pipeline = self._build(len(X), chars)
        if self.kind != "numeric":
            counts = np.bincount(y.astype(np.int64))
            if 0 < counts[counts > 0].min() < 3 and "logisticregressioncv" in pipeline.named_steps:
                # Too few rows of a class for 3-fold CV of C: the usual C=1.
                from sklearn.linear_model import LogisticRegression

                pipeline.steps[-1] = ("logisticregression", LogisticRegression(max_iter=3000))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            pipeline.fit(X, y)
        return pipeline

    def logits(self, columns: dict[str, Any]) -> np.ndarray:
        """What a network's head would output: (N, 1) log-odds (binary), (N, C)
        log-probabilities (multi-class), (N, 1) the standardised number (numeric)."""
        X = self.frame(columns)
        if len(X) == 0:
            return np.zeros((0, self.n_outputs), dtype=np.float32)
        if self.kind == "numeric":
            return np.asarray(self.pipeline.predict(X), dtype=np.float32).reshape(-1, 1)
        proba = self.pipeline.predict_proba(X)
        full = np.full((len(X), max(self.n_outputs, 2)), 1e-7)  # classes absent in training
        full[:, np.asarray(self.pipeline.classes_, dtype=np.int64)] = proba
        full = np.clip(full / full.sum(axis=1, keepdims=True), 1e-7, 1.0)
        if self.kind == "binary":
            return np.log(full[:, 1:2] / full[:, 0:1]).astype(np.float32)
        return np.log(full).astype(np.float32)

    def medians(self) -> dict[str, float]:
        """Each numeric input's training median as the fitted pipeline holds it: the linear
        model's imputer's statistics, or (trees) the median of the bin edges the trees split
        on (about the median when the column has more distinct values than bins, else
        about the middle of its distinct values); NaN where the pipeline holds none."""
        numeric = [n for n, k in self.inputs.items() if k == "numeric"]
        out = dict.fromkeys(numeric, float("nan"))
        encode = self.pipeline.steps[0][1] if numeric else None
        parts = getattr(encode, "named_transformers_", {})
        if "numeric" in parts:  # SimpleImputer(median), then StandardScaler
            statistics = parts["numeric"].steps[0][1].statistics_
            return {n: float(v) for n, v in zip(numeric, statistics, strict=True)}
        edges = getattr(getattr(self.pipeline.steps[-1][1], "_bin_mapper", None),
                        "bin_thresholds_", None)
        if edges is None or encode is None:
            return out
        names = list(encode.get_feature_names_out())
        for n in numeric:
            column = np.asarray(edges[names.index(f"remainder__{n}")], dtype=np.float64)
            if column.size:
                out[n] = float(np.median(column))
        return out

    def n_parameters(self) -> int:
        """Learned numbers: the linear model's coefficients, or the trees' nodes."""
        last = self.pipeline.steps[-1][1]
        if hasattr(last, "coef_"):
            return int(np.size(last.coef_) + np.size(getattr(last, "intercept_", 0)))
        return int(sum(p.nodes.size for ps in last._predictors for p in ps))

    # -------------------------------------------------------------- files
    def save(self, path: Path) -> None:
        import skops.io as sio

        sio.dump(self.pipeline, path)

    def load(self, path: Path) -> SimpleModel:
        import skops.io as sio

        untrusted = set(sio.get_untrusted_types(file=path))
        unknown = sorted(untrusted - TRUSTED)
        if unknown:
            raise RunDirError(f"{path}: holds types dlforge does not write ({unknown[0]}); "
                              "refusing to load it")
        self.pipeline = sio.load(path, trusted=sorted(untrusted))
        return self
