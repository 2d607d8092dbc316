"""Differentially private training (DP-SGD through Opacus) and the membership-inference audit."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_digits

from dlforge import (
    ImageClassifier,
    SequenceModel,
    TabularClassifier,
    TextClassifier,
    load,
)
from dlforge.config import config_to_dict, validate_config
from dlforge.errors import ConfigError
from dlforge.estimators.files import train
from dlforge.testing import CASES, _collate, _tiny_batch, toy_texts
from tests.conftest import TRAIN_ARGS
from tests.test_cli import _assert_nothing_written, assert_user_error, run_cli

PRIVACY_KEYS = {"epsilon", "delta", "accountant", "max_grad_norm", "noise_multiplier"}
FAST = dict(epochs=2, batch_size=16, lr=1e-2, patience=0, verbose=0, precision="fp32")


pytestmark = pytest.mark.usefixtures("one_thread")

def private(estimator: Any, **privacy: Any) -> Any:
    """The same estimator, its config with a privacy section."""
    cfg = config_to_dict(estimator.resolve_config())
    cfg["privacy"] = {"target_epsilon": 8.0, **privacy}
    cfg["train"]["num_threads"] = 1
    return type(estimator)(config=validate_config(cfg), verbose=0)


def _table(n: int = 80, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n),
                      "c": rng.choice(["red", "green", "blue"], size=n)})
    y = ["yes" if a > 0 else "no" for a in X["a"]]
    return X, y


def _family_data(family: str) -> tuple[Any, Any, Any]:
    """(estimator, X, y) of a tiny private model of ``family``."""
    rng = np.random.default_rng(0)
    if family.startswith("text-"):
        model = family.removeprefix("text-")
        cell = {}
        if model.startswith("rnn"):
            cell = {"cell": model.removeprefix("rnn-")}
            model = "rnn"
        est = TextClassifier(model, vocab_size=300, max_length=12, d_model=8, **FAST)
        cfg = config_to_dict(est.resolve_config())
        cfg["model"].update({"heads": 2} if model == "transformer" else {})
        cfg["model"].update(cell)
        est = TextClassifier(config=validate_config(cfg), verbose=0)
        texts, labels = toy_texts(80, seed=1)
        return est, texts, labels
    if family == "image-cnn":
        d = load_digits()
        keep = d.target < 3
        return ImageClassifier(channels=[4, 8], **FAST), d.images[keep][:80], d.target[keep][:80]
    if family == "sequence-transformer":
        X = [rng.normal(size=(int(rng.integers(3, 10)), 2)).astype(np.float32) for _ in range(60)]
        y = ["up" if x[:, 0].mean() > 0 else "down" for x in X]
        est = SequenceModel("transformer", d_model=8, heads=2, max_length=10, **FAST)
        return est, X, y
    X, y = _table()
    est = TabularClassifier(hidden=[8], category=["c"], **FAST)
    cfg = {"inputs": [{"name": "a", "type": "numeric"}, {"name": "b", "type": "numeric"},
                      {"name": "c", "type": "category"}],
           "output": {"name": "label"}, "model": {"name": "mlp", "hidden": [8]},
           "train": {k: v for k, v in FAST.items() if k != "verbose"}}
    return TabularClassifier(config=validate_config(cfg), verbose=0), X, y


# -------------------------------------------------------------------------- every family
def test_per_row_gradients_are_exact_for_every_family():
    """Opacus' per-row gradients of every private-ready model sum to the batch gradient."""
    from opacus import GradSampleModule

    from dlforge.models.registry import build_model

    for name, kind in CASES:
        rng = np.random.default_rng(0)
        cfg, rows, specs = _tiny_batch(name, kind, 3, 50, 12, rng)
        cfg = validate_config({**config_to_dict(cfg), "privacy": {"target_epsilon": 8}})
        torch.manual_seed(0)
        model = build_model(cfg, specs, 3)
        assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm | torch.nn.GRU
                                  | torch.nn.LSTM) for m in model.modules())
        gsm = GradSampleModule(model)
        out = gsm(_collate(cfg, rows))
        torch.nn.functional.cross_entropy(out, torch.zeros(len(rows), dtype=torch.long)).backward()
        for pname, p in model.named_parameters():
            assert p.grad_sample is not None and p.grad_sample.shape[0] == len(rows), (name, kind,
                                                                                      pname)
            assert torch.allclose(p.grad_sample.sum(0) / len(rows), p.grad, atol=1e-5), (
                name, kind, pname)
        gsm._close()


