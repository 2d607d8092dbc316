"""The resource estimator: exact on our models and on Hugging Face's reference Transformers,
right for the published ones, and one clear line for every bad input."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

import dlforge
from dlforge.cli import main
from dlforge.errors import ConfigError
from dlforge.estimate import Arch, register_adapter
from dlforge.estimate.arch import ADAPTERS
from dlforge.estimate.counts import activation_bytes_layer, count_arch
from dlforge.estimate.hardware import CATALOGUE, device, time_and_cost
from dlforge.estimate.memory import training_memory
from dlforge.estimate.ours import count_ours
from dlforge.estimate.presets import PRESETS
from dlforge.estimate.scaling import CHINCHILLA, chinchilla_loss, optimal_for_compute
from dlforge.models.registry import build_model
from dlforge.testing import _collate, toy_texts

SETTINGS = settings(max_examples=8, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- helpers
def flops(model: torch.nn.Module, run) -> tuple[int, int]:
    """FlopCounterMode's count for a forward, and for a forward + backward. oneDNN is off: its
    fused CPU LSTM is one opaque op to which FlopCounterMode assigns no FLOPs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "TF32 acceleration on top of oneDNN ..."
        with torch.backends.mkldnn.flags(enabled=False):
            with FlopCounterMode(display=False) as fc:
                run(model)
            forward = fc.get_total_flops()
            with FlopCounterMode(display=False) as fc:
                run(model).float().sum().backward()
    return forward, fc.get_total_flops()


def close(a: float, b: float, tol: float = 0.02) -> bool:
    return abs(a - b) <= tol * max(abs(b), 1)


def our_case(model: dict, kind: str, T: int, rng: np.random.Generator, n_outputs: int = 3):
    """(config, specs, kinds, batch) for a model config on inputs of ``kind``; every sequence
    is T long (the estimate counts full-length samples)."""
    n = 4
    if kind == "text":
        inputs = [{"name": "t", "type": "text", "max_length": T}]
        rows = [{"t": rng.integers(5, 40, size=T)} for _ in range(n)]
        specs = {"t": {"vocab_size": 40, "max_length": T}}
    elif kind == "sequence":
        inputs = [{"name": "s", "type": "sequence", "max_length": T}]
        rows = [{"s": rng.normal(size=(T, 3)).astype(np.float32)} for _ in range(n)]
        specs = {"s": {"features": 3, "max_length": T}}
    elif kind == "image":
        inputs = [{"name": "img", "type": "image"}]
        rows = [{"img": rng.normal(size=(1, T, T)).astype(np.float32)} for _ in range(n)]
        specs = {"img": {"channels": 1, "height": T, "width": T}}
    else:  # a table, with or without a category column
        inputs = [{"name": "a", "type": "numeric"}]
        rows = [{"a": rng.normal(size=2).astype(np.float32)} for _ in range(n)]
        specs = {"a": {"width": 2}}
        if kind == "table+category":
            inputs.append({"name": "c", "type": "category"})
            for r in rows:
                r["c"] = np.int64(rng.integers(0, 5))
            specs["c"] = {"categories": 5, "dim": 3}
    cfg = dlforge.config.validate_config({"inputs": inputs, "output": {"name": "y"},
                                          "model": model})
    if kind == "image":
        import dlforge.data.inputs as di

        feats = di.build_features(cfg)
        feats["img"].set_state({"shape": [1, T, T], "color": "gray", "scale": 1.0,
                                "mean": [0.0], "std": [1.0]}, None)
        batch = {"img": feats["img"].collate([r["img"] for r in rows])}
    else:
        batch = _collate(cfg, rows)
    kinds = {i.name: ("numeric" if i.type == "numeric" else i.type) for i in cfg.inputs}
    return cfg, specs, kinds, batch, n


