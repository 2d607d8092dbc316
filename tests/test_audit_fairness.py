"""The fairness audit: per-group metrics, disparity, verdict, mitigation saved without pickle
and applied by predict and serve; the bad inputs of issue 8."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import dlforge
from dlforge import DataError, TabularClassifier, audit, load
from dlforge.audit.fairness import Thresholds, audit_predictions, parse_bins
from dlforge.audit.mitigate import fit_thresholds, threshold_optimizer
from dlforge.cli import main
from dlforge.errors import ConfigError
from dlforge.train.thresholds import GroupThresholds

TINY = dict(hidden=[16], epochs=5, batch_size=32, lr=1e-2, patience=0, verbose=0,
            precision="fp32")


def planted(n: int = 400, seed: int = 0) -> pd.DataFrame:
    """Group B's feature is shifted down, so a model of y from x selects B far less often."""
    rng = np.random.default_rng(seed)
    g = np.where(rng.random(n) < 0.5, "A", "B")
    x = rng.normal(0, 1, n) - 0.9 * (g == "B")
    y = np.where(x + rng.normal(0, 0.5, n) > 0, "yes", "no")
    return pd.DataFrame({"x": x, "group": g, "age": rng.integers(18, 80, n), "label": y})


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory) -> tuple[Path, pd.DataFrame, Path]:
    d = tmp_path_factory.mktemp("planted")
    df = planted()
    clf = TabularClassifier(**TINY).fit(df[["x"]], df["label"])
    clf.save(d / "run")
    csv = d / "data.csv"
    df.to_csv(csv, index=False)
    return d / "run", df, csv