@pytest.mark.parametrize("family", ["text-transformer", "text-cnn", "text-rnn-gru",
                                    "text-rnn-lstm", "image-cnn", "sequence-transformer",
                                    "table-mlp"])
def test_each_family_trains_privately_and_records_the_budget(family, tmp_path):
    est, X, y = _family_data(family)
    clf = private(est).fit(X, y)
    spent = clf.privacy_
    assert set(spent) >= PRIVACY_KEYS
    assert 0 < spent["epsilon"] <= 8.0 + 1e-6 and spent["delta"] == 1e-5
    assert spent["accountant"] == "rdp" and spent["max_grad_norm"] == 1.0
    assert spent["noise_multiplier"] > 0 and spent["steps"] > 0
    if family == "image-cnn":  # batch-norm mixes rows: group-norm instead
        kinds = {type(m).__name__ for m in clf.model_.modules()}
        assert "GroupNorm" in kinds and not any("BatchNorm" in k for k in kinds)
    clf.save(tmp_path / "run")
    written = json.loads((tmp_path / "run" / "privacy.json").read_text())
    assert written == pytest.approx(spent)
    again = load(tmp_path / "run")
    assert again.privacy_ == written
    assert np.array_equal(again.predict_proba(X[:10]), clf.predict_proba(X[:10]))


def test_private_training_is_deterministic_and_spends_what_it_reports():
    est, X, y = _family_data("table-mlp")
    a = private(est, target_epsilon=3.0).fit(X, y)
    b = private(est, target_epsilon=3.0).fit(X, y)
    assert [r["train_loss"] for r in a.history_] == [r["train_loss"] for r in b.history_]
    assert np.array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.privacy_["epsilon"] == pytest.approx(3.0, rel=0.05)
    plain = est.set_params(verbose=0).fit(X, y)  # the same run without noise differs
    assert not np.array_equal(plain.predict_proba(X), a.predict_proba(X))
    for accountant in ("prv", "gdp"):
        c = private(est, target_epsilon=3.0, accountant=accountant).fit(X, y)
        assert c.privacy_["accountant"] == accountant
        assert 0 < c.privacy_["epsilon"] <= 3.0 * 1.05


