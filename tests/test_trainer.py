import numpy as np
import pytest
import torch

from dlforge import TextClassifier
from dlforge.config import TrainConfig
from dlforge.train.callbacks import Callback, format_epoch
from dlforge.train.device import bf16_supported, resolve_device, resolve_precision
from dlforge.train.trainer import make_optimizer, make_scheduler


def test_learns_the_toy_task(toy, tiny_params):
    texts, labels = toy
    clf = TextClassifier(**{**tiny_params, "epochs": 6}).fit(texts, labels)
    val = clf.metrics_["validation"]
    assert val["accuracy"] >= 0.9 > val["baseline"]["accuracy"]
    assert [r["epoch"] for r in clf.history_] == list(range(1, 7))


def test_same_seed_same_metrics(toy, tiny_params):
    texts, labels = toy
    a = TextClassifier(**tiny_params).fit(texts, labels)
    b = TextClassifier(**tiny_params).fit(texts, labels)
    assert a.metrics_["validation"] == b.metrics_["validation"]
    assert [r["val_loss"] for r in a.history_] == [r["val_loss"] for r in b.history_]
    c = TextClassifier(**{**tiny_params, "seed": 1}).fit(texts, labels)
    assert [r["train_loss"] for r in c.history_] != [r["train_loss"] for r in a.history_]


def test_early_stopping_stops_and_keeps_the_best(toy, tiny_params):
    texts, labels = toy
    # A learning rate of ~0 cannot improve after epoch 1, so patience 1 stops at epoch 2.
    clf = TextClassifier(**{**tiny_params, "lr": 1e-12, "patience": 1, "epochs": 6,
                            "monitor": "loss"}).fit(texts, labels)
    assert len(clf.history_) == 2 and clf.best_epoch_ in (1, 2)


class _Interrupt(Callback):
    def __init__(self, at: int):
        self.at = at

    def on_epoch_end(self, trainer, row):
        if row["epoch"] == self.at:
            trainer.should_stop = True  # checkpoint is still written: like a crash after it


def test_warmup_then_cosine_schedule():
    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(lr=1.0, warmup=0.2)
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, cfg, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] and lrs[2] == pytest.approx(1.0)
    assert all(x >= y for x, y in zip(lrs[2:], lrs[3:], strict=False)) and lrs[-1] < 0.1


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    groups = make_optimizer(model, TrainConfig(lr=1e-3, weight_decay=0.1)).param_groups
    assert [len(g["params"]) for g in groups] == [1, 3]
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]


def test_precision_choice():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("auto", cpu) == ("bf16" if bf16_supported(cpu) else "fp32")
    assert resolve_device("cpu") == cpu


def test_bf16_training_runs_and_learns(toy, tiny_params):
    texts, labels = toy
    clf = TextClassifier(**{**tiny_params, "precision": "bf16", "epochs": 6}).fit(texts, labels)
    assert clf.precision_ == "bf16"
    assert clf.metrics_["validation"]["accuracy"] >= 0.85
    assert np.isfinite(clf.predict_proba(texts[:5])).all()


def test_plain_progress_lines(toy, tiny_params, capsys):
    texts, labels = toy
    TextClassifier(**{**tiny_params, "verbose": 1, "epochs": 1}).fit(texts, labels)
    err = capsys.readouterr().err
    assert "epoch 1/1: train loss" in err and "samples/s" in err
    assert "\x1b[" not in err  # not a terminal: no progress bar escapes
    line = format_epoch({"epoch": 2, "train_loss": 0.5, "val_loss": 0.4, "val_accuracy": 0.9,
                         "samples_per_s": 1234.0}, "accuracy", 5)
    assert line == ("epoch 2/5: train loss 0.5000, val loss 0.4000, val accuracy 0.9000, "
                    "1,234 samples/s")
