"""What makes default models good on small data: the data-size recipe, the too-few-steps
message, the prior-initialised output bias, and the strong simple baseline as a run, a model
selection candidate and the yardstick of every run."""

from __future__ import annotations

import json
import os

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from dlforge import TabularClassifier, TabularRegressor, TextClassifier, load
from dlforge.config import TrainConfig, validate_config
from dlforge.errors import ConfigError, RunDirError
from dlforge.estimators.base import DeepModel
from dlforge.models.registry import build_model
from dlforge.serve.app import ServedModel, ServeSettings
from dlforge.testing import toy_texts
from dlforge.train.metrics import prior_logits
from dlforge.train.recipe import choose_recipe, optimiser_steps, steps_warning
from tests.serving import Server
from tests.test_cli import run_cli


# ------------------------------------------------------------------------------ the recipe
def test_the_recipe_picks_from_the_data_size_and_the_family():
    small, chosen = choose_recipe(TrainConfig(), 400, "transformer")
    big, _ = choose_recipe(TrainConfig(), 50_000, "transformer")
    assert set(chosen) == {"epochs", "batch_size", "lr", "weight_decay", "warmup", "patience",
                           "restarts", "label_smoothing"}
    # Label smoothing: 0.1 for a network of classes trained from scratch, else off.
    assert chosen["label_smoothing"] == 0.0  # the output kind is not known here
    assert choose_recipe(TrainConfig(), 400, "cnn", "binary")[0].label_smoothing == 0.1
    assert choose_recipe(TrainConfig(), 400, "mlp", "category")[0].label_smoothing == 0.1
    assert choose_recipe(TrainConfig(), 400, "mlp", "numeric")[0].label_smoothing == 0.0
    assert choose_recipe(TrainConfig(), 400, "pretrained", "binary")[0].label_smoothing == 0.0
    assert small.batch_size < big.batch_size and small.epochs > big.epochs
    # Enough optimiser steps to learn on a few hundred rows: far more than 5 x batch 64.
    assert optimiser_steps(small, 400) >= 1000 > optimiser_steps(TrainConfig(epochs=5,
                                                                          batch_size=64,
                                                                          lr=1e-3), 400) * 20
    tuned, _ = choose_recipe(TrainConfig(), 400, "pretrained")
    assert tuned.lr < small.lr and tuned.warmup > 0 and tuned.batch_size <= 32
    assert small.patience >= 3 and steps_warning(small, 400, "transformer") is None


def test_every_explicit_setting_wins_over_the_recipe():
    given = dict(epochs=2, batch_size=7, lr=0.3, weight_decay=0.0, warmup=0.0, patience=0,
                 restarts=1, label_smoothing=0.0)
    cfg, chosen = choose_recipe(TrainConfig(**given), 400, "cnn", "binary")
    assert chosen == {} and {k: getattr(cfg, k) for k in given} == given
    cfg, chosen = choose_recipe(TrainConfig(epochs=3), 400, "cnn")
    assert cfg.epochs == 3 and "epochs" not in chosen and cfg.batch_size == chosen["batch_size"]


def test_the_chosen_values_are_printed_and_saved(tmp_path, capsys):
    texts, labels = toy_texts(120)
    pd.DataFrame({"text": texts, "label": labels}).to_csv(tmp_path / "t.csv", index=False)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.csv", "--text", "text",
                           "--label", "label", "--model", "cnn",
                           "--d-model", "16", "--epochs", "2",
                           "--precision", "fp32", "--out", tmp_path / "run")
    assert code == 0, err
    assert "recipe: batch size 16, lr 0.001" in err and "epochs" not in err.split(
        "recipe:")[1].split("(")[0]  # epochs was given: not chosen
    saved = validate_config(__import__("yaml").safe_load((tmp_path / "run" / "config.yaml")
                                                          .read_text()))
    assert (saved.train.epochs, saved.train.batch_size, saved.train.lr) == (2, 16, 1e-3)


def test_too_few_steps_are_said_in_one_line(capsys):
    texts, labels = toy_texts(120)
    TextClassifier(model="cnn", d_model=16, filters=4, epochs=5, batch_size=64,
                   precision="fp32").fit(texts, labels)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "optimiser steps" in line]
    assert len(lines) == 1
    assert "5 epochs x 2 batches of 64 on 108 rows = 10 optimiser steps" in lines[0]
    assert steps_warning(TrainConfig(epochs=50, batch_size=16, lr=1e-3), 400, "cnn") is None