def test_an_empty_poisson_batch_takes_a_noise_only_step():
    from dlforge.config import PrivacyConfig
    from dlforge.train.dp import make_private

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    data = torch.utils.data.TensorDataset(torch.randn(20, 3), torch.randn(20))
    loader = torch.utils.data.DataLoader(data, batch_size=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dp = make_private(model, opt, loader, PrivacyConfig(target_epsilon=1.0), epochs=1, seed=0)
    before = model.weight.detach().clone()
    dp.empty_step()
    assert not torch.equal(model.weight, before)  # noise was added
    assert dp.report()["steps"] == 1 and dp.epsilon() > 0
    dp.close()
    tiny_budget = PrivacyConfig(target_epsilon=1e-4)  # no noise level is that quiet
    other = torch.nn.Linear(3, 1)
    with pytest.raises(ConfigError, match="no noise level spends as little as ε = 0.0001"):
        make_private(other, torch.optim.SGD(other.parameters(), lr=0.1), loader, tiny_budget,
                     epochs=5, seed=0)


# ------------------------------------------------------------------------------ refusals
BASE = {"inputs": [{"name": "t"}], "output": {"name": "y"}, "privacy": {"target_epsilon": 8}}


@pytest.mark.parametrize("change, key", [
    ({"train": {"accumulate": 2}}, "train.accumulate"),
    ({"train": {"compile": True}}, "train.compile"),
    ({"train": {"cv": 3}}, "train.cv"),
    ({"model": "auto"}, "model.name: model selection"),
    ({"model": {"name": "transformer", "checkpointing": True}}, "model.checkpointing"),
    ({"model": {"name": "pretrained", "path": "/nowhere"}}, "model.name: a pretrained"),
    ({"inputs": [], "output": None, "forecast": {"targets": ["v"]}}, "forecast: forecasting"),
    ({"privacy": {"target_epsilon": 0}}, "privacy.target_epsilon"),
    ({"privacy": {"target_epsilon": -1}}, "privacy.target_epsilon"),
    ({"privacy": {"target_epsilon": 8, "target_delta": 1.0}}, "privacy.target_delta"),
    ({"privacy": {"target_epsilon": 8, "target_delta": 0}}, "privacy.target_delta"),
    ({"privacy": {"target_epsilon": 8, "accountant": "moments"}}, "privacy.accountant"),
    ({"privacy": {"target_epsilon": 8, "noise": 1.0}}, "privacy.noise: unknown key"),
])
def test_what_cannot_be_made_private_is_refused(change, key):
    cfg = {k: v for k, v in {**BASE, **change}.items() if v is not None}
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as err:
        validate_config(cfg)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("flags, needle", [
    (["--dp-epsilon", "0"], "privacy.target_epsilon: Input should be greater than 0"),
    (["--dp-epsilon", "-2"], "privacy.target_epsilon"),
    (["--dp-epsilon", "8", "--dp-delta", "1"], "privacy.target_delta: Input should be less"),
    (["--dp-delta", "1e-6"], "--dp-delta: differentially private training needs its budget"),
    (["--dp-epsilon", "8", "--nproc", "2"], "--nproc: differentially private training"),
    (["--dp-epsilon", "8", "--accumulate", "2"], "train.accumulate"),
    (["--dp-epsilon", "1e-4"], "privacy.target_epsilon: no noise level spends as little"),
])
def test_bad_privacy_flags_are_one_line_and_write_nothing(flags, needle, toy_csv, tmp_path,
                                                           capsys):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, *TRAIN_ARGS, "--out", out, *flags)
    assert_user_error(code, err, needle)
    _assert_nothing_written(out)


def test_a_private_run_cannot_be_resumed():
    from dlforge.config import PrivacyConfig, TrainConfig
    from dlforge.train.trainer import Trainer

    trainer = Trainer(torch.nn.Linear(2, 1), "binary", TrainConfig(epochs=1), lambda t, z: {},
                      "loss", verbose=0, privacy=PrivacyConfig(target_epsilon=1.0),
                      checkpoint_dir="unused")
    loader = torch.utils.data.DataLoader([{"inputs": torch.zeros(2), "labels": 0}])
    with pytest.raises(ConfigError, match="cannot be resumed"):
        trainer.fit(loader, None, None, resume=True)


