"""``model: auto``: candidates × cross-validation → a leaderboard → the winner.

Every family that fits the data kind is trained under the same budget (the run's epochs, batch
size and learning rate, on the same folds) and scored by k-fold cross-validation: stratified
folds for classification, expanding windows in time for forecasting. With successive halving
(the default; Jamieson & Talwalkar, 2016) every candidate is scored on the last fold, and
only the best third of the networks (at least one) and the simple baseline go on to the other
folds: most of the cost of a selection is training networks that lose. (The last fold: for
rows every fold is alike; in time it is the one with the longest history, the closest to the
run that will be trained, where the first fold has the least data.) The fully
cross-validated family with the best mean score wins; the run is then trained with it on all
the data, and the leaderboard (mean ± std of the metric, parameters, training time, and for a
candidate stopped early the one fold it ran) is kept in the run's metrics.

The average of the two best fully cross-validated candidates (an ensemble: the mean of their
probabilities, or numbers) is scored on the same held-out folds from the predictions already
made, at no extra training; when it scores better than the best one alone, on the mean and
on most folds, it is kept, and the run trains both members on all the data
(``model: ensemble``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from dlforge.config import FAMILY_KINDS, TABULAR_KINDS, RunConfig, config_to_dict, validate_config
from dlforge.config.models import member_folder, member_model
from dlforge.data.clean import clean_frame
from dlforge.data.frames import encode_labels
from dlforge.data.split import kfold
from dlforge.errors import ConfigError, DataError
from dlforge.train.metrics import classification_metrics, probabilities, regression_metrics

__all__ = ["CV_METRICS", "candidates", "cross_validate_frame", "fold_report", "say_fold",
           "select_model"]

CV_METRICS = ("accuracy", "macro_f1", "roc_auc", "micro_f1", "mae", "rmse", "r2", "loss")
# (config, k, frame, folds) -> the cross-validation report of that config on that frame, over
# the given folds (1-based; None: all k)
CrossValidate = Callable[[RunConfig, int, pd.DataFrame, "list[int] | None"], dict[str, Any]]
# Successive halving keeps this share of the networks after the first fold it runs (the last).
HALVING_KEEP = 1 / 3

MINIMISE = ("mae", "rmse", "smape", "loss")


def candidates(cfg: RunConfig) -> list[str]:
    """The families that fit the run's data kind, in the registry's order."""
    if cfg.forecast is not None:
        kind = "sequence"
    else:
        rich = [i.type for i in cfg.inputs if i.type not in TABULAR_KINDS]
        kind = rich[0] if rich else "table"
    return [f for f, kinds in FAMILY_KINDS.items() if kind in kinds
            and f not in ("auto", "pretrained", "ensemble")]


def _metric(cfg: RunConfig, output_kind: str) -> str:
    chosen = cfg.model.metric  # type: ignore[union-attr]
    default = {"forecast": "mae", "numeric": "rmse"}.get(output_kind, "accuracy")
    metric = default if chosen == "auto" else chosen
    regression = ("mae", "rmse", "r2")
    fits = {"forecast": ("mae", "rmse", "smape"), "numeric": regression,
            "binary": ("accuracy", "macro_f1", "roc_auc")}.get(output_kind,
                                                                 ("accuracy", "macro_f1"))
    if metric not in fits:
        raise ConfigError(f"model.metric: {metric!r} does not score a {output_kind} output; use "
                          f"one of {', '.join(fits)}")
    return metric


def select_model(df: pd.DataFrame, cfg: RunConfig, output_kind: str, source: str,
                 say: Callable[[str], None], cv: CrossValidate
                 ) -> tuple[RunConfig, dict[str, Any]]:
    """Cross-validate each candidate family on ``df`` with ``cv`` (the estimator's own
    cross-validation: :func:`cross_validate_frame` for rows, expanding windows for series);
    return the winner's config and the leaderboard."""
    auto = cfg.model
    families = list(auto.families or candidates(cfg))  # type: ignore[union-attr]
    fitting = candidates(cfg)
    wrong = [f for f in families if f not in fitting]
    if wrong:
        raise ConfigError(f"model.families: {wrong[0]!r} does not fit this data; families "
                          f"that fit: {', '.join(fitting)}")
    # Each local pretrained encoder folder is a candidate too, named pretrained-<folder>.
    spec = {f: f for f in families} | {member_folder(p): p for p in getattr(
        auto, "pretrained", None) or []}
    families = list(spec)
    metric = _metric(cfg, output_kind)
    lower = metric in MINIMISE
    k = auto.cv  # type: ignore[union-attr]
    halving = auto.halving and k > 1  # type: ignore[union-attr]
    base = config_to_dict(cfg)
    trials = {f: validate_config({**base, "model": member_model(spec[f])},
                                 source="model selection") for f in families}
    reports: dict[str, dict[str, Any]] = {}
    seconds = dict.fromkeys(families, 0.0)

    def run(family: str, folds: list[int] | None) -> None:
        t0 = time.perf_counter()
        got = cv(trials[family], k, df, folds)
        seconds[family] += time.perf_counter() - t0
        old = reports.get(family)
        if old is not None:  # the folds in order: the last one ran first
            merged = fold_report({key: v for key, v in got.items()
                                  if key not in ("folds", "mean", "std", "held_out")},
                                 got["folds"] + old["folds"])
            if "held_out" in got and "held_out" in old:
                merged["held_out"] = got["held_out"] + old["held_out"]
            got = merged
        reports[family] = got

    def key(family: str) -> tuple[float, int]:  # best score first; on a tie the smaller model
        score = reports[family]["mean"].get(metric)
        score = np.inf if score is None else (score if lower else -score)
        return score, reports[family]["parameters"]

    if halving:
        for family in families:
            run(family, [k])
        networks = sorted((f for f in families if f != "baseline"), key=key)
        keep = max(1, math.ceil(len(networks) * HALVING_KEEP))
        going_on = [f for f in families if f == "baseline" or f in networks[:keep]]
        stopped = networks[keep:]
        if stopped:
            say(f"model selection: after fold {k} of {k}, " + ", ".join(
                f"{f} {reports[f]['mean'].get(metric, float('nan')):.4f}" for f in
                sorted(families, key=key)) + f"; going on with {', '.join(going_on)}")
        for family in going_on:
            run(family, list(range(1, k)))
    else:
        stopped = []
        for family in families:
            run(family, None)
    rows = []
    for family in families:
        report = reports[family]
        n_folds = len(report["folds"])
        row = {"model": family, "metric": metric, "mean": report["mean"].get(metric),
               "std": report["std"].get(metric) if n_folds > 1 else None,
               "parameters": report["parameters"], "seconds": round(seconds[family], 2),
               "folds": [f.get(metric) for f in report["folds"]]}
        if family in stopped:
            row["stopped"] = f"after 1 of {k} folds"
        share = report["mean"].get("baseline_weight")
        if share is not None:  # a network's predictions blended with the simple baseline's
            row["baseline_weight"] = share
        rows.append(row)
        spread = f" ± {row['std']:.4f} ({k}-fold)" if row["std"] is not None else (
            f" (fold {k} of {k}; stopped)")
        say(f"model selection: {family}: {metric} {row['mean']:.4f}{spread}, "
            f"{row['parameters']:,} parameters, {row['seconds']:.1f} s"
            + (f", the simple baseline's mean share {share:.2f}" if share else ""))
    # The fully cross-validated first (best score first; on a tie the smaller model, the simple
    # baseline before a network), then those halving stopped.
    def order(r: dict[str, Any]) -> tuple[bool, float, int]:
        return r["model"] in stopped, r["mean"] if lower else -r["mean"], r["parameters"]

    rows.sort(key=order)
    full = [r["model"] for r in rows if r["model"] not in stopped]
    if getattr(auto, "ensemble", False) and len(full) >= 2 and all(
            "held_out" in reports[f] for f in full[:2]):
        row = _ensemble_row(full[:2], reports, metric, output_kind, seconds)
        # Kept only when it beats the best one alone on most folds too (a paired comparison):
        # a higher mean from one lucky fold does not pay for training and serving two models.
        best = next(r for r in rows if r["model"] == full[0])
        wins = sum((e < b) if lower else (e > b)
                   for e, b in zip(row["folds"], best["folds"], strict=True))
        row["folds_won"] = f"{wins} of {len(row['folds'])} against {full[0]}"
        better = (row["mean"] < best["mean"]) if lower else (row["mean"] > best["mean"])
        if better and 2 * wins <= len(row["folds"]):
            row["not_kept"] = "its better mean is not better on most folds"
        say(f"model selection: ensemble of {' + '.join(full[:2])} (their average on the same "
            f"folds): {metric} {row['mean']:.4f} ± {row['std']:.4f}, better than {full[0]} on "
            f"{wins} of {len(row['folds'])} folds")
        rows.append(row)
        rows.sort(key=order)
    kept = next(r for r in rows if "not_kept" not in r)
    winner = kept["model"]
    if winner == "ensemble":
        members = kept["members"]
        say(f"model selection: the ensemble of {' + '.join(members)} wins on {metric}; "
            "training both on all the data")
        chosen = validate_config({**base, "model": {"name": "ensemble", "members": [
            spec[m] for m in members]}}, source=source)
    else:
        say(f"model selection: {winner} wins on {metric}; training it on all the data")
        chosen = validate_config({**base, "model": member_model(spec[winner])}, source=source)
    return chosen, {"metric": metric, "k": k, "winner": winner, "leaderboard": rows,
                    "halving": halving,
                    "budget": {"epochs": cfg.train.epochs, "batch_size": cfg.train.batch_size,
                               "lr": cfg.train.lr}}