def test_the_schedule_fits_the_steps_there_are():
    from dlforge.train.trainer import make_scheduler

    model = torch.nn.Linear(2, 1)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=1.0, weight_decay=0.0, warmup=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = make_scheduler(opt, cfg, total_steps=4)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[2] == max(lrs) and lrs[-1] < lrs[2]  # warm-up over 2 of 4 steps, decay


# ----------------------------------------------------------------- prior-initialised bias
@pytest.mark.parametrize("kind,y,n", [("binary", [1, 1, 1, 0], 1), ("category", [0, 2, 2, 2], 3),
                                      ("multilabel", [[1, 0], [1, 1], [1, 0], [1, 0]], 2)])
def test_the_output_bias_starts_at_the_training_prior(kind, y, n):
    prior = prior_logits(kind, np.array(y), n)
    probs = (torch.softmax(torch.tensor(prior), 0) if kind == "category"
             else torch.sigmoid(torch.tensor(prior)))
    expected = {"binary": [0.75], "category": [0.25, 1e-4, 0.75],
                "multilabel": [1 - 1e-4, 0.25]}[kind]
    assert probs.numpy() == pytest.approx(expected, abs=1e-3)
    assert prior_logits("numeric", np.array([1.0, 2.0]), 1) is None


def test_an_untrained_model_predicts_the_majority():
    cfg = validate_config({"inputs": [{"name": "text", "vocab_size": 300}],
                           "output": {"name": "label"},
                           "model": {"name": "transformer", "d_model": 16, "heads": 2}})
    spec = {"text": {"vocab_size": 300, "max_length": 8, "pad_id": 0}}
    y = np.array([2] * 70 + [0] * 20 + [1] * 10)
    torch.manual_seed(0)
    net = build_model(cfg, spec, 3, prior=prior_logits("category", y, 3)).eval()
    ids = torch.randint(1, 300, (64, 8))
    with torch.no_grad():
        logits = net({"text": {"input_ids": ids, "attention_mask": torch.ones_like(ids)}})
    assert (logits.argmax(1) == 2).all()  # the majority class, not noise
    assert torch.softmax(logits, 1).mean(0).numpy() == pytest.approx([0.2, 0.1, 0.7], abs=0.02)


# ----------------------------------------------------------------- the simple baseline
def test_the_baseline_run_saves_loads_predicts_identically_and_serves(tmp_path):
    texts, labels = toy_texts(160)
    clf = TextClassifier(model="baseline", verbose=0).fit(texts, labels)
    assert clf.metrics_["model"] == "TF-IDF + LR" and clf.metrics_["validation"]["accuracy"] > 0.9
    run = clf.save(tmp_path / "run")
    files = set(json.loads((run / "dlforge.json").read_text())["files"])
    assert "model.skops" in files and "model.safetensors" not in files
    again = load(run)
    assert isinstance(again, DeepModel) and again.config_.model.name == "baseline"
    assert np.array_equal(again.predict_proba(texts), clf.predict_proba(texts))
    assert list(again.predict(texts[:5])) == list(clf.predict(texts[:5]))
    with Server([ServedModel(run, name="base")], ServeSettings(max_delay_ms=2)) as srv:
        r = httpx.post(f"{srv.url}/v1/models/base/predict",
                       json={"instances": [{"text": t} for t in texts[:8]]})
    assert r.status_code == 200, r.text
    served = r.json()["predictions"]
    assert [p["label"] for p in served] == list(clf.predict(texts[:8]))
    proba = clf.predict_proba(texts[:8])
    classes = [str(c) for c in clf.classes_]
    assert [p["probabilities"][c] for p in served for c in classes] == pytest.approx(
        proba.ravel().tolist(), abs=1e-6)


def test_a_baseline_file_with_foreign_types_is_refused(tmp_path):
    texts, labels = toy_texts(60)
    run = TextClassifier(model="baseline", verbose=0).fit(texts, labels).save(tmp_path / "run")
    import skops.io as sio

    from dlforge.run import update_run

    def swap(folder):  # a valid manifest over a file holding a type dlforge never writes
        (folder / "model.skops").unlink()  # hard-linked: replace, never write in place
        sio.dump({"x": os.system}, folder / "model.skops")

    update_run(run, swap)
    with pytest.raises(RunDirError, match="holds types dlforge does not write"):
        load(run)


