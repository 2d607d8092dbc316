"""Data-parallel training under torchrun (DDP, gloo on CPU), gradient accumulation and
activation checkpointing."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from dlforge.config import TrainConfig, validate_config
from dlforge.models.registry import build_model
from dlforge.testing import toy_texts

ARGS = ["--text", "review", "--label", "label", "--model", "transformer", "--vocab-size", "300",
        "--max-length", "16", "--d-model", "16", "--heads", "2", "--dropout", "0",
        "--epochs", "3", "--batch-size", "16", "--lr", "1e-2", "--precision", "fp32",
        "--patience", "0", "--quiet"]


def test_two_processes_match_one(tmp_path):
    texts, labels = toy_texts(180, seed=0)
    csv = tmp_path / "toy.csv"
    pd.DataFrame({"review": texts, "label": labels}).to_csv(csv, index=False)
    dlforge = [sys.executable, "-m", "dlforge.cli", "train", "--data", str(csv), *ARGS]
    for out, extra in (("one", []), ("two", ["--nproc", "2"])):
        done = subprocess.run([*dlforge, *extra, "--out", str(tmp_path / out)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    one = pd.read_csv(tmp_path / "one" / "history.csv")
    two = pd.read_csv(tmp_path / "two" / "history.csv")
    # Same global batches, gradients averaged with each process's share as its weight: the
    # curves agree to float rounding (stated tolerance 1e-5 relative).
    for col in ("train_loss", "val_loss", "val_accuracy"):
        np.testing.assert_allclose(two[col], one[col], rtol=1e-5, atol=1e-6)
    w1 = load_file(tmp_path / "one" / "model.safetensors")
    w2 = load_file(tmp_path / "two" / "model.safetensors")
    # Final weights within 1e-3 absolute: Adam divides by the root of the squared-gradient
    # average, which magnifies float-rounding differences in near-zero gradients.
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-3, atol=1e-3)
    assert not list(tmp_path.glob(".two*"))  # rank 0 wrote the run, nothing else left


def _tiny(checkpointing: bool = False):
    cfg = validate_config({"inputs": [{"name": "t", "max_length": 12}], "output": {"name": "y"},
                           "model": {"name": "transformer", "d_model": 16, "heads": 2,
                                     "layers": 2, "dropout": 0.0,
                                     "checkpointing": checkpointing}})
    torch.manual_seed(0)
    return build_model(cfg, {"t": {"vocab_size": 40, "max_length": 12}}, 1)


def _batch(rows: list[np.ndarray], y: list[float]) -> dict:
    from dlforge.config import TextInput
    from dlforge.data.inputs import TextFeature

    feat = TextFeature(TextInput(name="t"))
    return {"inputs": {"t": feat.collate(rows)}, "labels": torch.tensor(y)}


def test_gradient_accumulation_equals_one_big_batch():
    from dlforge.train.trainer import Trainer

    rng = np.random.default_rng(0)
    rows = [rng.integers(5, 40, size=int(rng.integers(2, 12))) for _ in range(8)]
    y = [float(v) for v in rng.integers(0, 2, 8)]
    cfg = TrainConfig(lr=1e-2, weight_decay=0.01, precision="fp32", grad_clip=0, warmup=0.0,
                      schedule="constant")
    results = []
    for micro in (False, True):
        tr = Trainer(_tiny(), "binary", cfg, lambda t, o: {}, "loss", verbose=0)
        from dlforge.train.trainer import make_optimizer, make_scheduler

        tr.optimizer = make_optimizer(tr.model, cfg)
        tr.scheduler = make_scheduler(tr.optimizer, cfg, 10)
        tr.model.train()
        if micro:
            tr.train_step(_batch(rows[:4], y[:4]), step_optimizer=False, scale=0.5)
            tr.train_step(_batch(rows[4:], y[4:]), step_optimizer=True, scale=0.5)
        else:
            tr.train_step(_batch(rows, y))
        results.append({k: v.clone() for k, v in tr.model.state_dict().items()})
    for k in results[0]:
        torch.testing.assert_close(results[1][k], results[0][k], rtol=1e-4, atol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients():
    rng = np.random.default_rng(1)
    batch = _batch([rng.integers(5, 40, size=n) for n in (3, 7, 11)], [0.0, 1.0, 1.0])
    grads = []
    for ckpt in (False, True):
        m = _tiny(ckpt).train()
        out = m(batch["inputs"])
        torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], batch["labels"]).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-5, atol=1e-7)


def test_accumulate_from_the_config(toy):
    from dlforge import TextClassifier

    texts, labels = toy
    clf = TextClassifier(vocab_size=300, max_length=16, d_model=16, heads=2, epochs=2,
                         batch_size=8, verbose=0, precision="fp32",
                         config=None).fit(texts, labels)
    acc = TextClassifier(config=clf.config_.model_copy(update={
        "train": clf.config_.train.model_copy(update={"accumulate": 4})}),
        verbose=0).fit(texts, labels)
    assert acc.config_.train.accumulate == 4 and len(acc.history_) == 2
    with pytest.raises(Exception, match="accumulate"):
        validate_config({"inputs": [{"name": "t"}], "output": {"name": "y"},
                         "train": {"accumulate": 0}})
