"""Differentially private training of a language model (dlforge.lm.dp)."""

from __future__ import annotations

import json

import pytest
import torch

import dlforge
from dlforge import ConfigError, LanguageModel
from dlforge.cli import main
from dlforge.config import PrivacyConfig
from dlforge.lm.dp import PrivateLM, per_record_gradients
from tests.test_cli import assert_user_error
from tests.test_lm import TEXT, TINY, tiny_gpt

CORPUS = TEXT * 10  # 5,400 characters: 285 records of 17 tokens in the training part
PRIVATE = {**TINY, "max_steps": 30, "eval_interval": 10, "privacy": {"target_epsilon": 8.0}}


def _plain():  # no autocast
    import contextlib

    return contextlib.nullcontext()


def test_per_record_gradients_are_each_records_own():
    model = tiny_gpt(seed=1, dropout=0.0).train()
    x = torch.randint(0, 20, (3, 16))
    y = torch.randint(0, 20, (3, 16))
    grads, losses = per_record_gradients(model, x, y, _plain)
    for i in range(3):
        model.zero_grad()
        _, loss = model(x[i:i + 1], y[i:i + 1])
        loss.backward()
        assert torch.isclose(losses[i], loss.detach(), atol=1e-6)
        for name, p in model.named_parameters():
            assert torch.allclose(grads[name][i], p.grad, atol=1e-6), name


def test_dp_step_is_the_noisy_mean_of_clipped_gradients():
    model = tiny_gpt(seed=2).train()
    x = torch.randint(0, 20, (5, 16))
    y = torch.randint(0, 20, (5, 16))
    private = PrivateLM(PrivacyConfig(target_epsilon=8.0, max_grad_norm=0.05), n_records=200,
                        batch_size=4, steps=10)
    private.noise_multiplier = 0.0  # the clipping alone, to compare
    private.backward(model, x, y, _plain, torch.Generator().manual_seed(0))
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    grads, _ = per_record_gradients(model, x, y, _plain)
    norms = torch.sqrt(sum(g.flatten(1).square().sum(1) for g in grads.values()))
    assert (norms > 0.05).all()  # every record is clipped here
    for name, g in grads.items():
        want = (g * (0.05 / (norms + 1e-6)).view(-1, *[1] * (g.dim() - 1))).sum(0) / 4
        assert torch.allclose(got[name], want, atol=1e-6), name
    assert private.steps == 1
    # With noise: the gradient moves by N(0, (σC)²)/expected batch per coordinate.
    private.noise_multiplier = 2.0
    private.backward(model, x, y, _plain, torch.Generator().manual_seed(0))
    diff = torch.cat([(p.grad - got[n]).flatten() for n, p in model.named_parameters()])
    assert diff.std().item() == pytest.approx(2.0 * 0.05 / 4, rel=0.1)


def test_private_language_model_run(tmp_path, capsys):
    out = tmp_path / "private"
    lm = LanguageModel(**PRIVATE).fit(CORPUS, out=out)
    report = json.loads((out / "privacy.json").read_text())
    assert 7.5 <= report["epsilon"] <= 8.0 and report["steps"] == 30
    data_report = json.loads((out / "data.json").read_text())
    assert report["records"] == data_report["train_tokens"] // 17
    assert 0 < report["sample_rate"] < 1 and report["noise_multiplier"] > 0
    # No loss on the training text is measured or saved (it would not be covered by ε).
    assert all(r["train_loss"] is None for r in lm.history_) and lm.metrics_["train_loss"] is None
    card = (out / "MODEL_CARD.md").read_text()
    assert "Trained with differential privacy (DP-SGD)" in card
    again = dlforge.load(out)
    assert again.privacy_["epsilon"] == report["epsilon"]
    assert again.generate("the ", max_new_tokens=5, temperature=0) == \
        lm.generate("the ", max_new_tokens=5, temperature=0)
    # The same seed trains the same private model (sampling and noise are seeded).
    twin = LanguageModel(**PRIVATE).fit(CORPUS)
    for a, b in zip(lm.model_.parameters(), twin.model_.parameters(), strict=True):
        assert torch.equal(a, b)


def test_private_resume_gives_the_same_loss_curve(tmp_path, monkeypatch):
    import dlforge.lm.corpus as corpus

    whole = LanguageModel(**PRIVATE).fit(CORPUS, out=tmp_path / "whole")
    real = corpus.TokenData.record_batch
    calls = {"n": 0}

    def interrupted(self, index):
        calls["n"] += 1
        if calls["n"] > 13:  # during step 14, after the checkpoint of step 10
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(corpus.TokenData, "record_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        LanguageModel(**PRIVATE).fit(CORPUS, out=tmp_path / "resumed")
    monkeypatch.setattr(corpus.TokenData, "record_batch", real)
    resumed = LanguageModel(**PRIVATE).fit(CORPUS, out=tmp_path / "resumed", resume=True)
    curve = [(r["step"], r["val_loss"]) for r in resumed.history_]
    assert curve == [(r["step"], r["val_loss"]) for r in whole.history_]
    assert resumed.privacy_["epsilon"] == whole.privacy_["epsilon"]


@pytest.mark.parametrize("settings, message", [
    ({"accumulate": 2}, "gradient accumulation is not supported"),
    ({"compile": True}, "does not run compiled"),
    ({"batch_size": 400}, "must be below 1"),
    ({"privacy": {"target_epsilon": 1e-4}}, "no noise level spends as little as"),
    ({"privacy": {"target_epsilon": 0}}, "privacy.target_epsilon"),
])
def test_bad_private_settings(settings, message):
    with pytest.raises(ConfigError, match=message):
        LanguageModel(**{**PRIVATE, **settings}).fit(CORPUS)


def test_cli_private_training(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    args = ["lm", "train", "--text", str(corpus), "--n-layer", "1", "--n-head", "2",
            "--d-model", "16", "--block-size", "16", "--batch-size", "8", "--max-steps", "5",
            "--eval-interval", "5", "--eval-iters", "2", "--precision", "fp32", "--quiet"]
    assert main([*args, "--dp-epsilon", "8", "--out", str(tmp_path / "run")]) == 0
    assert "differential privacy: ε = " in capsys.readouterr().out
    assert main(["info", str(tmp_path / "run")]) == 0
    assert "differential privacy: ε = " in capsys.readouterr().out
    code = main([*args, "--dp-delta", "1e-6", "--out", str(tmp_path / "bad")])
    assert_user_error(code, capsys.readouterr().err, "--dp-delta", "add --dp-epsilon")
    code = main([*args, "--dp-epsilon", "-1", "--out", str(tmp_path / "bad")])
    assert_user_error(code, capsys.readouterr().err, "privacy.target_epsilon")
    assert not (tmp_path / "bad").exists()
