"""Sequence to sequence: the encoder-decoder Transformer, its decoding (greedy, beam, KV cache),
the Seq2Seq estimator (fit, predict, evaluate beside the copy baseline, save/load), the CLI
(dlforge train --source --target, predict, evaluate, info) and bad input. The task is made up
here with a known answer: words to upper case."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch

import dlforge
from dlforge import ConfigError, DataError, NotFittedError, Seq2Seq
from dlforge.cli import main
from dlforge.models.seq2seq import (
    EncoderDecoder,
    EncoderDecoderConfig,
    beam_search,
    greedy_search,
)
from dlforge.train.seq2seq import _loss, text_metrics

WORDS = ["red", "green", "blue", "cat", "dog", "sun", "moon", "tree", "sky", "sea"]
TINY = dict(d_model=32, layers=1, heads=2, epochs=4, batch_size=16, lr=5e-3, dropout=0.0,
            beam_size=2, precision="fp32", device="cpu", validation_split=0.2, verbose=0)
FLAGS = ["--d-model", "32", "--layers", "1", "--heads", "2", "--epochs", "2", "--batch-size",
         "16", "--lr", "5e-3", "--beam-size", "2", "--precision", "fp32", "--device", "cpu",
         "--quiet"]


def upper_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    src = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) for _ in range(n)]
    return src, [s.upper() for s in src]


@pytest.fixture(scope="module")
def fitted(one_thread, tmp_path_factory) -> tuple[Seq2Seq, Path]:
    src, tgt = upper_pairs(120)
    run = tmp_path_factory.mktemp("s2s") / "run"
    return Seq2Seq(**TINY).fit(src, tgt, out=run), run


@pytest.fixture
def pairs_csv(tmp_path: Path) -> Path:
    src, tgt = upper_pairs(60, seed=1)
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"en": src, "up": tgt}).to_csv(path, index=False)
    return path


def _batch(model: EncoderDecoder, texts: list[str], s2s: Seq2Seq):
    ids = s2s.backend_.encode_sources(texts)
    width = max(map(len, ids))
    src = torch.zeros(len(ids), width, dtype=torch.long)
    for i, row in enumerate(ids):
        src[i, :len(row)] = torch.tensor(row)
    return src, src != 0


# ---------------------------------------------------------------------------------- decoding
def test_cached_and_uncached_decoding_give_identical_tokens(fitted):
    s2s, _ = fitted
    model = s2s.backend_.model
    src, mask = _batch(model, ["red cat", "blue sky sea moon", "dog"], s2s)
    n = model.config.max_target
    assert greedy_search(model, src, mask, n) == greedy_search(model, src, mask, n,
                                                                 use_cache=False)
    assert beam_search(model, src, mask, 3, n) == beam_search(model, src, mask, 3, n,
                                                              use_cache=False)
    # A random model too: long generations that never stop early.
    torch.manual_seed(0)
    rand = EncoderDecoder(EncoderDecoderConfig(source_vocab=40, target_vocab=40, max_source=9,
                                               max_target=24, d_model=16, layers=2, heads=2,
                                               ffn_dim=32, dropout=0.0)).eval()
    src = torch.randint(3, 40, (3, 9))
    mask = torch.ones_like(src, dtype=torch.bool)
    mask[1, 6:] = False
    assert greedy_search(rand, src, mask, 24) == greedy_search(rand, src, mask, 24,
                                                               use_cache=False)
    assert beam_search(rand, src, mask, 4, 24) == beam_search(rand, src, mask, 4, 24,
                                                              use_cache=False)


def test_beam_size_one_is_greedy(fitted):
    s2s, _ = fitted
    model = s2s.backend_.model
    src, mask = _batch(model, ["red cat", "blue sky sea moon", "dog", "tree sun"], s2s)
    for n in (1, 3, model.config.max_target):
        assert beam_search(model, src, mask, 1, n) == greedy_search(model, src, mask, n)
    texts = ["red cat", "green dog sky"]
    assert s2s.predict(texts, beam_size=1) == s2s.predict(texts, beam_size=1, use_cache=False)


def test_label_smoothing_is_the_smoothed_cross_entropy():
    torch.manual_seed(0)
    logits, labels = torch.randn(2, 3, 5), torch.tensor([[1, 2, -100], [0, 4, 3]])
    logp = torch.log_softmax(logits, -1)[labels != -100]  # (4, V)
    keep = labels[labels != -100]
    want = (0.9 * -logp.gather(1, keep[:, None]).squeeze(1) - 0.1 * logp.mean(1)).mean()
    assert torch.allclose(_loss(logits, labels, 0.1), want, atol=1e-6)
    assert _loss(logits, labels, 0.1) > _loss(logits, labels, 0.0) - 1.0  # smoothed differs
    assert not torch.allclose(_loss(logits, labels, 0.1), _loss(logits, labels, 0.0))


# ---------------------------------------------------------------------------------- estimator
def test_fit_scores_beside_the_copy_baseline_and_learns(fitted):
    s2s, _ = fitted
    val = s2s.metrics_["validation"]
    for side in ("model", "copy_baseline"):
        assert {"bleu", "chrf", "exact_match", "signature"} <= set(val[side])
    assert val["model"]["signature"]["bleu"].startswith("nrefs:1|")
    assert val["copy_baseline"]["exact_match"] == 0.0  # upper case is never the source
    assert val["model"]["chrf"] > val["copy_baseline"]["chrf"]
    assert s2s.data_report_["splits"] == {"train": 96, "validation": 24, "test": 0}
    assert len(s2s.history_) == 4 and s2s.metrics_["best_epoch"] >= 1
    out = s2s.predict(["red cat", "sky"])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)


def test_save_load_predicts_identically(fitted):
    s2s, run = fitted
    files = json.loads((run / "dlforge.json").read_text())
    assert files["task"] == "seq2seq" and files["estimator"] == "Seq2Seq"
    assert {"config.yaml", "model.safetensors", "model.json", "tokenizer.json", "metrics.json",
            "data.json", "history.csv"} <= set(files["files"])
    again = dlforge.load(run)
    assert isinstance(again, Seq2Seq)
    texts = ["red cat", "green dog sky moon", "sea"]
    assert again.predict(texts) == s2s.predict(texts)
    assert again.predict(texts, beam_size=1) == s2s.predict(texts, beam_size=1)
    assert Seq2Seq.load(run).metrics_ == s2s.metrics_


def test_evaluate_returns_metrics_and_copy_baseline(fitted):
    s2s, _ = fitted
    src, tgt = upper_pairs(20, seed=5)
    got = s2s.evaluate(src, tgt)
    assert got["rows"] == 20 and got["copy_baseline"]["exact_match"] == 0.0
    assert got["model"]["bleu"] >= 0.0
    same = s2s.evaluate(tgt, tgt)["copy_baseline"]
    assert same["bleu"] == 100.0 and same["exact_match"] == 100.0


def test_same_seed_same_metrics(fitted):
    s2s, _ = fitted
    src, tgt = upper_pairs(120)
    again = Seq2Seq(**TINY).fit(src, tgt)
    def losses(h: list[dict]) -> list[tuple]:
        return [(r["train_loss"], r["val_loss"]) for r in h]

    assert losses(again.history_) == losses(s2s.history_)
    assert again.metrics_["validation"] == s2s.metrics_["validation"]


def test_learned_positions_separate_vocabularies_untied(one_thread, tmp_path):
    src, tgt = upper_pairs(40)
    s2s = Seq2Seq(**{**TINY, "epochs": 1}, positions="learned", shared_vocab=False,
                  tie_embeddings=False).fit(src, tgt, out=tmp_path / "run")
    files = json.loads((tmp_path / "run" / "dlforge.json").read_text())["files"]
    assert {"source_tokenizer.json", "target_tokenizer.json"} <= set(files)
    model = s2s.backend_.model
    assert model.src_tok is not None and model.head is not None
    assert dlforge.load(tmp_path / "run").predict(["red"]) == s2s.predict(["red"])


def test_sklearn_contract():
    from sklearn.base import clone

    s2s = Seq2Seq(d_model=64, beam_size=3)
    assert clone(s2s).get_params()["beam_size"] == 3
    assert s2s.set_params(beam_size=5).beam_size == 5
    with pytest.raises(TypeError, match="valid arguments are: .*beam_size"):
        Seq2Seq(beam=3)


def test_text_metrics_exact_match_ignores_surrounding_space():
    got = text_metrics(["Paris ", "London"], ["Paris", "Rome"])
    assert got["exact_match"] == 50.0 and "version:" in got["signature"]["chrf"]


# ---------------------------------------------------------------------------------- bad input
def test_beam_size_zero(fitted, pairs_csv, tmp_path, capsys):
    s2s, _ = fitted
    with pytest.raises(ConfigError, match="beam_size: .*at least 1.*got 0"):
        s2s.predict(["red"], beam_size=0)
    with pytest.raises(ConfigError, match="beam_size"):
        Seq2Seq(beam_size=0).fit(*upper_pairs(10))
    code = main(["train", "--data", str(pairs_csv), "--source", "en", "--target", "up",
                 "--beam-size", "0", "--out", str(tmp_path / "r")])
    assert code == 2 and "beam_size" in capsys.readouterr().err


def test_source_longer_than_the_model_takes(fitted):
    s2s, _ = fitted
    most = s2s.backend_.max_source
    long = " ".join(["green"] * (most + 5))
    with pytest.raises(DataError, match=rf"sources\[1\]: \d+ tokens, longer than the {most} "):
        s2s.predict(["red", long])


def test_empty_target_column(pairs_csv, tmp_path, capsys):
    df = pd.read_csv(pairs_csv)
    df["up"] = ""
    bad = tmp_path / "bad.csv"
    df.to_csv(bad, index=False)
    code = main(["train", "--data", str(bad), "--source", "en", "--target", "up", "--out",
                 str(tmp_path / "r"), *FLAGS])
    err = capsys.readouterr().err
    assert code == 2 and "bad.csv" in err and "target column 'up' is empty" in err
    assert len(err.strip().splitlines()) == 1
    with pytest.raises(DataError, match="target column 'targets' is empty"):
        Seq2Seq(**TINY).fit(["a", "b"], ["", None])


def test_other_bad_input(fitted, tmp_path):
    s2s, _ = fitted
    with pytest.raises(DataError, match="3 sources but 2 targets"):
        Seq2Seq(**TINY).fit(["a", "b", "c"], ["A", "B"])
    with pytest.raises(DataError, match="one string"):
        s2s.predict("red cat")
    with pytest.raises(DataError, match=r"sources\[0\]: empty"):
        s2s.predict([""])
    with pytest.raises(DataError, match=r"targets\[1\]: expected a string, got int"):
        Seq2Seq(**TINY).fit(["a", "b"], ["A", 3])
    with pytest.raises(NotFittedError):
        Seq2Seq().predict(["a"])
    with pytest.raises(ConfigError, match="max_new_tokens"):
        s2s.predict(["red"], max_new_tokens=10_000)
    with pytest.raises(ConfigError, match="d_model .* multiple of heads"):
        Seq2Seq(d_model=30, heads=4).fit(*upper_pairs(10))
    with pytest.raises(DataError, match="column 'source' not found; columns are: en, up"):
        Seq2Seq(**TINY).fit(pd.DataFrame({"en": ["a"], "up": ["A"]}))
    with pytest.raises(DataError, match="give the targets too"):
        Seq2Seq(**TINY).fit(["a", "b"])


# ---------------------------------------------------------------------------------- CLI
def test_cli_train_predict_evaluate_info(one_thread, pairs_csv, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", str(pairs_csv), "--source", "en", "--target", "up",
                 "--out", str(run), *FLAGS]) == 0
    out = capsys.readouterr().out
    assert "validation: bleu" in out and "(copy " in out and "sacreBLEU signatures" in out
    assert main(["predict", str(run), "--data", str(pairs_csv), "--out",
                 str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert list(pred.columns) == ["en", "up", "prediction"] and len(pred) == 60
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(pairs_csv)]) == 0
    assert "pairs.csv: bleu" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--data", str(pairs_csv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["copy_baseline"]["exact_match"] == 0.0
    assert main(["info", str(run)]) == 0
    assert "sequence to sequence" in capsys.readouterr().out


def test_cli_flags_that_do_not_apply(pairs_csv, tmp_path, capsys):
    base = ["train", "--data", str(pairs_csv), "--out", str(tmp_path / "r")]
    assert main([*base, "--source", "en", "--target", "up", "--label", "x"]) == 2
    assert "--label: not a setting of a sequence-to-sequence run" in capsys.readouterr().err
    assert main([*base, "--source", "en", "--target", "up", "--text", "x"]) == 2
    assert "--text: not for a sequence-to-sequence run" in capsys.readouterr().err
    assert main([*base, "--text", "en", "--label", "up", "--beam-size", "3"]) == 2
    assert "--beam-size: only for sequence to sequence" in capsys.readouterr().err
    assert main([*base, "--source", "en"]) == 2
    assert "missing --target" in capsys.readouterr().err
    assert main([*base, "--source", "en", "--target", "nope"]) == 2
    assert "column 'nope' not found" in capsys.readouterr().err


def test_cli_yaml_config(one_thread, pairs_csv, tmp_path, capsys):
    cfg = tmp_path / "s2s.yaml"
    cfg.write_text(f"seq2seq:\n  data: {pairs_csv.name}\n  source: en\n  target: up\n"
                   "  d_model: 32\n  layers: 1\n  heads: 2\n  epochs: 1\n  beam_size: 1\n"
                   "  precision: fp32\n")
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert dlforge.load(tmp_path / "run").config_.beam_size == 1


# ---------------------------------------------------------------------------------- serving
def test_serve_predict_returns_text_v1_and_v2(fitted):
    import httpx

    from dlforge.serve.app import ServeSettings
    from dlforge.serve.models import served_run
    from tests.serving import Server

    s2s, run = fitted
    served = served_run(run, name="upper")
    texts = ["red cat", "blue sky sea", "dog"]
    want = s2s.predict(texts)
    with Server([served], ServeSettings(max_delay_ms=2)) as srv, httpx.Client(
            base_url=srv.url) as c:
        meta = c.get("/v2/models/upper").json()
        assert meta["inputs"][0] == {"name": "source", "datatype": "BYTES", "shape": [-1],
                                     "kind": "text"}
        r = c.post("/v1/models/upper/predict",
                   json={"instances": [{"source": texts[0]}, texts[1], {"source": texts[2]}]})
        assert r.status_code == 200, r.text
        assert [p["text"] for p in r.json()["predictions"]] == want
        infer = c.post("/v2/models/upper/infer", json={"inputs": [
            {"name": "source", "shape": [3], "datatype": "BYTES", "data": texts}]})
        assert infer.status_code == 200, infer.text
        out = infer.json()["outputs"]
        assert out[0]["name"] == "text" and out[0]["datatype"] == "BYTES"
        assert out[0]["data"] == want
        long = " ".join(["green"] * (s2s.backend_.max_source + 3))
        bad = c.post("/v1/models/upper/predict", json={"instances": ["red", long]})
        assert bad.status_code == 422
        assert "instances[1]" in bad.text and f"{s2s.backend_.max_source} this model" in bad.text
        assert c.post("/v1/models/upper/predict",
                      json={"instances": [{"text": "x"}]}).status_code == 422
        assert c.post("/v1/models/upper/predict", json={"instances": [""]}).status_code == 422


# ---------------------------------------------------------------------------------- pretrained
def _tiny_pretrained(kind: str, folder: Path, texts: list[str]) -> Path:
    """A tiny random T5 or BART saved with save_pretrained, and a byte-level BPE tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        PreTrainedTokenizerFast,
        T5Config,
        T5ForConditionalGeneration,
    )

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>", "<s>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bpe.post_processor = processors.TemplateProcessing(single="$A </s>",
                                                       special_tokens=[("</s>", 1)])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="</s>",
                                  unk_token="<unk>", bos_token="<s>")
    torch.manual_seed(0)
    if kind == "t5":
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=len(tok), d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    else:
        model = BartForConditionalGeneration(BartConfig(
            vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=1,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
            decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=0, eos_token_id=1,
            bos_token_id=3, decoder_start_token_id=1, forced_eos_token_id=1))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["t5", "bart"])