def check_ours(model: dict, kind: str, T: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    cfg, specs, kinds, batch, n = our_case(model, kind, T, rng)
    torch.manual_seed(seed)
    net = build_model(cfg, specs, 3).train()
    c = count_ours(cfg, specs, kinds, 3)
    assert c.params == sum(p.numel() for p in net.parameters())
    fwd, both = flops(net, lambda m: m(batch))
    assert close(c.forward_flops * n, fwd), (c.forward_flops * n, fwd)
    assert close(c.train_flops * n, both), (c.train_flops * n, both)


# ------------------------------------------------------------------- exact on our families
@SETTINGS
@given(heads=st.sampled_from([1, 2, 4]), per_head=st.integers(4, 8), layers=st.integers(1, 2),
       ffn=st.one_of(st.none(), st.integers(4, 40)), kind=st.sampled_from(["text", "sequence"]),
       T=st.integers(2, 24), head=st.lists(st.integers(1, 12), max_size=2))
def test_transformer_counts_are_exact(heads, per_head, layers, ffn, kind, T, head):
    check_ours({"name": "transformer", "d_model": heads * per_head, "heads": heads,
                "layers": layers, "ffn_dim": ffn, "dropout": 0.0, "head_hidden": head}, kind, T)


@SETTINGS
@given(d=st.integers(2, 16), filters=st.integers(1, 8),
       ks=st.lists(st.integers(1, 5), min_size=1, max_size=3),
       kind=st.sampled_from(["text", "sequence"]), T=st.integers(2, 20))
def test_text_cnn_counts_are_exact(d, filters, ks, kind, T):
    check_ours({"name": "cnn", "d_model": d, "filters": filters, "kernel_sizes": ks,
                "dropout": 0.0}, kind, T)


@SETTINGS
@given(channels=st.lists(st.integers(1, 6), min_size=1, max_size=3), blocks=st.integers(1, 2),
       residual=st.booleans(), size=st.sampled_from([4, 7, 8, 13, 64, 70]))
def test_image_cnn_counts_are_exact(channels, blocks, residual, size):
    check_ours({"name": "cnn", "channels": channels, "blocks": blocks, "residual": residual,
                "dropout": 0.0}, "image", size)


@SETTINGS
@given(cell=st.sampled_from(["gru", "lstm"]), d=st.integers(2, 12), hidden=st.integers(1, 10),
       layers=st.integers(1, 2), bidirectional=st.booleans(),
       kind=st.sampled_from(["text", "sequence"]), T=st.integers(2, 12))
def test_rnn_counts_are_exact(cell, d, hidden, layers, bidirectional, kind, T):
    check_ours({"name": "rnn", "cell": cell, "d_model": d, "hidden": hidden, "layers": layers,
                "bidirectional": bidirectional, "dropout": 0.0}, kind, T)


@SETTINGS
@given(channels=st.lists(st.integers(1, 6), min_size=1, max_size=3), residual=st.booleans(),
       cell=st.sampled_from(["gru", "lstm"]), hidden=st.integers(1, 8),
       bidirectional=st.booleans(), mels=st.sampled_from([1, 5, 8]),
       frames=st.sampled_from([1, 3, 12]))
def test_crnn_counts_are_exact(channels, residual, cell, hidden, bidirectional, mels, frames):
    """The audio CRNN (conv stages with 2x2 pools, then a GRU/LSTM over the frames) on a
    1 x mels x frames log-mel spectrogram."""
    cfg = dlforge.config.validate_config({
        "inputs": [{"name": "a", "type": "audio"}], "output": {"name": "y"},
        "model": {"name": "crnn", "channels": channels, "residual": residual, "cell": cell,
                  "hidden": hidden, "bidirectional": bidirectional, "dropout": 0.0}})
    specs = {"a": {"channels": 1, "height": mels, "width": frames}}
    torch.manual_seed(0)
    net = build_model(cfg, specs, 3).train()
    c = count_ours(cfg, specs, {"a": "audio"}, 3)
    assert c.params == sum(p.numel() for p in net.parameters())
    batch = {"a": torch.randn(4, 1, mels, frames)}
    fwd, both = flops(net, lambda m: m(batch))
    assert close(c.forward_flops * 4, fwd), (c.forward_flops * 4, fwd)
    assert close(c.train_flops * 4, both), (c.train_flops * 4, both)


@SETTINGS
@given(hidden=st.lists(st.integers(1, 16), max_size=3),
       kind=st.sampled_from(["table", "table+category"]))
def test_mlp_counts_are_exact(hidden, kind):
    check_ours({"name": "mlp", "hidden": hidden, "dropout": 0.0}, kind, 1)


# ---------------------------------------------------- exact on reference Transformers (HF)
def _hf_flops(model, ids):
    def run(m):
        out = m(input_ids=ids)
        x = out.logits if hasattr(out, "logits") else out.last_hidden_state
        pooled = getattr(out, "pooler_output", None)
        return x.float().sum() + (pooled.sum() if pooled is not None else 0)
    return flops(model, run)


@settings(max_examples=6, deadline=None)
@given(heads=st.sampled_from([2, 4]), per_head=st.sampled_from([4, 8]), layers=st.integers(1, 2),
       T=st.integers(4, 16), tied=st.booleans())
def test_gpt2_architecture_matches_huggingface(heads, per_head, layers, T, tied):
    from transformers import GPT2Config, GPT2LMHeadModel

    d = heads * per_head
    model = GPT2LMHeadModel(GPT2Config(n_layer=layers, n_embd=d, n_head=heads, vocab_size=97,
                                       n_positions=T, tie_word_embeddings=tied, bos_token_id=0,
                                       eos_token_id=0, attn_implementation="eager"))
    c = count_arch(Arch(layers=layers, d_model=d, heads=heads, vocab=97, context=T, tied=tied))
    assert c.params == sum(p.numel() for p in model.parameters())
    fwd, both = _hf_flops(model, torch.randint(0, 97, (2, T)))
    assert close(2 * c.forward_flops, fwd) and close(2 * c.train_flops, both)


@settings(max_examples=6, deadline=None)
@given(kv=st.sampled_from([1, 2, 4]), ffn=st.integers(8, 64), layers=st.integers(1, 2),
       T=st.integers(4, 16), tied=st.booleans())
def test_llama_architecture_matches_huggingface(kv, ffn, layers, T, tied):
    """Grouped-query attention, SwiGLU's three matrices, RMSNorm, no biases, untied head."""
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(
        num_hidden_layers=layers, hidden_size=32, num_attention_heads=4, num_key_value_heads=kv,
        intermediate_size=ffn, vocab_size=101, max_position_embeddings=T,
        tie_word_embeddings=tied, attn_implementation="eager"))
    c = count_arch(Arch(layers=layers, d_model=32, heads=4, kv_heads=kv, ffn=ffn,
                        ffn_kind="swiglu", vocab=101, context=T, tied=tied, norm="rmsnorm",
                        bias=False, positions="rope"))
    assert c.params == sum(p.numel() for p in model.parameters())
    fwd, both = _hf_flops(model, torch.randint(0, 101, (2, T)))
    assert close(2 * c.forward_flops, fwd) and close(2 * c.train_flops, both)