def _ensemble_row(members: list[str], reports: dict[str, dict[str, Any]], metric: str,
                  output_kind: str, seconds: dict[str, float]) -> dict[str, Any]:
    """The leaderboard row of the average of ``members``' held-out predictions, fold by
    fold (a binary decision at the mean of their thresholds)."""
    scores = []
    for parts in zip(*(reports[m]["held_out"] for m in members), strict=True):
        first = parts[0]
        if output_kind == "numeric":
            pred = np.mean([p["pred"] for p in parts], axis=0)
            scores.append(regression_metrics(first["truth"], pred)[metric])
            continue
        proba = np.mean([p["proba"] for p in parts], axis=0)
        threshold = float(np.mean([p["threshold"] for p in parts]))
        scores.append(classification_metrics(output_kind, first["y"], proba, first["classes"],
                                             full=False, threshold=threshold)[metric])
    return {"model": "ensemble", "members": list(members), "metric": metric,
            "mean": float(np.mean(scores)),
            "std": float(np.std(scores, ddof=1)) if len(scores) > 1 else 0.0,
            "parameters": int(sum(reports[m]["parameters"] for m in members)),
            "seconds": round(sum(seconds[m] for m in members), 2),
            "folds": [float(v) for v in scores]}


def cross_validate_frame(estimator: Callable[[str], type], cfg: RunConfig, k: int,
                         frame: pd.DataFrame, source: str, verbose: int = 1,
                         only: list[int] | None = None, keep_predictions: bool = False
                         ) -> dict[str, Any]:
    """k-fold cross-validation of ``cfg`` on the rows of ``frame``, stratified by label for
    classification: the data is cleaned once; each fold trains a fresh
    ``estimator(output_kind)(config=cfg)`` on the other folds (with its own validation split
    for early stopping) and scores the held-out fold. Every fold's metrics (of the folds
    ``only`` names, 1-based, when given), their mean and standard deviation; with
    ``keep_predictions``, also each fold's held-out predictions (``held_out``)."""
    texts = [i.name for i in cfg.inputs if i.type == "text"]
    df, _ = clean_frame(frame, texts, cfg.output.name, cfg.data.clean, source=source,
                        key_cols=[i.name for i in cfg.inputs])
    target, _, strata = encode_labels(df, cfg, source)
    try:
        folds = kfold(strata, k, cfg.data.seed)
    except ValueError as err:
        raise DataError(f"{source}: {err}") from None
    cls = estimator(target.kind)
    # The held-out fold scores each fit: no test split inside the fold; a fold is not a
    # tracked run of its own.
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"test_split": 0.0}),
                                 "tracking": None})
    rows, predictions = [], []
    for i, (tr, te) in enumerate(folds, start=1):
        if only is not None and i not in only:
            continue
        clf = cls(config=cfg, verbose=0)
        clf._fit_frame(df.iloc[tr].reset_index(drop=True), cfg, source=f"{source} (fold {i})")
        n_params = clf.n_parameters()
        held_out = df.iloc[te].reset_index(drop=True)
        logits = clf._logits_frame(held_out, source)
        truth = clf.labels_.encode(held_out[cfg.output.name].tolist(), cfg.output.separator,
                                   source=source)
        m = clf._metrics(logits, truth)
        # The held-out predictions, for scoring an ensemble of candidates on the same folds.
        target = clf.labels_
        predictions.append(
            {"truth": target.decode(truth), "pred": target.decode(logits)}
            if target.kind == "numeric" else
            {"y": truth, "proba": probabilities(target.kind, logits),
             "threshold": clf.decision_threshold_, "classes": list(target.classes)})
        row = {key: m[key] for key in CV_METRICS if m.get(key) is not None}
        base = m["baseline"]
        row.update({f"baseline_{key}": base[key] for key in ("accuracy", "mae", "rmse")
                    if key in base})
        weight = clf.config_.train.baseline_weight
        if clf.model_ is not None and clf.yardstick_ is not None:
            row["baseline_weight"] = float(weight)  # the simple baseline's share, chosen
        rows.append(row)
        say_fold(i, k, row, verbose)
    report = fold_report({"k": k, "seed": cfg.data.seed, "parameters": n_params}, rows)
    if keep_predictions:  # model selection's, never saved: a run keeps scores only
        report["held_out"] = predictions
    return report


def say_fold(i: int, k: int, row: dict[str, float], verbose: int) -> None:
    """The progress line of cross-validation fold ``i`` of ``k`` (rows or series)."""
    if verbose:
        print(f"cross-validation fold {i}/{k}: " + ", ".join(
            f"{key} {v:.4f}" for key, v in row.items()), file=sys.stderr, flush=True)


def fold_report(head: dict[str, Any], rows: list[dict[str, float]]) -> dict[str, Any]:
    """A cross-validation report: ``head``, every fold's metrics, their mean and std (0 for a
    single fold)."""
    keys = [key for key in rows[0] if all(key in r for r in rows)]
    return {**head, "folds": rows,
            "mean": {key: float(np.mean([r[key] for r in rows])) for key in keys},
            "std": {key: float(np.std([r[key] for r in rows], ddof=1)) if len(rows) > 1
                    else 0.0 for key in keys}}