def test_tables_get_gradient_boosting_and_numbers_a_regression():
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=200), "c": rng.choice(["x", "y", "z"], 200)})
    y = np.where(X["a"] + (X["c"] == "x") > 0.5, "yes", "no")
    clf = TabularClassifier(model="baseline", verbose=0).fit(X, y)
    assert clf.metrics_["model"] == "gradient boosting" and clf.n_parameters() > 0
    assert clf.metrics_["validation"]["accuracy"] > 0.8
    reg = TabularRegressor(model="baseline", verbose=0).fit(X, X["a"] * 3 + 1)
    assert reg.metrics_["validation"]["r2"] > 0.8
    assert reg.predict(X[:3]) == pytest.approx((X["a"][:3] * 3 + 1).to_numpy(), abs=0.5)


def test_the_leaderboard_lists_the_baseline_and_auto_can_pick_it():
    texts, labels = toy_texts(150)
    clf = TextClassifier(model="auto", epochs=1, batch_size=64, verbose=0,
                         precision="fp32").fit(texts, labels)
    board = clf.metrics_["model_selection"]["leaderboard"]
    assert "baseline" in [r["model"] for r in board]
    # One epoch of 2 steps teaches the networks nothing; the baseline wins and is the run.
    assert board[0]["model"] == "baseline" == clf.config_.model.name
    assert clf.predict(texts[:4]).tolist() == labels[:4]


def test_a_deep_model_that_loses_to_the_baseline_says_so(capsys):
    texts, labels = toy_texts(150)
    clf = TextClassifier(model="cnn", d_model=8, filters=2, epochs=1, batch_size=64,
                         precision="fp32").fit(texts, labels)
    yard = clf.metrics_["simple_baseline"]
    assert yard["model"] == "TF-IDF + LR" and yard["validation"]["accuracy"] == 1.0
    err = capsys.readouterr().err
    assert "the simple baseline TF-IDF + LR scores accuracy 1.0000 on validation; this cnn " \
           "model" in err


# ------------------------------------------------------------- imbalance: weights, threshold
def test_the_threshold_is_chosen_on_validation_and_ties_stay_at_one_half():
    from dlforge.train.metrics import choose_threshold

    y = np.array([0] * 6 + [1] * 4)
    p1 = np.array([0.1, 0.2, 0.3, 0.32, 0.34, 0.36, 0.42, 0.6, 0.7, 0.9])
    proba = np.stack([1 - p1, p1], axis=1)
    # 0.37 to 0.42 decide every row right; of those, 0.42 is nearest 0.5.
    assert choose_threshold(y, proba, "accuracy") == 0.42
    assert choose_threshold(y, proba, "macro_f1") == 0.42
    separable = np.stack([1 - np.array([0.1, 0.9]), np.array([0.1, 0.9])], axis=1)
    assert choose_threshold(np.array([0, 1]), separable, "accuracy") == 0.5
    assert choose_threshold(y, proba, "roc_auc") == 0.5  # no threshold in that metric


def test_balanced_class_weights():
    from dlforge.train.metrics import class_weights
    from dlforge.train.trainer import loss_fn

    w = class_weights("binary", np.array([0, 0, 0, 1]), 1)
    assert w.tolist() == pytest.approx([4 / 6, 2.0])
    logits = torch.tensor([[0.0], [0.0], [0.0], [0.0]])
    labels = torch.tensor([0, 0, 0, 1])
    # With every logit 0 each row's loss is log 2 whatever the weights.
    assert float(loss_fn("binary", logits, labels, torch.tensor(w))) == pytest.approx(np.log(2))
    skewed = torch.tensor([[-2.0], [-2.0], [-2.0], [-2.0]])  # "always negative"
    assert float(loss_fn("binary", skewed, labels, torch.tensor(w))) > float(
        loss_fn("binary", skewed, labels))  # the weighted loss punishes ignoring the minority
    assert class_weights("numeric", np.array([0.5]), 1) is None


def _imbalanced(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n)})
    y = np.where(X["a"] + 0.5 * rng.normal(size=n) > 1.0, "rare", "common")
    return X, y


def test_the_threshold_is_saved_and_applied_by_predict_and_serve(tmp_path):
    X, y = _imbalanced()
    clf = TabularClassifier(hidden=[8], threshold="0.3", verbose=0).fit(X, y)
    assert clf.decision_threshold_ == 0.3
    proba = clf.predict_proba(X)
    rare = list(clf.classes_).index("rare")
    assert rare == 1 and (clf.predict(X) == "rare").tolist() == (proba[:, 1] >= 0.3).tolist()
    assert ((proba[:, 1] >= 0.3) != (proba[:, 1] >= 0.5)).any()  # the threshold matters here
    run = clf.save(tmp_path / "run")
    assert "threshold: 0.3" in (run / "config.yaml").read_text()
    again = load(run)
    assert again.decision_threshold_ == 0.3 and list(again.predict(X)) == list(clf.predict(X))
    rows = X.iloc[:40]
    with Server([ServedModel(run, name="t")], ServeSettings(max_delay_ms=2)) as srv:
        r = httpx.post(f"{srv.url}/v1/models/t/predict",
                       json={"instances": rows.to_dict(orient="records")})
    assert r.status_code == 200, r.text
    assert [p["label"] for p in r.json()["predictions"]] == list(clf.predict(rows))