def test_bert_architecture_matches_huggingface():
    from transformers import BertConfig, BertModel

    model = BertModel(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                                 intermediate_size=64, vocab_size=100, max_position_embeddings=16,
                                 attn_implementation="eager"))
    c = count_arch(Arch(layers=2, d_model=32, heads=4, ffn=64, vocab=100, context=16,
                        kind="encoder", type_vocab=2))
    assert c.params == sum(p.numel() for p in model.parameters())
    fwd, both = _hf_flops(model, torch.randint(0, 100, (2, 16)))
    assert close(2 * c.forward_flops, fwd) and close(2 * c.train_flops, both)


# ----------------------------------------------------------------------- published models
def test_published_parameter_counts():
    p = {name: dlforge.estimate(name)["parameters"] for name in
         ("gpt2-small", "gpt2-xl", "bert-base", "bert-large", "llama2-7b", "llama2-13b",
          "llama2-70b", "chinchilla-70b", "gpt3-175b")}
    assert p["gpt2-small"]["total"] == 124_439_808  # "124M" (HF GPT2LMHeadModel, tied)
    assert p["gpt2-xl"]["total"] == 1_557_611_200  # "1.5B"
    assert p["bert-base"]["total"] == 109_482_240  # "110M"
    assert abs(p["bert-large"]["total"] / 335e6 - 1) < 0.01  # "340M" in the paper, 335M real
    assert p["llama2-7b"]["total"] == 6_738_415_616
    assert p["llama2-13b"]["total"] == 13_015_864_320
    assert p["llama2-70b"]["total"] == 68_976_648_192  # "70B" is 69.0B
    assert abs(p["chinchilla-70b"]["total"] / 70e9 - 1) < 0.01
    assert abs(p["gpt3-175b"]["total"] / 175e9 - 1) < 0.01
    assert p["gpt2-small"]["without_embeddings"] == 85_056_000  # Kaplan's N