# ------------------------------------------------------------------------ membership audit
def _noisy_table(path: Path, n: int = 200, d: int = 8) -> Path:
    """A weak signal under heavy label noise: a wide MLP can only memorise it."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    df = pd.DataFrame(X, columns=[f"x{i}" for i in range(d)])
    df["y"] = np.where(X[:, 0] + 3.0 * rng.normal(size=n) > 0, "yes", "no")
    df.to_csv(path, index=False)
    return path


def _overfit_config(csv: Path, epsilon: float | None, d: int = 8) -> Any:
    cfg: dict[str, Any] = {
        # no validation rows: the last (most over-fitted) weights are kept; half held out
        "data": {"path": str(csv), "validation_split": 0.0, "test_split": 0.5},
        "inputs": [{"name": f"x{i}", "type": "numeric"} for i in range(d)],
        "output": {"name": "y"}, "model": {"name": "mlp", "hidden": [64, 64], "dropout": 0.0},
        "train": {"epochs": 40, "batch_size": 16, "lr": 1e-2, "weight_decay": 0.0,
                  "patience": 0, "precision": "fp32", "num_threads": 1}}
    if epsilon is not None:
        cfg["privacy"] = {"target_epsilon": epsilon}
    return validate_config(cfg)


@pytest.fixture(scope="module")
def attacked(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("mia")
    csv = _noisy_table(d / "noisy.csv")
    runs = {"csv": csv}
    for name, eps in (("overfit", None), ("private", 8.0)):
        train(_overfit_config(csv, eps), d / name, verbose=0)
        runs[name] = d / name
    return runs


def test_membership_attack_beats_chance_on_an_overfitted_model_and_not_under_dp(attacked,
                                                                                capsys):
    code, out, err = run_cli(capsys, "audit", attacked["overfit"], "--privacy")
    assert code == 0, err
    assert "attack AUC" in out and "TPR at 1% FPR" in out
    overfit = json.loads((attacked["overfit"] / "audit" / "privacy.json").read_text())
    assert overfit["members"] == 100 and overfit["non_members"] == 100
    assert overfit["member_loss_mean"] < overfit["non_member_loss_mean"]
    assert overfit["auc"] > 0.75  # clearly above chance
    assert overfit["differential_privacy"] is None

    code, out, err = run_cli(capsys, "audit", attacked["private"], "--privacy", "--json")
    assert code == 0, err
    dp = json.loads(out)
    assert dp == json.loads((attacked["private"] / "audit" / "privacy.json").read_text())
    assert dp["differential_privacy"]["epsilon"] <= 8.0 + 1e-6
    assert abs(dp["auc"] - 0.5) < 0.1  # about 2.5 standard errors of AUC at 100 vs 100 rows
    assert dp["auc"] < overfit["auc"] - 0.2
    assert 0.0 <= dp["tpr_at_1pct_fpr"] <= 1.0


def test_membership_attack_python_api(attacked):
    from dlforge.estimators.steps import membership_attack, recorded_split

    members, non_members = recorded_split(attacked["overfit"])
    assert len(members) == 100 and len(non_members) == 100
    assert not set(map(tuple, members.to_numpy())) & set(map(tuple, non_members.to_numpy()))
    report = membership_attack(attacked["overfit"], members, members.iloc[::-1], save=False)
    assert report["auc"] == pytest.approx(0.5)  # the same rows on both sides: no signal


def test_membership_audit_bad_inputs(attacked, tmp_path, capsys):
    run = attacked["overfit"]
    code, _, err = run_cli(capsys, "audit", run)
    assert_user_error(code, err, "--privacy")
    other = _noisy_table(tmp_path / "other.csv", n=120)
    code, _, err = run_cli(capsys, "audit", run, "--privacy", "--data", other)
    assert_user_error(code, err, "does not give the split the run was trained on")
    code, _, err = run_cli(capsys, "audit", run, "--privacy", "--data", tmp_path / "nope.csv")
    assert_user_error(code, err, "nope.csv")
    code, _, err = run_cli(capsys, "audit", tmp_path / "norun", "--privacy")
    assert_user_error(code, err, "no such run directory")


def test_membership_audit_needs_held_out_rows(tmp_path, capsys):
    csv = _noisy_table(tmp_path / "t.csv", n=40)
    cfg = config_to_dict(_overfit_config(csv, None))
    cfg["data"]["test_split"] = 0.0
    cfg["train"]["epochs"] = 1
    train(validate_config(cfg), tmp_path / "run", verbose=0)
    code, _, err = run_cli(capsys, "audit", tmp_path / "run", "--privacy")
    assert_user_error(code, err, "held out no rows")
    assert not (tmp_path / "run" / "audit").exists()


@pytest.mark.parametrize("kind, shape, targets", [
    ("binary", (6, 1), np.array([0, 1, 1, 0, 1, 0])),
    ("category", (6, 3), np.array([0, 2, 1, 0, 1, 2])),
    ("multilabel", (6, 3), np.array([[1, 0, 1], [0, 0, 1], [1, 1, 0]] * 2)),
    ("numeric", (6, 1), np.linspace(-1, 1, 6).astype(np.float32)),
])
def test_row_losses_average_to_the_training_loss(kind, shape, targets):
    from dlforge.audit.privacy import row_losses
    from dlforge.train.trainer import loss_fn

    logits = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    per_row = row_losses(kind, logits, targets)
    assert per_row.shape == (6,)
    mean = float(loss_fn(kind, torch.from_numpy(logits), torch.from_numpy(targets)))
    assert float(per_row.mean()) == pytest.approx(mean, rel=1e-5)