def test_fine_tune_a_pretrained_folder(one_thread, kind, tmp_path):
    src, tgt = upper_pairs(40)
    folder = _tiny_pretrained(kind, tmp_path / kind, src + tgt)
    s2s = Seq2Seq(str(folder), epochs=1, batch_size=16, lr=1e-3, beam_size=2, verbose=0,
                  precision="fp32", device="cpu").fit(src, tgt, out=tmp_path / "run")
    assert s2s.metrics_["model"] == "pretrained" and "copy_baseline" in s2s.metrics_["validation"]
    files = json.loads((tmp_path / "run" / "dlforge.json").read_text())["files"]
    assert "pretrained/model.safetensors" in files and "pretrained/config.json" in files
    again = dlforge.load(tmp_path / "run")
    texts = ["red cat", "sky"]
    assert again.predict(texts) == s2s.predict(texts)
    assert again.predict(texts, beam_size=1) == s2s.predict(texts, beam_size=1)
    if kind == "bart":  # learned positions: a hard limit the error names
        with pytest.raises(DataError, match=r"sources\[0\]: \d+ tokens, longer than the 32 "):
            again.predict([" ".join(["green"] * 40)])
    assert again.evaluate(src[:5], tgt[:5])["rows"] == 5


def test_without_sacrebleu_fit_keeps_exact_match_and_evaluate_names_the_extra(
        fitted, monkeypatch, capsys, pairs_csv):
    import sys

    from dlforge import MissingExtraError

    s2s, run = fitted
    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # as if not installed
    src, tgt = upper_pairs(30)
    quick = Seq2Seq(**{**TINY, "epochs": 1}).fit(src, tgt)
    val = quick.metrics_["validation"]
    assert set(val["model"]) == {"exact_match", "rows"} and "dlforge[seq2seq]" in val["note"]
    with pytest.raises(MissingExtraError, match=r"pip install 'dlforge\[seq2seq\]'"):
        s2s.evaluate(src, tgt)
    assert main(["evaluate", str(run), "--data", str(pairs_csv), "--text", "en", "--label",
                 "up"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: BLEU and chrF (sacrebleu) needs the seq2seq extra, which is not installed: "
        "pip install 'dlforge[seq2seq]'"]


def test_cached_steps_give_the_teacher_forced_logits(fitted):
    """One position at a time through the KV cache: the logits the training forward pass
    gives for the whole target at once."""
    from dlforge.models.seq2seq import Decoding

    s2s, _ = fitted
    model = s2s.backend_.model
    src, mask = _batch(model, ["red cat sky", "dog"], s2s)
    tgt_in = torch.tensor([[1, 5, 9, 12, 7], [1, 8, 3, 4, 6]])
    with torch.no_grad():
        full = model(src, mask, tgt_in)  # (B, T, V)
        state = Decoding(model, src, mask, 1, use_cache=True)
        steps = torch.stack([state.step(tgt_in[:, :t + 1]) for t in range(5)], dim=1)
    never = torch.isinf(steps)  # [PAD] and [BOS] are never generated
    assert torch.allclose(steps[~never], full[~never], atol=1e-5)