def test_gpt3_training_flops():
    r = dlforge.estimate("gpt3-175b", tokens=300e9)
    assert abs(r["flops"]["training"]["six_n_d"] / 3.14e23 - 1) < 0.01  # Brown et al. 2020
    # the full count (attention, output head) is a few percent above 6ND
    assert 1.0 < r["flops"]["training"]["total"] / r["flops"]["training"]["six_n_d"] < 1.1


def test_presets_are_stored_as_architectures():
    assert all(isinstance(a, Arch) for a in PRESETS.values()) and len(PRESETS) >= 11
    llama = PRESETS["llama2-70b"]
    assert (llama.n_kv_heads, llama.ffn_kind, llama.tied) == (8, "swiglu", False)


# --------------------------------------------------------------------------------- memory
def test_korthikanti_activation_formula():
    a = Arch(layers=1, d_model=1024, heads=16, vocab=10, context=2048)
    s, h = 2048, 1024
    got = activation_bytes_layer(a, s, act_bytes=2, dropout=True, flash=False)
    assert got == s * h * (34 + 5 * a.heads * s / h)  # Korthikanti et al. 2022, Eq. 1 (b = 1)


def test_training_memory_zero_stages_and_checkpointing():
    c = count_arch(PRESETS["llama2-7b"])
    n = c.params
    m0 = training_memory(c, 1, "adamw-mixed", zero=0, devices=8)
    assert (m0["weights"], m0["gradients"], m0["optimizer_states"]) == (2 * n, 2 * n, 12 * n)
    m1 = training_memory(c, 1, "adamw-mixed", zero=1, devices=8)
    m2 = training_memory(c, 1, "adamw-mixed", zero=2, devices=8)
    m3 = training_memory(c, 1, "adamw-mixed", zero=3, devices=8)
    assert m1["optimizer_states"] == 12 * n / 8 and m1["gradients"] == 2 * n
    assert m2["gradients"] == 2 * n / 8 and m2["weights"] == 2 * n
    assert m3["weights"] == 2 * n / 8
    assert m0["total"] > m1["total"] > m2["total"] > m3["total"]
    assert training_memory(c, 1, "adamw")["weights"] == 4 * n
    assert training_memory(c, 1, "sgd")["optimizer_states"] == 4 * n
    ck = training_memory(c, 4, checkpointing=True)
    assert ck["activations"] < training_memory(c, 4)["activations"]


def test_kv_cache_of_llama2_70b():
    r = dlforge.estimate("llama2-70b", inference_batch=2)
    im = r["inference_memory"]
    assert im["kv_cache_per_token"] == 2 * 80 * 8 * 128 * 2  # K and V, 8 KV heads, bf16
    assert im["kv_cache"] == im["kv_cache_per_token"] * 4096 * 2
    assert im["weights"]["bf16"] == 2 * r["parameters"]["total"]


# ---------------------------------------------------------------------- time, data, hardware
def test_time_and_cost_on_the_catalogue():
    for name in ("h100", "h200", "a100-80gb", "a100-40gb", "l4", "t4"):
        assert name in CATALOGUE
    t = time_and_cost(989.4e12 * 3600, CATALOGUE["h100"], devices=2, mfu=0.5)
    assert math.isclose(t["seconds"], 3600) and math.isclose(t["device_hours"], 2)
    assert math.isclose(t["cost_usd"], 2 * CATALOGUE["h100"].price_per_hour)
    r = dlforge.estimate("gpt2-small", hardware="a100-80gb", devices=4, price=2.0)
    assert r["time"]["price_per_device_hour"] == 2.0 and r["time"]["devices"] == 4


