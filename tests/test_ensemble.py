"""model: ensemble — several families on the same rows, their predictions averaged; and
model: auto keeping the average of its two best candidates when it wins on the same folds."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from dlforge import TabularClassifier, TabularRegressor, load
from dlforge.config import config_to_dict as config_dict
from dlforge.config import validate_config
from dlforge.errors import ConfigError, RunDirError
from dlforge.estimators.select import _ensemble_row
from dlforge.serve.app import ServedModel, ServeSettings
from tests.serving import Server
from tests.test_cli import assert_user_error, run_cli


def _table(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "c": rng.choice(["x", "y", "z"], n)})
    logit = 2 * X["a"] - X["b"] + (X["c"] == "x")
    return X, pd.Series(np.where(logit + rng.normal(0, 0.5, n) > 0, "yes", "no"), name="y")


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    X, y = _table()
    clf = TabularClassifier(model="ensemble", members=["mlp", "baseline"], epochs=3,
                            precision="fp32", verbose=0).fit(X, y)
    path = clf.save(tmp_path_factory.mktemp("ens") / "run")
    return clf, path, X


def test_config_checks_the_members():
    base = {"inputs": [{"name": "t", "type": "text"}], "output": {"name": "y"}}
    cfg = validate_config({**base, "model": {"name": "ensemble", "members": ["cnn", "rnn"]}})
    assert cfg.model.members == ["cnn", "rnn"]
    for members, message in ((["cnn", "mlp"], "model.members: 'mlp' does not fit text inputs"),
                             (["cnn", "cnn"], "'cnn' is listed twice"),
                             (["cnn"], "at least 2"),
                             (["cnn", "auto"], "model")):
        with pytest.raises(ConfigError, match=message):
            validate_config({**base, "model": {"name": "ensemble", "members": members}})
    with pytest.raises(ConfigError, match="an ensemble trains several models on the same rows"):
        validate_config({**base, "model": {"name": "ensemble", "members": ["cnn", "rnn"]},
                         "privacy": {"target_epsilon": 8}})
    with pytest.raises(ConfigError, match="ensemble averages rows"):
        validate_config({"forecast": {"targets": ["s"], "window": 4, "horizon": 2},
                         "model": {"name": "ensemble", "members": ["cnn", "rnn"]}})


def test_the_average_of_its_members_saved_and_loaded(ensemble_run):
    clf, path, X = ensemble_run
    members = {m.config_.model.name: m for m in clf.members_}
    assert set(members) == {"mlp", "baseline"}
    assert members["mlp"].model_ is not None and members["baseline"].model_ is None
    mean = (members["mlp"].predict_proba(X) + members["baseline"].predict_proba(X)) / 2
    np.testing.assert_allclose(clf.predict_proba(X), mean, atol=1e-5)
    assert clf.metrics_["model"] == "ensemble (mlp + baseline)"
    assert clf.n_parameters() == sum(m.n_parameters() for m in clf.members_)
    # Each member is a whole run inside the run, sealed by both manifests.
    files = json.loads((path / "dlforge.json").read_text())["files"]
    assert "members/mlp/model.safetensors" in files and "members/baseline/model.skops" in files
    back = load(path)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert list(back.predict(X)) == list(clf.predict(X))
    assert load(path / "members" / "mlp").predict_proba(X).shape == (len(X), 2)


def test_a_changed_member_is_refused(ensemble_run, tmp_path):
    import shutil

    _, path, _ = ensemble_run
    copy = tmp_path / "run"
    shutil.copytree(path, copy)
    (copy / "members" / "mlp" / "config.yaml").write_text(
        (copy / "members" / "mlp" / "config.yaml").read_text() + "\n")
    with pytest.raises(RunDirError, match="members/mlp/config.yaml was changed"):
        load(copy)


def test_served_explained_and_exported(ensemble_run, tmp_path, capsys):
    clf, path, X = ensemble_run
    rows = X.head(3).to_dict(orient="records")
    with Server([ServedModel(path, name="m")], ServeSettings()) as srv:
        r = httpx.post(f"{srv.url}/v1/models/m/predict", json={"instances": rows}, timeout=30)
    assert r.status_code == 200, r.text
    got = [p["probabilities"] for p in r.json()["predictions"]]
    want = clf.predict_proba(X.head(3))
    np.testing.assert_allclose([[g[c] for c in clf.classes_] for g in got], want, atol=1e-5)
    code, _, err = run_cli(capsys, "export", path, "--out", tmp_path / "m.onnx")
    assert_user_error(code, err, "an ensemble (mlp + baseline) has no single ONNX graph",
                      f"dlforge export {path / 'members' / 'mlp'}")
    assert not (tmp_path / "m.onnx").exists()
    from dlforge.audit.explain import explain_instances

    with pytest.raises(RunDirError, match="explain a member"):
        explain_instances(clf, rows[:1])


def test_a_regression_ensemble_averages_numbers():
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=150), "b": rng.normal(size=150)})
    y = 3 * X["a"] - X["b"] + rng.normal(0, 0.1, 150)
    reg = TabularRegressor(model="ensemble", members=["mlp", "baseline"], epochs=3,
                           precision="fp32", verbose=0).fit(X, y)
    parts = [m.predict(X) for m in reg.members_]
    np.testing.assert_allclose(reg.predict(X), np.mean(parts, axis=0), rtol=1e-4, atol=1e-4)


def test_selection_scores_the_average_on_the_same_folds():
    # Two candidates, each sure and right on one half of the rows and unsure and wrong on the
    # other: alone each is right half the time; their average is right everywhere. With an
    # uninformative third one, the average is no better than the first alone.
    y = np.array([0, 1] * 10)
    half = np.arange(20) < 10

    def proba(p_true: np.ndarray) -> np.ndarray:
        return np.where(y[:, None] == [0, 1], p_true[:, None], 1 - p_true[:, None])

    a, b = proba(np.where(half, 0.9, 0.4)), proba(np.where(half, 0.4, 0.9))
    unsure = np.full((20, 2), 0.5)

    def held(p: np.ndarray) -> dict:
        return {"y": y, "proba": p, "threshold": 0.5, "classes": ["n", "p"]}

    reports = {"a": {"held_out": [held(a)] * 2, "parameters": 10},
               "b": {"held_out": [held(b)] * 2, "parameters": 20},
               "c": {"held_out": [held(unsure)] * 2, "parameters": 5}}
    seconds = {"a": 1.0, "b": 2.0, "c": 0.5}
    acc = [float((p.argmax(1) == y).mean()) for p in (a, b)]
    assert acc == [0.5, 0.5]
    row = _ensemble_row(["a", "b"], reports, "accuracy", "binary", seconds)
    assert row["mean"] == 1.0 > max(acc) and row["members"] == ["a", "b"]
    assert row["parameters"] == 30 and row["seconds"] == 3.0 and row["folds"] == [1.0, 1.0]
    assert _ensemble_row(["a", "c"], reports, "accuracy", "binary", seconds)["mean"] <= acc[0]
    # Numbers: the mean of the predictions, scored by the metric.
    truth = np.arange(10.0)
    num = {f: {"held_out": [{"truth": truth, "pred": truth + d}], "parameters": 1}
           for f, d in (("a", 1.0), ("b", -1.0))}
    row = _ensemble_row(["a", "b"], num, "rmse", "numeric", {"a": 0, "b": 0})
    assert row["mean"] == 0.0 and row["std"] == 0.0


def test_auto_keeps_the_ensemble_only_when_it_wins(capsys):
    X, y = _table(200, seed=2)
    clf = TabularClassifier(model="auto", ensemble=True, epochs=2, precision="fp32",
                            verbose=0).fit(X, y)
    sel = clf.metrics_["model_selection"]
    board = {r["model"]: r for r in sel["leaderboard"]}
    assert set(board) == {"mlp", "baseline", "ensemble"}
    best_single = max(board["mlp"]["mean"], board["baseline"]["mean"])
    assert (sel["winner"] == "ensemble") == (board["ensemble"]["mean"] > best_single
                                             and "not_kept" not in board["ensemble"])
    assert clf.config_.model.name == sel["winner"]


def test_cli_trains_an_ensemble(tmp_path, capsys):
    X, y = _table(160)
    X.assign(y=y).to_csv(tmp_path / "t.csv", index=False)
    code, out, err = run_cli(capsys, "train", "--data", tmp_path / "t.csv", "--kind", "table",
                             "--label", "y", "--model", "ensemble", "--members", "mlp,baseline",
                             "--epochs", "2", "--precision", "fp32", "--quiet",
                             "--out", tmp_path / "r")
    assert code == 0, err
    assert load(tmp_path / "r").config_.model.members == ["mlp", "baseline"]
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.csv", "--kind", "table",
                           "--label", "y", "--model", "ensemble", "--members", "mlp,mlp",
                           "--out", tmp_path / "r2")
    assert_user_error(code, err, "'mlp' is listed twice")


# ------------------------------------------------ pretrained encoders as candidates / members
def test_auto_takes_pretrained_folders_and_an_ensemble_keeps_one(tmp_path_factory):
    import torch
    import transformers

    from dlforge import TextClassifier
    from tests.test_pretrained import _bert_config, _save_tokenizer

    bert = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    transformers.BertModel(_bert_config()).save_pretrained(str(bert))
    _save_tokenizer(bert)
    words = ["good", "bad", "great", "boring"] * 20
    texts = [f"{w} film {i}" for i, w in enumerate(words)]
    labels = ["p" if w in ("good", "great") else "n" for w in words]
    cfg = validate_config({
        "inputs": [{"name": "text", "max_length": 8, "vocab_size": 300}],
        "output": {"name": "label"},
        "model": {"name": "auto", "families": ["cnn"], "cv": 2, "pretrained": [str(bert)]},
        "train": {"epochs": 1, "batch_size": 16, "precision": "fp32"}})
    clf = TextClassifier(config=cfg, verbose=0).fit(texts, labels)
    sel = clf.metrics_["model_selection"]
    board = {r["model"]: r for r in sel["leaderboard"]}
    name = f"pretrained-{bert.name}"
    assert set(board) == {"cnn", name} and board[name]["parameters"] > 0
    model = clf.config_.model
    if sel["winner"] == name:  # the run is the fine-tuned folder
        assert (model.name, model.path) == ("pretrained", str(bert))
    else:
        assert model.name == sel["winner"]
    # An ensemble with a pretrained member keeps it in members/pretrained-<folder>.
    ens = TextClassifier(model="ensemble", members=["baseline", str(bert)], epochs=1,
                         batch_size=16, precision="fp32", verbose=0).fit(texts, labels)
    path = ens.save(tmp_path_factory.mktemp("pre") / "run")
    assert (path / "members" / name / "config.yaml").is_file()
    assert ens.metrics_["model"] == f"ensemble (baseline + {name})"
    np.testing.assert_array_equal(load(path).predict_proba(texts[:5]),
                                  ens.predict_proba(texts[:5]))
    with pytest.raises(ConfigError, match="model.pretrained: a pretrained encoder takes a text"):
        validate_config({"inputs": [{"name": "a", "type": "numeric"}], "output": {"name": "y"},
                         "model": {"name": "auto", "pretrained": [str(bert)]}})


@pytest.mark.parametrize("folds,kept", [([0.90, 0.80, 0.80], False),  # one lucky fold
                                        ([0.82, 0.81, 0.79], True)])  # better on 2 of 3
def test_the_ensemble_is_kept_only_when_it_wins_most_folds(monkeypatch, folds, kept):
    from dlforge.estimators import select

    X, y = _table(60)
    cfg = validate_config({"inputs": [{"name": c, "type": "numeric"} for c in ("a", "b")],
                           "output": {"name": "y"}, "model": {"name": "auto", "ensemble": True}})
    scores = {"mlp": [0.80, 0.80, 0.80], "baseline": [0.70, 0.70, 0.70]}

    def cv(trial, k, frame, only):  # the fold scores above; only the folds asked for
        rows = [{"accuracy": scores[trial.model.name][i - 1]} for i in (only or range(1, 4))]
        return {**select.fold_report({"k": k, "parameters": 10}, rows),
                "held_out": [None] * len(rows)}

    monkeypatch.setattr(select, "_ensemble_row", lambda members, *a: {
        "model": "ensemble", "members": list(members), "metric": "accuracy",
        "mean": float(np.mean(folds)), "std": 0.05, "parameters": 20, "seconds": 0.0,
        "folds": folds})
    chosen, sel = select.select_model(X.assign(y=y), cfg, "binary", "t", lambda s: None, cv)
    board = {r["model"]: r for r in sel["leaderboard"]}
    assert board["ensemble"]["mean"] > board["mlp"]["mean"]  # a better mean either way
    assert (sel["winner"] == "ensemble") is kept and (chosen.model.name == "ensemble") is kept
    assert ("not_kept" in board["ensemble"]) is not kept
    assert board["ensemble"]["folds_won"] == f"{2 if kept else 1} of 3 against mlp"
    off = validate_config({**config_dict(cfg), "model": {"name": "auto"}})  # the default
    _, sel = select.select_model(X.assign(y=y), off, "binary", "t", lambda s: None, cv)
    assert [r["model"] for r in sel["leaderboard"]] == ["mlp", "baseline"]