def test_auto_threshold_and_macro_f1_weights_from_python():
    X, y = _imbalanced(400)
    clf = TabularClassifier(hidden=[8], monitor="macro_f1", epochs=10, verbose=0).fit(X, y)
    t = clf.decision_threshold_
    assert isinstance(t, float) and 0.05 <= t <= 0.95  # settled: a number, not "auto"
    assert clf.config_.output.threshold == t
    from dlforge.errors import ConfigError

    with pytest.raises(ConfigError, match="threshold: expected a probability between 0 and 1"):
        TabularClassifier(threshold="1.5", verbose=0).fit(X, y)


# ------------------------------------------------------------------ blending with the baseline
def test_the_baseline_share_is_chosen_on_validation_saved_and_applied(tmp_path):
    from dlforge.train.metrics import probabilities

    texts, labels = toy_texts(300, classes=3)
    # A learning rate this small teaches the network nothing; the baseline is right on
    # (nearly) every row, so it gets a share.
    clf = TextClassifier(model="cnn", d_model=16, epochs=1, lr=1e-7, verbose=0).fit(texts,
                                                                                    labels)
    w = clf.config_.train.baseline_weight
    assert isinstance(w, float) and w > 0 and clf.simple_ is not None
    frame = clf._columns(texts[:20])
    loaded = clf._load_frame(frame)
    encoded = {n: f.encode(loaded[n]) for n, f in clf.features_.items()}
    net = probabilities("category", clf._logits_encoded(encoded))
    simple = probabilities("category", clf.simple_.logits(loaded))
    assert clf.predict_proba(texts[:20]) == pytest.approx((1 - w) * net + w * simple, abs=1e-5)
    run = clf.save(tmp_path / "run")
    files = set(json.loads((run / "dlforge.json").read_text())["files"])
    assert {"model.safetensors", "model.skops", "features.json"} <= files
    assert f"baseline_weight: {w}" in (run / "config.yaml").read_text()
    again = load(run)
    assert np.array_equal(again.predict_proba(texts), clf.predict_proba(texts))


def test_a_zero_share_is_the_network_alone_and_bad_shares_are_refused(tmp_path):
    from dlforge.errors import ConfigError

    texts, labels = toy_texts(100)
    clf = TextClassifier(model="cnn", d_model=16, epochs=1, baseline_weight="0",
                         verbose=0).fit(texts, labels)
    assert clf.simple_ is None and clf.config_.train.baseline_weight == 0.0
    run = clf.save(tmp_path / "run")
    assert "model.skops" not in json.loads((run / "dlforge.json").read_text())["files"]
    with pytest.raises(ConfigError, match="baseline_weight: expected a number from 0 to 1"):
        TextClassifier(baseline_weight="2", verbose=0).fit(texts, labels)
    from dlforge import ImageClassifier

    cfg = validate_config({"inputs": [{"name": "image", "type": "image"}],
                           "output": {"name": "label"}, "model": {"name": "cnn"},
                           "train": {"epochs": 1, "baseline_weight": 0.5}})
    with pytest.raises(ConfigError, match="baseline_weight: the simple baseline takes text"):
        ImageClassifier(config=cfg, verbose=0).fit(np.zeros((30, 8, 8)), [0, 1, 2] * 10)


def test_the_leaderboard_shows_each_networks_baseline_share():
    texts, labels = toy_texts(150)
    clf = TextClassifier(model="auto", epochs=1, batch_size=64, verbose=0,
                         precision="fp32").fit(texts, labels)
    board = {r["model"]: r for r in clf.metrics_["model_selection"]["leaderboard"]}
    assert 0 <= board["cnn"]["baseline_weight"] <= 1 and "baseline_weight" not in board[
        "baseline"]


def test_the_baseline_and_the_blend_are_explained(tmp_path):
    texts, labels = toy_texts(300, classes=3)
    base = TextClassifier(model="baseline", verbose=0).fit(texts, labels).save(tmp_path / "b")
    pytest.importorskip("captum")
    from dlforge import explain

    result = explain(base, text=texts[0])  # baseline Shapley values, not integrated gradients
    assert result["method"].startswith("baseline Shapley values")
    blend = TextClassifier(model="cnn", d_model=16, epochs=1, lr=1e-7, verbose=0).fit(
        texts, labels)
    assert blend.simple_ is not None
    result = explain(blend, text=texts[0], steps=8)
    assert "the simple baseline's" in result["note"]