def fresh(run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


# ------------------------------------------------------------------ the apply step vs Fairlearn
def _scores(n: int = 300, seed: int = 1):
    rng = np.random.default_rng(seed)
    groups = rng.choice(np.array(["a", "b", "c"], dtype=object), n)
    y = (rng.random(n) < np.where(groups == "a", 0.6, 0.35)).astype(int)
    scores = np.clip(0.5 * y + rng.normal(0.25, 0.25, n) + 0.1 * (groups == "a"), 0, 1)
    return scores, y, groups


@pytest.mark.parametrize("constraint", ["demographic_parity", "equalized_odds"])
def test_applied_rule_equals_threshold_optimizer(constraint):
    scores, y, groups = _scores()
    opt = threshold_optimizer(scores, y, groups, constraint)
    rule = fit_thresholds(scores, y, groups, constraint, columns=["g"], bins={},
                          classes=[0, 1], positive=1)
    rule = GroupThresholds.from_dict(json.loads(json.dumps(rule.to_dict())))  # via JSON
    X = scores.reshape(-1, 1)
    np.testing.assert_allclose(rule.probability(scores, groups),
                               opt._pmf_predict(X, sensitive_features=groups)[:, 1])
    for rs in (0, 1, 42):
        ours = rule.decide(scores, groups, random_state=rs)
        theirs = opt.predict(X, sensitive_features=groups, random_state=rs)
        np.testing.assert_array_equal(ours.astype(int), theirs)


def test_row_mode_is_deterministic_and_batch_independent():
    scores, y, groups = _scores()
    rule = fit_thresholds(scores, y, groups, "equalized_odds", columns=["g"], bins={},
                          classes=[0, 1], positive=1)
    a = rule.decide(scores, groups)
    perm = np.random.default_rng(0).permutation(len(scores))
    np.testing.assert_array_equal(rule.decide(scores[perm], groups[perm]), a[perm])
    np.testing.assert_array_equal(rule.decide(scores[:7], groups[:7]), a[:7])
    with pytest.raises(DataError, match="'z' was not seen"):
        rule.decide(scores[:2], np.array(["a", "z"], dtype=object))


def test_summary_measures_equal_fairlearns():
    from fairlearn.metrics import (
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
    )

    scores, y, groups = _scores()
    pred = (scores > 0.45).astype(int)
    r = audit_predictions(y, pred, groups, resamples=50)
    kw = dict(y_true=y, y_pred=pred, sensitive_features=groups)
    assert r["demographic_parity_difference"] == pytest.approx(demographic_parity_difference(**kw))
    assert r["demographic_parity_ratio"] == pytest.approx(demographic_parity_ratio(**kw))
    assert r["equalized_odds_difference"] == pytest.approx(equalized_odds_difference(**kw))
    again = audit_predictions(y, pred, groups, resamples=50)
    assert again["by_group"]["a"]["accuracy_ci"] == r["by_group"]["a"]["accuracy_ci"]  # seeded
    lo, hi = r["by_group"]["a"]["selection_rate_ci"]
    assert lo <= r["by_group"]["a"]["selection_rate"] <= hi


# ------------------------------------------------------------------ the planted disparity
def test_planted_disparity_is_detected_and_mitigated(planted_run, tmp_path):
    run0, df, _ = planted_run
    run = fresh(run0, tmp_path)
    before = audit(run, df, "group", resamples=200)["attributes"]["group"]["model"]
    assert before["demographic_parity_ratio"] < 0.8
    assert before["verdict"]["result"] == "fail"
    assert before["by_group"]["B"]["selection_rate"] < before["by_group"]["A"]["selection_rate"]

    r = audit(run, df, "group", mitigate="demographic_parity", resamples=200)
    entry = r["attributes"]["group"]
    assert entry["model"]["demographic_parity_ratio"] == before["demographic_parity_ratio"]
    after = entry["mitigated"]
    assert after["demographic_parity_ratio"] >= 0.8 > before["demographic_parity_ratio"]
    assert after["demographic_parity_difference"] < before["demographic_parity_difference"]
    assert after["verdict"]["result"] == "pass" and r["verdict"] == "pass"

    # Saved without pickle, in the manifest, and written out with the charts and the card.
    saved = json.loads((run / "postprocess.json").read_text())
    assert saved["constraint"] == "demographic_parity" and set(saved["rules"]) == {"A", "B"}
    assert "postprocess.json" in json.loads((run / "dlforge.json").read_text())["files"]
    on_disk = json.loads((run / "audit" / "fairness.json").read_text())
    assert on_disk["attributes"]["group"]["mitigated"]["verdict"]["result"] == "pass"
    assert len(list((run / "audit" / "plots").glob("group_*.png"))) == 4
    card = (run / "MODEL_CARD.md").read_text()
    assert "| group | mitigated |" in card and "ThresholdOptimizer" in card

    # predict applies it, given the sensitive column; the raw scores are unchanged.
    clf = load(run)
    mitigated = clf.predict(df[["x", "group"]])
    same = clf.predict(df[["x"]], sensitive_features=df["group"])
    np.testing.assert_array_equal(mitigated, same)
    raw = np.where(clf.predict_proba(df[["x"]])[:, 1] >= 0.5, "yes", "no")
    assert (mitigated != raw).any()
    sel = pd.Series(mitigated == "yes").groupby(df["group"]).mean()
    assert sel.min() / sel.max() >= 0.8
    with pytest.raises(DataError, match="needs its sensitive value"):
        clf.predict(df[["x"]])

    from dlforge.estimators.files import info

    assert info(run)["fairness"]["mitigation"]["constraint"] == "demographic_parity"
    assert info(run)["fairness"]["verdict"] == "pass"
    assert main(["info", str(run)]) == 0

    # equalized odds reduces the equalized-odds difference
    eo = audit(run, df, "group", mitigate="equalized_odds", resamples=200)["attributes"]["group"]
    assert eo["mitigated"]["equalized_odds_difference"] < eo["model"]["equalized_odds_difference"]
    # and "none" removes the rule
    r = audit(run, df, "group", mitigate="none", resamples=50)
    assert "mitigated" not in r["attributes"]["group"]
    assert not (run / "postprocess.json").exists()
    assert getattr(load(run), "postprocess_", None) is None


def test_predict_and_serve_need_the_sensitive_column(planted_run, tmp_path):
    from fastapi import HTTPException

    from dlforge.estimators.files import predict
    from dlforge.serve.app import ServedModel

    run0, df, csv = planted_run
    run = fresh(run0, tmp_path)
    audit(run, df, "group", mitigate="equalized_odds", resamples=50)
    out = predict(run, csv, tmp_path / "pred.csv")
    assert list(out["prediction"]) == list(load(run).predict(df))
    no_group = tmp_path / "nogroup.csv"
    df[["x", "label"]].to_csv(no_group, index=False)
    assert main(["predict", str(run), "--data", str(no_group), "--out",
                 str(tmp_path / "p2.csv")]) == 2
    assert not (tmp_path / "p2.csv").exists()

    served = ServedModel(run)
    rows = served.check([{"x": 0.3, "group": "B"}, {"x": -1.0, "group": "A"}])
    preds = served.predict(rows)
    assert [p["label"] for p in preds] == list(load(run).predict(pd.DataFrame(rows)))
    with pytest.raises(HTTPException, match="group: missing"):
        served.check([{"x": 0.3}])
    with pytest.raises(HTTPException, match="'C' was not seen"):
        served.check([{"x": 0.3, "group": "C"}])

    import httpx

    from dlforge.serve.app import ServeSettings
    from tests.test_serve import Server

    with Server([served], ServeSettings()) as server:
        url = f"{server.url}/v1/models/{served.name}/predict"
        ok = httpx.post(url, json={"instances": [{"x": 0.3, "group": "B"}]})
        assert ok.status_code == 200
        assert ok.json()["predictions"][0]["label"] == preds[0]["label"]
        missing = httpx.post(url, json={"instances": [{"x": 0.3}]})
        assert missing.status_code == 422 and "group: missing" in missing.text
        # Open Inference Protocol v2: the sensitive value is a tensor like the inputs.
        infer = httpx.post(f"{server.url}/v2/models/{served.name}/infer", json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.3]},
            {"name": "group", "datatype": "BYTES", "shape": [1], "data": ["B"]}]})
        assert infer.status_code == 200, infer.text
        assert infer.json()["outputs"][0]["data"] == [str(preds[0]["label"])]
        no_group = httpx.post(f"{server.url}/v2/models/{served.name}/infer", json={"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.3]}]})
        assert no_group.status_code == 422 and "no tensor named 'group'" in no_group.text


# ------------------------------------------------------------------ the CLI and bad inputs
def test_cli_audit_prints_and_writes(planted_run, tmp_path, capsys):
    run0, _, csv = planted_run
    run = fresh(run0, tmp_path)
    assert main(["audit", str(run), "--data", str(csv), "--sensitive", "group,age",
                 "--bins", "age:30,50", "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "group: the model's decisions" in out and "-> fail" in out
    result = json.loads((run / "audit" / "fairness.json").read_text())
    assert set(result["attributes"]) == {"group", "age", "group & age"}
    assert set(result["attributes"]["age"]["model"]["by_group"]) == {"<30", "[30,50)", ">=50"}
    assert "A,<30" in result["attributes"]["group & age"]["model"]["by_group"]
    assert main(["audit", str(run), "--data", str(csv), "--sensitive", "group", "--json",
                 "--bootstrap", "50", "--min-ratio", "0.1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["attributes"]["group"]["model"]["verdict"]["result"] == "pass"


@pytest.mark.parametrize("args, message", [
    (["--sensitive", "gender"], "sensitive column 'gender' not found; columns are: x, group"),
    (["--sensitive", "age"], "is numeric with .* distinct values .* --bins age:"),
    (["--sensitive", "group", "--bins", "age:30"], "--bins age: not one of the sensitive"),
    (["--sensitive", "age", "--bins", "age:50,30"], "edges must increase"),
    (["--sensitive", "age", "--bins", "age"], "expected COLUMN:EDGE,EDGE"),
    (["--sensitive", "group", "--mitigate", "fairness"], "--mitigate: expected"),
    (["--sensitive", "group", "--positive", "maybe"], "'maybe' is not one of the run's classes"),
    (["--sensitive", "group", "--min-ratio", "1.5"], "min_ratio: expected a number between"),
    ([], "nothing to audit"),
])
def test_bad_inputs_are_one_line_errors(planted_run, args, message, capsys):
    run, _, csv = planted_run
    assert main(["audit", str(run), "--data", str(csv), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    import re

    assert re.search(message, err), err


def test_single_group_is_an_error(planted_run, tmp_path, capsys):
    run, df, _ = planted_run
    one = tmp_path / "one.csv"
    df.assign(group="A").to_csv(one, index=False)
    assert main(["audit", str(run), "--data", str(one), "--sensitive", "group"]) == 2
    assert "has a single group ('A' in all 400 rows)" in capsys.readouterr().err


def test_small_groups_are_reported_not_fatal(planted_run, tmp_path):
    run0, df, _ = planted_run
    run = fresh(run0, tmp_path)
    df = df.copy()
    df.loc[:2, "group"] = "C"  # three rows
    df.loc[:2, "label"] = "no"  # and no positive label among them
    r = audit(run, df, "group", resamples=100)["attributes"]["group"]["model"]
    c = r["by_group"]["C"]
    assert c["count"] == 3 and c["small"] and c["true_positive_rate"] is None
    assert any("TPR undefined" in n for n in c["notes"])
    assert any("small group" in n for n in c["notes"])
    assert r["small_groups_excluded"] == ["C"] and r["measured_over"] == ["A", "B"]
    assert r["equalized_odds_difference"] is not None  # over the groups large enough
    with pytest.raises(DataError, match="group 'C' has only negative labels"):
        audit(run, df, "group", mitigate="equalized_odds", resamples=50)


def test_multiclass_run_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=90), "g": ["a", "b"] * 45,
                       "label": ["p", "q", "r"] * 30})
    TabularClassifier(**{**TINY, "epochs": 1}).fit(df[["x"]], df["label"]).save(tmp_path / "mc")
    df.to_csv(tmp_path / "mc.csv", index=False)
    assert main(["audit", str(tmp_path / "mc"), "--data", str(tmp_path / "mc.csv"),
                 "--sensitive", "g"]) == 2
    assert "binary outputs only; this run predicts category labels (3 classes)" in \
        capsys.readouterr().err


def test_thresholds_and_bins_parse():
    assert parse_bins("age:25,40,60;income:1000") == {"age": [25, 40, 60], "income": [1000]}
    with pytest.raises(ConfigError):
        Thresholds(min_ratio=-0.1)
    assert callable(dlforge.audit)


def test_text_run_audited_by_a_column_that_is_not_an_input(trained_run, tmp_path):
    run0, csv = trained_run
    run = fresh(run0, tmp_path)
    df = pd.read_csv(csv)
    df["region"] = np.where(np.arange(len(df)) % 3 == 0, "north", "south")
    df.to_csv(tmp_path / "with_region.csv", index=False)
    r = audit(run, tmp_path / "with_region.csv", "region", resamples=50)
    groups = r["attributes"]["region"]["model"]["by_group"]
    assert set(groups) == {"north", "south"} and sum(g["count"] for g in groups.values()) == 160


# ------------------------------------------------------------------ the credit demo
def test_credit_data_audited_by_age_band_and_marital_status(tmp_path):
    from dlforge.data.datasets import credit_data

    df = credit_data().sample(600, random_state=0).reset_index(drop=True)
    X = df[["Seniority", "Income", "Amount", "Age", "Marital", "Records"]]
    TabularClassifier(**TINY).fit(X, df["Status"]).save(tmp_path / "credit")
    data = X.assign(Status=df["Status"])
    r = audit(tmp_path / "credit", data, "Marital,Age", bins={"Age": [30, 45]},
              positive="good", label="Status", resamples=100)
    assert r["positive"] == "good"
    age = r["attributes"]["Age"]["model"]
    assert set(age["by_group"]) == {"<30", "[30,45)", ">=45"}
    marital = r["attributes"]["Marital"]["model"]["by_group"]
    assert any(v["small"] for v in marital.values())  # e.g. widow(er)s: few rows
    assert 0 <= r["attributes"]["Marital"]["model"]["demographic_parity_difference"] <= 1
