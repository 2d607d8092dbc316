"""Language models (issue 6): the GPT, its KV cache, training, sampling, the run and the CLI."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch

import dlforge
from dlforge import ConfigError, DataError, LanguageModel, NotFittedError, RunDirError
from dlforge.cli import main
from dlforge.lm.corpus import TokenData
from dlforge.lm.generate import sample_tokens, stream_text
from dlforge.models.gpt import GPT, Decoder, GPTConfig, KVCache

TEXT = "the quick brown fox jumps over the lazy dog. " * 12  # 540 characters, 28 distinct
TINY = dict(n_layer=2, n_head=2, d_model=16, block_size=16, batch_size=8, max_steps=40,
            eval_interval=10, eval_iters=2, warmup_steps=4, lr=1e-2, min_lr=1e-3,
            precision="fp32", device="cpu", verbose=0,
            num_threads=1)  # tiny models: one thread is fastest, the more so on a busy machine


def tiny_gpt(seed: int = 0, **kw) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(**{**dict(vocab_size=20, block_size=16, n_layer=2, n_head=2, d_model=16),
                       **kw})
    return GPT(cfg).eval()


@pytest.fixture(scope="module")
def trained(tiny_lm) -> tuple[LanguageModel, Path]:
    return tiny_lm  # conftest: trained once for the session


# ------------------------------------------------------------------------------ the model
def test_causal_mask_holds():
    model = tiny_gpt()
    x = torch.randint(0, 20, (2, 16))
    y = x.clone()
    y[:, 10] = (y[:, 10] + 1) % 20  # change a later token
    a, _ = model(x, targets=x)
    b, _ = model(y, targets=y)
    assert torch.equal(a[:, :10], b[:, :10])  # earlier positions: bit-identical
    assert not torch.allclose(a[:, 10:], b[:, 10:])


def test_explicit_causal_attention_matches_sdpa():
    from dlforge.models.layers import attention, explicit_attention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 10, 8) for _ in range(3))
    sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(explicit_attention(q, k, v, causal=True), sdpa, atol=1e-6)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, 7:] = False
    with torch.no_grad():  # the SDPA path, causal and key mask combined
        both = attention(q, k, v, mask, causal=True)
    assert torch.allclose(both, explicit_attention(q, k, v, mask[:, None, None, :], causal=True),
                          atol=1e-6)
    # Gradients too: the explicit path is the one that trains.
    qkv = [t.clone().requires_grad_() for t in (q, k, v)]
    grads = torch.autograd.grad(explicit_attention(*qkv, mask[:, None, None, :], causal=True)
                                .square().sum(), qkv)
    qkv2 = [t.clone().requires_grad_() for t in (q, k, v)]
    causal_keys = mask[:, None, None, :] & torch.ones(10, 10, dtype=torch.bool).tril()
    want = torch.autograd.grad(torch.nn.functional.scaled_dot_product_attention(
        *qkv2, attn_mask=causal_keys).square().sum(), qkv2)
    for g, w in zip(grads, want, strict=True):
        assert torch.allclose(g, w, atol=1e-5)
    model = tiny_gpt().train()  # the bf16 training path (explicit) against SDPA (no grad)
    x = torch.randint(0, 20, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        trained, _ = model(x, targets=x)
        with torch.no_grad():
            plain, _ = model(x, targets=x)
    assert torch.allclose(trained.float(), plain.float(), atol=0.05)


def test_kv_cache_logits_match_full_forward():
    model = tiny_gpt()
    x = torch.randint(0, 20, (1, 12))
    full, _ = model(x, targets=x)  # (1, 12, V)
    cache = KVCache(model.config, 1, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        first, _ = model(x[:, :5], cache=cache)  # a prompt of 5
        steps = [first[:, -1]] + [model(x[:, t:t + 1], cache=cache)[0][:, -1]
                                  for t in range(5, 12)]
        chunk_cache = KVCache(model.config, 1, torch.device("cpu"), torch.float32)
        model(x[:, :5], cache=chunk_cache)
        chunk, _ = model(x[:, 5:9], cache=chunk_cache)  # several new tokens after a cache
    assert torch.allclose(torch.stack(steps, 1), full[:, 4:12], atol=1e-5)
    assert torch.allclose(chunk[:, -1], full[:, 8], atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_decoder_step_matches_the_module_forward(bias):
    """The flat one-position step (what generation runs) against GPT.forward with a cache:
    batch 2, fp32 to rounding; bf16 against the module under bf16 autocast."""
    model = tiny_gpt(seed=1, bias=bias)
    x = torch.randint(0, 20, (2, 12))
    for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 0.05)):
        ref_cache = KVCache(model.config, 2, torch.device("cpu"), dtype)
        cache = KVCache(model.config, 2, torch.device("cpu"), dtype)
        step = Decoder(model, dtype)
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16,
                                                    enabled=dtype == torch.bfloat16):
            model(x[:, :5], cache=ref_cache)
            model(x[:, :5], cache=cache)
            for t in range(5, 12):
                ref = model(x[:, t:t + 1], cache=ref_cache)[0][:, -1]
                got = step(x[:, t], cache)
                assert got.shape == (2, 20) and cache.pos == ref_cache.pos == t + 1
                assert torch.allclose(got.float(), ref.float(), atol=tol), (dtype, t)
            for i in range(model.config.n_layer):
                assert torch.allclose(cache.k[i].float(), ref_cache.k[i].float(), atol=tol)
    full = KVCache(model.config, 1, torch.device("cpu"), torch.float32)
    full.pos = model.config.block_size
    with pytest.raises(ValueError, match="context window"):
        Decoder(model)(torch.tensor([1]), full)


def test_greedy_with_and_without_cache_identical_past_the_window():
    model = tiny_gpt(seed=3)
    prompt = [1, 2, 3, 4, 5]
    n = 3 * model.config.block_size  # slides twice
    cached = list(sample_tokens(model, prompt, n, temperature=0, use_cache=True))
    full = list(sample_tokens(model, prompt, n, temperature=0, use_cache=False))
    assert cached == full and len(cached) == n


def test_weight_tying_and_scaled_residual_init():
    model = tiny_gpt(n_layer=4)
    names = [n for n, _ in model.named_parameters()]
    assert not any("head" in n for n in names)  # the output head is tok_emb.weight
    std = model.blocks[0].attn.proj.weight.std().item()
    assert std < 0.02 / (2 * 4) ** 0.5 * 1.3
    with pytest.raises(ValueError, match="context window"):
        model(torch.zeros(1, 17, dtype=torch.long))


# ------------------------------------------------------------------------------ training
def test_tiny_model_overfits_short_text():
    lm = LanguageModel(**{**TINY, "max_steps": 150, "eval_interval": 150, "d_model": 32,
                          "lr": 2e-2, "min_lr": 2e-3}).fit(TEXT)
    assert lm.metrics_["train_loss"] < 0.15 and lm.metrics_["val_loss"] < 0.15
    assert lm.generate("the quick", max_new_tokens=21, temperature=0) == \
        " brown fox jumps over"


def test_run_directory_and_load(trained):
    lm, out = trained
    names = {p.name for p in out.iterdir()}
    assert {"dlforge.json", "config.yaml", "model.safetensors", "model.json", "tokenizer.json",
            "metrics.json", "history.csv", "data.json"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"val_loss", "val_perplexity", "val_bits_per_char", "tokens_per_second"} <= set(metrics)
    assert [r["step"] for r in lm.history_] == [0, 10, 20, 30, 40]
    again = dlforge.load(out)
    assert isinstance(again, LanguageModel)
    assert again.generate("the", 30, temperature=0) == lm.generate("the", 30, temperature=0)
    assert again.evaluate(TEXT[:200])["loss"] == pytest.approx(lm.evaluate(TEXT[:200])["loss"])
    assert not any(p.name.startswith(".run") for p in out.parent.iterdir())  # no leftovers


def test_tampered_run_refused(trained, tmp_path):
    import shutil

    _, out = trained
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "tokenizer.json").write_text('{"kind": "char", "chars": ["a"]}')
    with pytest.raises(RunDirError, match="tokenizer.json"):
        dlforge.load(copy)


def interrupt_after(monkeypatch, n_batches: int):
    """Make training raise KeyboardInterrupt when it asks for train batch ``n_batches + 1``;
    return a function that undoes it."""
    real_batch = TokenData.batch
    calls = {"n": 0}

    def interrupted(self, split, batch_size, gen):
        if split == "train":
            calls["n"] += 1
            if calls["n"] > n_batches:
                raise KeyboardInterrupt
        return real_batch(self, split, batch_size, gen)

    monkeypatch.setattr(TokenData, "batch", interrupted)
    return lambda: monkeypatch.setattr(TokenData, "batch", real_batch)


def test_resume_gives_the_same_loss_curve(tmp_path, monkeypatch):
    params = {**TINY, "dropout": 0.1, "max_steps": 20, "eval_interval": 5}
    whole = LanguageModel(**params).fit(TEXT, out=tmp_path / "whole")
    undo = interrupt_after(monkeypatch, 12)  # during step 13, after the checkpoint of step 10
    with pytest.raises(KeyboardInterrupt):
        LanguageModel(**params).fit(TEXT, out=tmp_path / "resumed")
    undo()
    assert not (tmp_path / "resumed").exists() and (tmp_path / ".resumed.partial").is_dir()
    resumed = LanguageModel(**params).fit(TEXT, out=tmp_path / "resumed", resume=True)

    def curve(lm):
        return [(r["step"], r["train_loss"], r["val_loss"]) for r in lm.history_]

    assert curve(resumed) == curve(whole)
    assert not (tmp_path / ".resumed.partial").exists()


def test_resume_with_other_settings_is_an_error(tmp_path, monkeypatch):
    params = {**TINY, "max_steps": 20, "eval_interval": 5}
    undo = interrupt_after(monkeypatch, 7)
    with pytest.raises(KeyboardInterrupt):
        LanguageModel(**params).fit(TEXT, out=tmp_path / "run")
    undo()
    with pytest.raises(ConfigError, match=r"resume: settings differ .* lr \(0.01 saved, 0.5"):
        LanguageModel(**{**params, "lr": 0.5}).fit(TEXT, out=tmp_path / "run", resume=True)


def test_table_corpus_and_files(tmp_path):
    df = pd.DataFrame({"body": [TEXT[i:i + 60] for i in range(0, 540, 60)], "n": range(9)})
    df.to_csv(tmp_path / "t.csv", index=False)
    lm = LanguageModel(**{**TINY, "max_steps": 2, "column": "body"}).fit(tmp_path / "t.csv")
    assert lm.data_report_["characters"] > 500
    (tmp_path / "a.txt").write_text(TEXT[:300])
    (tmp_path / "b.txt").write_text(TEXT[300:])
    lm = LanguageModel(**{**TINY, "max_steps": 2}).fit([tmp_path / "a.txt", tmp_path / "b.txt"])
    assert lm.data_report_["characters"] == len(TEXT) + 1  # joined with a newline
    with pytest.raises(DataError, match="column 'text' not found"):
        LanguageModel(**{**TINY, "column": "text"}).fit(tmp_path / "t.csv")
    with pytest.raises(DataError, match="name its text column"):
        LanguageModel(**TINY).fit(tmp_path / "t.csv")


def test_char_tokenizer_paths_agree():
    from dlforge.lm.corpus import CharTokenizer

    tok = CharTokenizer.train(TEXT + "é\n")
    long = (TEXT + "é\n") * 10  # > 4096 characters: the code-point table
    ids = tok.encode(long)
    assert ids.tolist() == [tok.index[c] for c in long] and tok.decode(ids) == long


def test_bpe_tokenizer_round_trip(tmp_path):
    lm = LanguageModel(**{**TINY, "tokenizer": "bpe", "vocab_size": 300, "max_steps": 5,
                          "block_size": 8})
    lm.fit(TEXT * 2 + "naïve café — ünïcödé\n", out=tmp_path / "bpe")
    again = LanguageModel.load(tmp_path / "bpe")
    assert again.tokenizer_.decode(again.tokenizer_.encode("café — ✓")) == "café — ✓"
    assert isinstance(again.generate("café", max_new_tokens=20, seed=0), str)
    assert again.evaluate(TEXT[:100])["bits_per_char"] > 0


# ------------------------------------------------------------------------------ sampling
def test_same_seed_same_sample(trained):
    lm, _ = trained
    a = lm.generate("the", 40, temperature=1.0, top_k=10, top_p=0.9, seed=7)
    b = lm.generate("the", 40, temperature=1.0, top_k=10, top_p=0.9, seed=7)
    c = lm.generate("the", 40, temperature=1.0, top_k=10, top_p=0.9, seed=8)
    assert a == b and a != c
    pieces = list(lm.generate_stream("the", 40, temperature=1.0, top_k=10, top_p=0.9, seed=7))
    assert "".join(pieces) == a and len(pieces) > 1


def test_generation_is_thread_safe(trained):
    lm, _ = trained
    expected = [lm.generate("the", 30, temperature=1.0, seed=s) for s in range(4)]
    got: dict[int, str] = {}
    threads = [threading.Thread(target=lambda s=s: got.__setitem__(
        s, lm.generate("the", 30, temperature=1.0, seed=s))) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[s] for s in range(4)] == expected
    assert torch.is_grad_enabled()  # no grad mode leaked from a paused stream
    stream = lm.generate_stream("the", 5, seed=0)
    next(stream)
    assert torch.is_grad_enabled()


def test_stop_string_and_repetition_penalty(trained):
    lm, _ = trained
    free = lm.generate("the", 60, temperature=0)
    stop = free[10:13]
    cut = lm.generate("the", 60, temperature=0, stop=stop)
    assert cut == free[:free.index(stop)] and stop not in cut
    details: dict = {}
    assert "".join(lm.generate_stream("the", 60, temperature=0, stop=stop,
                                      details=details)) == cut
    assert details["finish_reason"] == "stop" and details["prompt_tokens"] == 3
    assert details["generated_tokens"] == len(cut) + len(stop)
    details = {}
    assert "".join(lm.generate_stream("the", 60, temperature=0, details=details)) == free
    assert details == {"prompt_tokens": 3, "generated_tokens": 60, "finish_reason": "length"}
    assert lm.generate("the", 60, temperature=0, repetition_penalty=3.0) != free
    # the stream holds back a possible start of the stop string
    assert list(stream_text(lambda ids: "".join(map(str, ids)), iter([1, 2, 3, 4]), "34")) \
        == ["1", "2"]


def test_max_new_tokens_past_the_window_slides(trained):
    lm, _ = trained
    n = 5 * lm.config_.block_size
    assert len(lm.generate_tokens("the", n, temperature=0)) == n
    assert len(lm.generate("the", n, temperature=0)) == n  # char tokenizer: one char a token
    long_prompt = TEXT[:100]  # longer than the window: its last block_size tokens are kept
    assert len(lm.generate(long_prompt, 10, temperature=0)) == 10


# ------------------------------------------------------------------------------ bad input
def test_bad_inputs(trained, tmp_path):
    lm, _ = trained
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="holds no text"):
        LanguageModel(**TINY).fit(empty)
    with pytest.raises(DataError, match="holds no text"):
        LanguageModel(**TINY).fit("   \n")
    with pytest.raises(DataError, match="too small for block_size 16"):
        LanguageModel(**TINY).fit("just a few words here")
    with pytest.raises(DataError, match="not found"):
        LanguageModel(**TINY).fit("no_such_corpus.txt")
    with pytest.raises(DataError, match=r"characters not in the model's vocabulary: 'Z', '€'"):
        lm.generate("Zebra €")
    with pytest.raises(DataError, match="prompt: empty"):
        lm.generate("")
    for kw, key in ((dict(temperature=-1), "temperature"), (dict(top_k=0), "top_k"),
                    (dict(top_p=1.5), "top_p"), (dict(repetition_penalty=0), "repetition"),
                    (dict(max_new_tokens=-1), "max_new_tokens")):
        with pytest.raises(ConfigError, match=key):
            lm.generate("the", **kw)
    with pytest.raises(ConfigError, match="d_model .* multiple of n_head"):
        LanguageModel(**{**TINY, "n_head": 3}).fit(TEXT)
    with pytest.raises(ConfigError, match="block_size"):
        LanguageModel(**{**TINY, "block_size": 1}).fit(TEXT)
    with pytest.raises(ConfigError, match="unknown parameter 'layers'"):
        LanguageModel().set_params(layers=2)
    with pytest.raises(NotFittedError):
        LanguageModel().generate("x")
    with pytest.raises(RunDirError, match="nothing to resume"):
        LanguageModel(**TINY).fit(TEXT, out=tmp_path / "never", resume=True)
    _, run = trained
    with pytest.raises(RunDirError, match="run already exists there; pass --overwrite"):
        LanguageModel(**TINY).fit(TEXT, out=run)
    with pytest.raises(RunDirError, match="this run is complete"):
        LanguageModel(**TINY).fit(TEXT, out=run, resume=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not a dlforge run"):
        LanguageModel(**TINY).fit(TEXT, out=tmp_path / "other")


# ------------------------------------------------------------------------------ the CLI
def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_round_trip(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "lm", "train", "--text", corpus, "--out", run,
                             "--n-layer", 1, "--n-head", 2, "--d-model", 16, "--block-size", 16,
                             "--batch-size", 4, "--max-steps", 10, "--eval-interval", 5,
                             "--eval-iters", 2, "--precision", "fp32")
    assert code == 0, err
    assert "wrote" in out and "val loss" in out
    assert "step 5: train loss" in err and "tok/s" in err  # plain lines when not a terminal
    code, out, _ = run_cli(capsys, "lm", "generate", run, "--prompt", "the", "--seed", "1",
                           "--max-new-tokens", "20", "--top-k", "5")
    assert code == 0 and out.startswith("the") and len(out.rstrip("\n")) >= 3
    code, out2, _ = run_cli(capsys, "lm", "generate", run, "--prompt", "the", "--seed", "1",
                            "--max-new-tokens", "20", "--top-k", "5")
    assert out2 == out
    code, out3, _ = run_cli(capsys, "lm", "generate", run, "--prompt", "the", "--seed", "1",
                            "--max-new-tokens", "20", "--top-k", "5", "--stop", "\\n")
    assert code == 0 and out3 == out  # no newline in 20 tokens: the same text
    held = tmp_path / "held.txt"
    held.write_text(TEXT[:200])
    code, out, _ = run_cli(capsys, "lm", "eval", run, "--text", held, "--json")
    assert code == 0 and {"loss", "perplexity", "bits_per_char"} <= set(json.loads(out))
    code, out, _ = run_cli(capsys, "lm", "eval", run, "--text", held)
    assert code == 0 and "bits per char" in out
    code, out, err = run_cli(capsys, "lm", "train", "--text", corpus, "--out", run,
                             "--max-steps", 2, "--block-size", 16, "--overwrite", "-q",
                             "--n-layer", 1, "--d-model", 16, "--n-head", 2)
    assert code == 0 and "step 0" not in err


def test_cli_bad_inputs(tmp_path, capsys, trained):
    _, run = trained

    def user_error(*args, needle):
        code, _, err = run_cli(capsys, *args)
        lines = [ln for ln in err.strip().splitlines() if ln]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
        assert needle in lines[0], lines[0]

    user_error("lm", "generate", run, "--prompt", "Q!", needle="'!', 'Q'")
    user_error("lm", "generate", run, "--prompt", "the", "--top-p", "2", needle="top_p")
    user_error("lm", "generate", tmp_path / "nope", "--prompt", "a", needle="no such run")
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("abc")
    user_error("lm", "train", "--text", tiny, "--out", tmp_path / "r", needle="too small")
    user_error("lm", "train", "--text", tmp_path / "missing.txt", "--out", tmp_path / "r",
               needle="file not found")
    assert not (tmp_path / "r").exists()


def test_other_commands_on_a_language_model(trained, tmp_path, capsys):
    _, run = trained
    code, out, _ = run_cli(capsys, "info", run)
    assert code == 0 and "language_model" in out and "bits/char" in out
    code, out, _ = run_cli(capsys, "info", run, "--json")
    assert code == 0 and json.loads(out)["model"]["name"] == "gpt"
    for args in (("predict", run, "--data", "x.csv", "--out", tmp_path / "p.csv"),
                 ("evaluate", run, "--data", "x.csv")):
        code, _, err = run_cli(capsys, *args)
        assert code == 2 and "is a language model" in err and "dlforge lm" in err


def test_streaming_decodes_each_token_about_once():
    """Long generations stay linear: only the tokens not yet sent are decoded again."""
    decoded = []

    def decode(ids):
        decoded.append(len(ids))
        return "".join(chr(97 + i % 26) for i in ids)

    n = 2000
    pieces = list(stream_text(decode, iter(range(n)), stop="zz"))
    assert "".join(pieces) == "".join(chr(97 + i % 26) for i in range(n))
    assert sum(decoded) < 3 * n  # (decoding the whole text each time would be ~n²/2)


def test_gpt_with_past_equals_the_cached_forward():
    from dlforge.serve.export_lm import GPTWithPast

    model = tiny_gpt(seed=6)
    x = torch.randint(0, 20, (2, 10))
    cache = KVCache(model.config, 2, torch.device("cpu"), torch.float32)
    c = model.config
    empty = torch.zeros(c.n_layer, 2, c.n_head, 0, c.d_model // c.n_head)
    wrapper = GPTWithPast(model)
    with torch.no_grad():
        model(x[:, :6], cache=cache)
        want = model(x[:, 6:], cache=cache)[0][:, -1]  # 4 tokens after 6 cached
        _, pk, pv = wrapper(x[:, :6], empty, empty)
        logits, keys, values = wrapper(x[:, 6:], pk, pv)
    assert torch.allclose(logits[:, -1], want, atol=1e-5)
    for i in range(c.n_layer):
        assert torch.allclose(keys[i], cache.k[i][:, :, :10], atol=1e-5)
        assert torch.allclose(values[i], cache.v[i][:, :, :10], atol=1e-5)


def test_onnx_export_generates_the_same_tokens(trained, tmp_path, capsys):
    import shutil

    import numpy as np
    import onnxruntime as ort

    lm, out = trained
    run = tmp_path / "lm"
    shutil.copytree(out, run)
    assert main(["export", str(run), "--format", "onnx"]) == 0, capsys.readouterr().err
    info = json.loads(run.with_suffix(".onnx.json").read_text())
    assert info["max_abs_difference"] <= 1e-4
    assert [i["name"] for i in info["inputs"]] == ["input_ids", "past_keys", "past_values"]
    session = ort.InferenceSession(str(run.with_suffix(".onnx")))
    s = info["sizes"]
    ids = lm._prompt_ids("the ")
    past = np.zeros((s["layers"], 1, s["heads"], 0, s["head_size"]), np.float32)
    feed, pk, pv, got = np.array([ids]), past, past, []
    for _ in range(s["block_size"] - len(ids)):  # greedy, within the window
        logits, pk, pv = session.run(None, {"input_ids": feed, "past_keys": pk,
                                            "past_values": pv})
        got.append(int(logits[0, -1].argmax()))
        feed = np.array([[got[-1]]])
    assert got == lm.generate_tokens("the ", len(got), temperature=0)


def test_cli_generates_several_prompts_together(trained, capsys):
    lm, run = trained
    code, out, err = run_cli(capsys, "lm", "generate", run, "--prompt", "the ", "--prompt",
                             "fox", "--max-new-tokens", "12", "--seed", "3")
    assert code == 0, err
    want = [p + lm.generate(p, max_new_tokens=12, seed=3) for p in ("the ", "fox")]
    assert out.split("\n") == ["--- prompt 1 of 2", want[0], "", "--- prompt 2 of 2", want[1],
                               ""]
    code, _, err = run_cli(capsys, "lm", "generate", run, "--prompt", "the ", "--prompt", "Ω")
    assert code == 2 and "prompt" in err and "Traceback" not in err