def test_info_and_the_metrics_table_show_the_baseline_and_the_blend(tmp_path, capsys):
    texts, labels = toy_texts(300, classes=3)
    base = TextClassifier(model="baseline", verbose=0).fit(texts, labels).save(tmp_path / "b")
    code, out, err = run_cli(capsys, "info", base)
    assert code == 0, err
    assert "model: baseline (TF-IDF + LR)" in out and "best epoch" not in out
    blend = TextClassifier(model="cnn", d_model=16, epochs=1, lr=1e-7, verbose=0).fit(
        texts, labels).save(tmp_path / "n")
    code, out, err = run_cli(capsys, "info", blend)
    assert code == 0, err
    assert "blend: predictions are" in out and "simple baseline (TF-IDF + LR)" in out


def test_the_leaderboard_table_reads_a_recipe_budget_and_the_baseline_share():
    from rich.console import Console

    from dlforge.cli.report import leaderboard_table

    sel = {"k": 3, "metric": "accuracy", "winner": "baseline",
           "budget": {"epochs": None, "batch_size": None, "lr": None},  # the recipe's
           "leaderboard": [
               {"model": "baseline", "mean": 0.9, "std": 0.01, "parameters": 10, "seconds": 1},
               {"model": "cnn", "mean": 0.8, "std": 0.02, "parameters": 100, "seconds": 5,
                "baseline_weight": 0.5}]}
    console = Console(width=200, record=True)
    console.print(leaderboard_table({"model_selection": sel}))
    text = console.export_text()
    assert "each family's data-size recipe" in text and "0.50" in text


def test_a_blended_run_counts_the_network_and_the_baseline():
    texts, labels = toy_texts(200)
    blend = TextClassifier(model="cnn", d_model=16, epochs=1, baseline_weight=0.5, verbose=0,
                           precision="fp32").fit(texts, labels)
    network = sum(p.numel() for p in blend.model_.parameters())
    assert blend.n_parameters() == network + blend.simple_.n_parameters() > network


# ------------------------------------------------------------------------ label smoothing
def test_label_smoothing_moves_the_training_targets_only():
    import torch.nn.functional as F

    from dlforge.train.trainer import Trainer, loss_fn

    logits = torch.tensor([[2.0], [-1.0]])
    labels = torch.tensor([1, 0])
    # binary: 0/1 targets move s/2 towards 1/2 (s = 0.2: 0.9 and 0.1)
    want = F.binary_cross_entropy_with_logits(logits[:, 0], torch.tensor([0.9, 0.1]))
    assert float(loss_fn("binary", logits, labels, smoothing=0.2)) == pytest.approx(float(want))
    assert float(loss_fn("binary", logits, labels)) < float(want)  # sure and right: lower
    multi = torch.tensor([[3.0, 0.0, -1.0], [0.0, 2.0, 0.0]])
    y = torch.tensor([0, 1])
    # category: 1 - s on the true class plus s/C on each (PyTorch's definition)
    p = torch.log_softmax(multi, dim=1)
    target = torch.full((2, 3), 0.1 / 3) + F.one_hot(y, 3) * 0.9
    assert float(loss_fn("category", multi, y, smoothing=0.1)) == pytest.approx(
        float(-(target * p).sum(1).mean()), rel=1e-5)
    rng = np.random.default_rng(0)
    X = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    yes = np.where(X["a"] > 0, "yes", "no")
    clf = TabularClassifier(label_smoothing=0.1, epochs=2, verbose=0, precision="fp32").fit(
        X, yes)
    assert clf.config_.train.label_smoothing == 0.1
    # the trainer smooths its training loss only; validation's is the plain one
    trainer = Trainer(torch.nn.Linear(1, 1), "binary", clf.config_.train, lambda t, lg: {},
                      "loss", verbose=0)
    assert float(trainer.compute_loss(logits, labels, training=True)) == pytest.approx(
        float(loss_fn("binary", logits, labels, smoothing=0.1)))
    assert float(trainer.compute_loss(logits, labels)) == float(loss_fn("binary", logits,
                                                                        labels))
    with pytest.raises(ConfigError, match="train.label_smoothing: smooths a classifier"):
        TabularRegressor(label_smoothing=0.1, epochs=1, verbose=0).fit(X, X["a"])