def test_this_machine_is_measured():
    dev = device("this-machine")
    assert dev.fp32_tflops > 0 and dev.bf16_tflops > 0 and dev.memory_gb > 0
    assert "measured" in dev.source


def test_chinchilla_data_answers():
    r = dlforge.estimate("chinchilla-70b", tokens=1.4e12)
    d = r["data"]
    assert d["optimal_tokens"] == 20 * r["parameters"]["total"]
    opt = optimal_for_compute(5.76e23)  # Chinchilla's budget
    assert math.isclose(6 * opt["params"] * opt["tokens"], 5.76e23)
    assert 60e9 < opt["params"] < 80e9
    assert d["constants"] == CHINCHILLA
    assert math.isclose(chinchilla_loss(70e9, 1.4e12), 1.69 + 406.4 / 70e9 ** 0.34
                        + 410.7 / 1.4e12 ** 0.28)
    assert set(r["faq"]) == {"data", "time", "compute"}
    b = dlforge.estimate("gpt2-small", budget=5.76e23)["data"]["optimal_for_budget"]
    assert b["params"] == opt["params"] and b["tokens"] == 20 * b["params"]


# ------------------------------------------------------------------- free sizes, adapters
def test_free_parameters_and_preset_overrides():
    r = dlforge.estimate(layers=12, d_model=768, heads=12, vocab=50257, context=1024)
    assert r["parameters"]["total"] == 124_439_808
    untied = dlforge.estimate(layers=12, d_model=768, heads=12, vocab=50257, context=1024,
                              untied=True)
    assert untied["parameters"]["total"] - 124_439_808 == 50257 * 768
    longer = dlforge.estimate("gpt2-small", context=2048)
    assert longer["parameters"]["total"] == 124_439_808 + 1024 * 768


def test_adapter_hook_for_a_gpt_config():
    @dataclass
    class GPTConfig:  # a nanoGPT-style config of someone else's, by the same class name
        n_layer: int = 2
        n_embd: int = 16
        n_head: int = 2
        vocab_size: int = 50
        block_size: int = 8

    ours = ADAPTERS.get("GPTConfig")  # dlforge.models.gpt's, registered by the package
    try:
        register_adapter("GPTConfig", lambda c: Arch(layers=c.n_layer, d_model=c.n_embd,
                                                     heads=c.n_head, vocab=c.vocab_size,
                                                     context=c.block_size))
        r = dlforge.estimate(GPTConfig())
        assert r["parameters"]["total"] == count_arch(
            Arch(layers=2, d_model=16, heads=2, vocab=50, context=8)).params
    finally:
        ADAPTERS["GPTConfig"] = ours
    r = dlforge.estimate({"n_layer": 2, "n_embd": 16, "n_head": 2, "vocab_size": 50,
                          "block_size": 8})
    assert r["model"]["architecture"]["layers"] == 2


# ----------------------------------------------------------------------------- our runs
def test_run_directory_is_exact(trained_run):
    run, _ = trained_run
    r = dlforge.estimate(str(run), hardware="t4")
    model = dlforge.load(run).model_
    assert r["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert r["flops"]["training"]["samples"] > 0 and r["model"]["kind"] == "run directory"


def _toy_config(tmp_path: Path, rows: int = 160, epochs: int = 3, threads: int | None = None,
                **model) -> Path:
    texts, labels = toy_texts(rows, seed=1)
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(tmp_path / "toy.csv",
                                                                index=False)
    cfg = {"data": {"path": "toy.csv", "validation_split": 0.2},
           "inputs": [{"name": "review", "vocab_size": 300, "max_length": 24}],
           "output": {"name": "sentiment"},
           "model": {"name": "transformer", "d_model": 32, "heads": 2, "layers": 2,
                     "dropout": 0.0, **model},
           "train": {"epochs": epochs, "batch_size": 8, "precision": "fp32", "patience": 0,
                     "device": "cpu", "num_threads": threads}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_config_estimate(tmp_path):
    path = _toy_config(tmp_path)
    r = dlforge.estimate(str(path))
    assert r["model"]["kind"] == "run config" and r["data"]["train_rows"] == 128
    assert r["flops"]["training"]["samples"] == 128 * 3
    assert r["training_memory"]["optimizer"] == "adamw"


def test_forecast_config_estimate(tmp_path):
    t = np.arange(120)
    pd.DataFrame({"y": np.sin(t / 5), "x": np.cos(t / 7)}).to_csv(tmp_path / "s.csv", index=False)
    cfg = {"data": {"path": "s.csv"}, "forecast": {"targets": ["y"], "exogenous": ["x"],
                                                   "window": 12, "horizon": 3},
           "model": {"name": "rnn", "hidden": 8, "d_model": 8}}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(cfg))
    r = dlforge.estimate(str(tmp_path / "f.yaml"))
    fc = dlforge.Forecaster("rnn", window=12, horizon=3, hidden=8, d_model=8, epochs=1,
                            verbose=0)
    fc.fit(pd.read_csv(tmp_path / "s.csv"), targets="y", exogenous=["x"])
    assert r["parameters"]["total"] == sum(p.numel() for p in fc.model_.parameters())


def test_measure_times_real_steps_and_predicts_the_run(tmp_path):
    """--measure times real training steps of the run and predicts its time from them. Tests
    never assert timings (a shared machine makes them flaky): the prediction against a real
    run (within 30%) is measured by ``benchmarks/estimate_accuracy.py --train``; here, that the
    prediction is made of the run's own steps and the measured step time."""
    path = _toy_config(tmp_path, rows=240, epochs=2, threads=1)
    threads = torch.get_num_threads()
    try:
        m = dlforge.estimate(str(path), measure=str(path), measure_steps=4)["measured"]
    finally:
        torch.set_num_threads(threads)
    cfg = dlforge.load_config(path)
    assert m["steps_timed"] == 4 and m["epochs"] == cfg.train.epochs
    train_rows = round(240 * (1 - cfg.data.validation_split - cfg.data.test_split))
    assert abs(m["steps_per_epoch"] - math.ceil(train_rows / cfg.train.batch_size)) <= 1
    assert m["predicted_train_seconds"] == pytest.approx(
        m["epochs"] * m["optimizer_steps_per_epoch"] * m["step_seconds"], rel=0.05) or \
        m["predicted_train_seconds"] == pytest.approx(
            m["epochs"] * m["steps_per_epoch"] * m["step_seconds"], rel=0.05)
    assert m["achieved_flops_per_s"] > 0 and m["memory"]["predicted_bytes"] > 0


# ----------------------------------------------------------------------------- the CLI
def test_cli_table_and_json(capsys):
    assert main(["estimate", "gpt2-small"]) == 0
    out = capsys.readouterr().out
    assert "How much data?" in out and "How long?" in out and "How much compute?" in out
    assert "124,439,808" in out
    assert main(["estimate", "--layers", "2", "--d-model", "64", "--heads", "4", "--kv-heads",
                 "2", "--ffn-kind", "swiglu", "--ffn", "128", "--vocab", "1000",
                 "--context", "64", "--untied", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["architecture"]["tied"] is False
    assert report["parameters"]["total"] == count_arch(Arch(
        layers=2, d_model=64, heads=4, kv_heads=2, ffn_kind="swiglu", ffn=128, vocab=1000,
        context=64, tied=False)).params


@pytest.mark.parametrize("args, needle", [
    (["estimate", "gpt-5"], "known presets: gpt2-small"),
    (["estimate", "--layers", "0", "--d-model", "64", "--heads", "4", "--vocab", "10",
      "--context", "8"], "layers must be a whole number > 0"),
    (["estimate", "--layers", "2", "--d-model", "-64", "--heads", "4", "--vocab", "10",
      "--context", "8"], "d_model must be a whole number > 0"),
    (["estimate", "--layers", "2", "--d-model", "64", "--heads", "5", "--vocab", "10",
      "--context", "8"], "heads (5) must divide d_model (64)"),
    (["estimate", "--layers", "2", "--d-model", "64", "--heads", "4", "--kv-heads", "3",
      "--vocab", "10", "--context", "8"], "kv_heads (3) must divide heads (4)"),
    (["estimate", "--layers", "2", "--d-model", "64"], "missing --heads, --vocab, --context"),
    (["estimate", "gpt2-small", "--hardware", "tpu"], "known: h100, h200"),
    (["estimate", "gpt2-small", "--mfu", "0"], "mfu must be in (0, 1]"),
    (["estimate", "gpt2-small", "--mfu", "1.5"], "mfu must be in (0, 1]"),
    (["estimate", "gpt2-small", "--devices", "0"], "devices must be"),
    (["estimate", "gpt2-small", "--tokens", "-5"], "tokens must be a number > 0"),
    (["estimate", "gpt2-small", "--budget", "0"], "budget must be a number > 0"),
    (["estimate", "gpt2-small", "--seq-len", "2048"], "longer than the context (1024)"),
    (["estimate", "gpt2-small", "--epochs", "2"], "give tokens"),
    (["estimate", "gpt2-small", "--ffn-kind", "relu"], "ffn_kind must be one of gelu, swiglu"),
    (["estimate", "gpt2-small", "--zero", "4"], "zero must be one of 0, 1, 2, 3"),
    (["estimate", "gpt2-small", "--optimizer", "adam"], "optimizer must be one of"),
    (["estimate", "no/such/run.yaml"], "config file not found"),
    (["estimate", "--measure", "missing.yaml"], "config file not found"),
    (["estimate"], "nothing to estimate"),
])
def test_cli_bad_input_is_one_line(capsys, args, needle):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert needle in err, err


def test_python_bad_input_raises_config_error():
    with pytest.raises(ConfigError, match="known presets"):
        dlforge.estimate("gpt2-tiny")
    with pytest.raises(ConfigError, match="must divide"):
        Arch(layers=1, d_model=10, heads=3, vocab=5, context=4)


# ------------------------------------------------------------------------- our GPT and its runs
@pytest.mark.parametrize("layers,d,heads,vocab,block,bias", [(1, 8, 2, 11, 6, True),
                                                             (2, 16, 4, 29, 12, False)])
def test_our_gpt_counts_are_exact(layers, d, heads, vocab, block, bias):
    """dlforge.models.gpt is counted through its registered adapter: parameters equal
    sum(numel) and FLOPs equal FlopCounterMode's (explicit causal attention: the CPU's fused
    attention kernel is invisible to the counter)."""
    from unittest import mock

    from dlforge.models import layers as L
    from dlforge.models.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=vocab, block_size=block, n_layer=layers, n_head=heads,
                    d_model=d, bias=bias)
    model = GPT(cfg)
    r = dlforge.estimate(cfg, seq_len=block)
    assert r["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    idx = torch.randint(0, vocab, (1, block))
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def explicit(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        return L.explicit_attention(q, k, v, causal=is_causal)

    with mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", explicit):
        fwd, both = flops(model, lambda m: m(idx, targets=idx)[0])
    assert torch.nn.functional.scaled_dot_product_attention is sdpa
    assert close(r["flops"]["per_sample"]["forward"], fwd)
    assert close(r["flops"]["per_sample"]["forward_backward"], both)


def test_language_model_run_directory(tmp_path):
    from dlforge import LanguageModel
    from tests.test_lm import TEXT, TINY

    out = tmp_path / "lm"
    lm = LanguageModel(**TINY).fit(TEXT, out=out)
    r = dlforge.estimate(str(out), hardware="t4")
    assert r["model"]["kind"] == "language-model run"
    assert r["parameters"]["total"] == sum(p.numel() for p in lm.model_.parameters())
    seen = lm.metrics_["steps"] * TINY["batch_size"] * TINY["block_size"]
    assert r["flops"]["training"]["tokens"] == seen
    assert r["flops"]["seq_len"] == TINY["block_size"]


def test_chinchilla_loss_outside_its_fit_says_so():
    small = dlforge.estimate("gpt2-small", tokens=1e6)
    assert small["data"]["in_fit_range"] is False
    assert "an extrapolation" in small["faq"]["data"]
    big = dlforge.estimate("chinchilla-70b", tokens=1.4e12)
    assert big["data"]["in_fit_range"] is False  # 70B is past the largest model fitted (16B)
    mid = dlforge.estimate("gpt2-xl", tokens=3e10)
    assert mid["data"]["in_fit_range"] is True and "extrapolation" not in mid["faq"]["data"]
