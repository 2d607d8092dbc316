"""Pretrained Hugging Face encoders: a tiny random BERT saved in a temporary folder, no network."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

os.environ["HF_HUB_OFFLINE"] = "1"
transformers = pytest.importorskip("transformers")

from dlforge.errors import ConfigError, DataError  # noqa: E402
from dlforge.models.pretrained import (  # noqa: E402
    PretrainedEncoder,
    PretrainedTokenizer,
    build_encoder_from_config,
    check_pretrained_folder,
    find_layer_list,
    is_pretrained_path,
    split_parameters,
)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "a", "movie", "film", "was", "is", "good", "bad", "great", "boring", "i", "it",
         "loved", "hated", "plot", "##s", "##ly", "."]
VOCAB = SPECIALS + WORDS
PAD, UNK, CLS, SEP = 0, 1, 2, 3


def _save_tokenizer(folder: Path) -> None:
    """A WordPiece tokenizer from a hand-written vocab.txt, saved with save_pretrained."""
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    # transformers 5: BertTokenizer(Fast) takes ``vocab=`` (a dict or a vocab.txt path); the old
    # ``vocab_file=`` keyword is silently ignored and leaves only the five special tokens.
    tok = transformers.BertTokenizer(vocab=str(vocab_file))
    assert len(tok) == len(VOCAB)
    tok.save_pretrained(str(folder))


def _bert_config() -> transformers.BertConfig:
    return transformers.BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=64,
                                   max_position_embeddings=64)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    transformers.BertModel(_bert_config()).save_pretrained(str(folder))
    _save_tokenizer(folder)
    return folder


def _copy_without(src: Path, dst: Path, *names: str) -> Path:
    shutil.copytree(src, dst)
    for name in names:
        (dst / name).unlink()
    return dst


def _batch(ids: list[np.ndarray], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    for row, x in enumerate(ids):
        input_ids[row, : len(x)] = torch.from_numpy(x)
    lengths = torch.tensor([len(x) for x in ids])
    return input_ids, torch.arange(width)[None, :] < lengths[:, None]


def test_is_pretrained_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for family in ("transformer", "cnn", "rnn", "mlp"):
        assert not is_pretrained_path(family)
    for path in ("./bert", "~/models/bert", "/opt/bert", "models/bert", ".bert", "..\\bert"):
        assert is_pretrained_path(path)
    monkeypatch.chdir(tmp_path)
    assert not is_pretrained_path("bert")
    (tmp_path / "bert").mkdir()
    (tmp_path / "cnn").mkdir()
    assert is_pretrained_path("bert")
    assert not is_pretrained_path("cnn")  # a family name wins over a folder of that name


def test_check_pretrained_folder_accepts_and_resolves(bert_dir: Path) -> None:
    assert check_pretrained_folder(bert_dir) == bert_dir.resolve()


@pytest.mark.parametrize("missing, message", [
    (("config.json",), "config.json is missing"),
    (("model.safetensors",), r"no model weights \(model.safetensors or pytorch_model.bin\)"),
    (("tokenizer.json", "vocab.txt"), "no tokenizer files"),
])
def test_check_pretrained_folder_names_what_is_missing(bert_dir: Path, tmp_path: Path,
                                                       missing: tuple[str, ...],
                                                       message: str) -> None:
    folder = _copy_without(bert_dir, tmp_path / "model", *missing)
    with pytest.raises(ConfigError, match=message) as info:
        check_pretrained_folder(folder)
    assert str(folder) in str(info.value) and "\n" not in str(info.value)


def test_check_pretrained_folder_missing_or_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="folder not found"):
        check_pretrained_folder(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_pretrained_folder(tmp_path / "file.txt")


def test_encoder_without_weights_or_config_is_config_error(bert_dir: Path,
                                                            tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config.json is missing"):
        PretrainedEncoder(_copy_without(bert_dir, tmp_path / "a", "config.json"))
    with pytest.raises(ConfigError, match="no model weights"):
        PretrainedEncoder(_copy_without(bert_dir, tmp_path / "b", "model.safetensors"))


def test_encoder_refuses_pickle_only_weights(bert_dir: Path, tmp_path: Path) -> None:
    folder = _copy_without(bert_dir, tmp_path / "bin", "model.safetensors")
    torch.save(transformers.BertModel(_bert_config()).state_dict(), folder / "pytorch_model.bin")
    check_pretrained_folder(folder)  # weights are present, just not in a format we load
    with pytest.raises(ConfigError, match="safetensors only") as info:
        PretrainedEncoder(folder)
    assert "safe_serialization=True" in str(info.value) and "\n" not in str(info.value)


def test_tokenizer_adds_special_tokens_and_truncates(bert_dir: Path, tmp_path: Path) -> None:
    tok = PretrainedTokenizer(bert_dir, max_length=16)
    assert tok.vocab_size == len(VOCAB)
    assert tok.pad_id == PAD and tok.pad_value == PAD
    ids = tok.encode(["the movie was good", "I loved the films", "", "zzz"])
    assert all(x.dtype == np.int64 for x in ids)
    word = {w: i for i, w in enumerate(VOCAB)}
    assert ids[0].tolist() == [CLS, word["the"], word["movie"], word["was"], word["good"], SEP]
    assert ids[1].tolist() == [CLS, word["i"], word["loved"], word["the"], word["film"],
                               word["##s"], SEP]
    assert ids[2].tolist() == [CLS, SEP]
    assert ids[3].tolist() == [CLS, UNK, SEP]
    short = PretrainedTokenizer(bert_dir, max_length=4).encode(["the movie was good"])[0]
    assert short.tolist() == [CLS, word["the"], word["movie"], SEP]
    tok.save(tmp_path / "saved")  # a run directory carries the tokenizer files
    again = PretrainedTokenizer(tmp_path / "saved", max_length=16)  # no config.json needed
    assert [x.tolist() for x in again.encode(["I loved the films"])] == [ids[1].tolist()]


def test_tokenizer_bad_input_and_options(bert_dir: Path) -> None:
    with pytest.raises(ConfigError, match="max_length=2 leaves no room"):
        PretrainedTokenizer(bert_dir, max_length=2)
    with pytest.raises(DataError, match="text #1 is NoneType"):
        PretrainedTokenizer(bert_dir, max_length=8).encode(["good", None])  # type: ignore[list-item]


def test_encoder_loads_the_saved_weights(bert_dir: Path) -> None:
    enc = PretrainedEncoder(bert_dir)
    saved = transformers.BertModel.from_pretrained(str(bert_dir), local_files_only=True)
    assert enc.out_dim == 32 and enc.num_layers == 2
    for key, value in saved.state_dict().items():
        assert torch.equal(enc.model.state_dict()[key], value), key


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_encoder_shape_determinism_and_padding(bert_dir: Path, pooling: str) -> None:
    tok = PretrainedTokenizer(bert_dir, max_length=16)
    enc = PretrainedEncoder(bert_dir, pooling=pooling).eval()
    ids = tok.encode(["the movie was good", "I loved the films . it is great", "bad"])
    input_ids, mask = _batch(ids)
    with torch.no_grad():
        out = enc(input_ids, mask)
        assert out.shape == (3, enc.out_dim) and torch.isfinite(out).all()
        assert torch.equal(out, enc(input_ids, mask))
        again = PretrainedEncoder(bert_dir, pooling=pooling).eval()
        torch.testing.assert_close(again(input_ids, mask), out)
        for i, x in enumerate(ids):  # each text alone, without padding, gives the same vector
            alone = enc(*_batch([x]))
            torch.testing.assert_close(alone[0], out[i], atol=1e-5, rtol=1e-5)
        # the pad id in the batch does not matter: masked positions are re-padded
        torch.testing.assert_close(enc(*_batch(ids, pad=7)), out, atol=1e-6, rtol=1e-6)


def test_freeze_all(bert_dir: Path) -> None:
    enc = PretrainedEncoder(bert_dir, freeze=True)
    assert not any(p.requires_grad for p in enc.parameters())


def test_freeze_layers_freezes_embeddings_and_bottom_layers(bert_dir: Path) -> None:
    enc = PretrainedEncoder(bert_dir, freeze_layers=1)
    frozen = {n for n, p in enc.model.named_parameters() if not p.requires_grad}
    trainable = {n for n, p in enc.model.named_parameters() if p.requires_grad}
    assert frozen and trainable
    assert all(n.startswith(("embeddings.", "encoder.layer.0.")) for n in frozen)
    assert all(n.startswith(("encoder.layer.1.", "pooler.")) for n in trainable)
    assert any(n.startswith("embeddings.") for n in frozen)
    assert any(n.startswith("encoder.layer.0.") for n in frozen)
    assert find_layer_list(enc.model) is enc.model.encoder.layer


def test_freeze_too_many_layers_or_bad_options(bert_dir: Path) -> None:
    with pytest.raises(ConfigError, match="freeze_layers=5 .* only 2 layers"):
        PretrainedEncoder(bert_dir, freeze_layers=5)
    with pytest.raises(ConfigError, match="freeze_layers must be"):
        PretrainedEncoder(bert_dir, freeze_layers=-1)
    with pytest.raises(ConfigError, match="pooling must be"):
        PretrainedEncoder(bert_dir, pooling="max")  # type: ignore[arg-type]


def test_build_from_config_only_matches_architecture(bert_dir: Path, tmp_path: Path) -> None:
    loaded = PretrainedEncoder(bert_dir, pooling="mean")
    loaded.save_config(tmp_path / "run")  # config.json only: no weights, no tokenizer
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]
    built = build_encoder_from_config(tmp_path / "run", pooling="mean")
    assert built.out_dim == loaded.out_dim
    a, b = loaded.state_dict(), built.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape and a[k].dtype == b[k].dtype for k in a)
    built.load_state_dict(a)  # a saved run's weights fit the rebuilt encoder
    ids, mask = _batch([np.array([CLS, 5, 6, SEP])])
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(ids, mask), loaded.eval()(ids, mask))


def test_split_parameters(bert_dir: Path) -> None:
    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = PretrainedEncoder(bert_dir, freeze_layers=1)
            self.head = nn.Linear(self.encoder.out_dim, 3)

    model = Classifier()
    encoder, head = split_parameters(model)
    assert {id(p) for p in head} == {id(p) for p in model.head.parameters()}
    assert {id(p) for p in encoder} == {
        id(p) for p in model.encoder.parameters() if p.requires_grad}
    assert all(p.requires_grad for p in encoder)
    n_trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(encoder) + len(head) == n_trainable


# --------------------------------------------------------------- through the estimator and CLI
TOY_WORDS = {"pos": ["good", "great", "loved"], "neg": ["bad", "boring", "hated"]}


def _toy_reviews(n: int = 120, seed: int = 0) -> tuple[list[str], list[str]]:
    """Texts in the tiny vocabulary whose label is given away by one cue word."""
    rng = np.random.default_rng(seed)
    filler = ["the", "a", "movie", "film", "was", "is", "it", "i", "plot", "."]
    texts, labels = [], []
    for _ in range(n):
        y = str(rng.choice(["pos", "neg"]))
        words = list(rng.choice(filler, size=int(rng.integers(3, 8))))
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(TOY_WORDS[y])))
        texts.append(" ".join(words))
        labels.append(y)
    return texts, labels


def _toy_reviews_csv(tmp_path: Path, n: int = 60) -> Path:
    """:func:`_toy_reviews` as a CSV (columns review, label) for the CLI."""
    import pandas as pd

    texts, labels = _toy_reviews(n)
    csv = tmp_path / "r.csv"
    pd.DataFrame({"review": texts, "label": labels}).to_csv(csv, index=False)
    return csv


def test_fine_tune_save_load_predict(bert_dir, tmp_path):
    from dlforge import TextClassifier, load

    texts, labels = _toy_reviews()
    # A random tiny BERT learns the cue word quickly with mean pooling.
    clf = TextClassifier(model=str(bert_dir), pooling="mean", max_length=16, epochs=6,
                         batch_size=16, lr=3e-3, patience=0, verbose=0,
                         precision="fp32").fit(texts, labels)
    assert clf.config_.model.name == "pretrained" and clf.config_.model.path == str(bert_dir)
    assert clf.metrics_["validation"]["accuracy"] >= 0.75
    clf.save(tmp_path / "run")
    assert (tmp_path / "run" / "pretrained" / "text" / "config.json").is_file()
    again = load(tmp_path / "run")
    assert np.array_equal(again.predict_proba(texts), clf.predict_proba(texts))


def test_freeze_trains_the_head_only_and_head_lr(bert_dir):
    from dlforge import TextClassifier
    from dlforge.models.pretrained import PretrainedEncoder

    texts, labels = _toy_reviews(40)
    original = PretrainedEncoder(bert_dir).state_dict()
    clf = TextClassifier(model=str(bert_dir), freeze=True, max_length=16, epochs=1,
                         batch_size=16, verbose=0, precision="fp32").fit(texts, labels)
    enc = clf.model_.encoders["text"]
    assert all(torch.equal(v, original[k]) for k, v in enc.state_dict().items())
    assert not torch.equal(clf.model_.head.out.weight, torch.zeros_like(
        clf.model_.head.out.weight))
    from dlforge.config import TrainConfig
    from dlforge.train.trainer import make_optimizer

    opt = make_optimizer(clf.model_, TrainConfig(lr=2e-5, weight_decay=0.01), head_lr=1e-3)
    assert sorted({g["lr"] for g in opt.param_groups}) == [1e-3]  # frozen encoder: no group
    part = TextClassifier(model=str(bert_dir), freeze_layers=1, max_length=16, epochs=1,
                          verbose=0).fit(texts, labels)
    opt = make_optimizer(part.model_, TrainConfig(lr=2e-5, weight_decay=0.01), head_lr=1e-3)
    assert sorted({g["lr"] for g in opt.param_groups}) == [2e-5, 1e-3]


def test_cli_with_a_pretrained_folder_and_bad_folders(bert_dir, tmp_path, capsys):
    import pandas as pd

    from tests.test_cli import assert_user_error, run_cli

    csv = _toy_reviews_csv(tmp_path)
    code, _, err = run_cli(capsys, "train", "--data", csv, "--text", "review", "--label",
                           "label", "--model", bert_dir, "--max-length", "16", "--epochs", "1",
                           "--freeze-layers", "1", "--head-lr", "1e-3", "--quiet", "--out",
                           tmp_path / "run")
    assert code == 0, err
    code, _, err = run_cli(capsys, "predict", tmp_path / "run", "--data", csv, "--out",
                           tmp_path / "p.csv")
    assert code == 0 and len(pd.read_csv(tmp_path / "p.csv")) == 60, err
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "run", "--data", csv)
    assert code == 0 and "accuracy" in out, err
    empty = tmp_path / "empty_model"
    empty.mkdir()
    code, _, err = run_cli(capsys, "train", "--data", csv, "--text", "review", "--label",
                           "label", "--model", empty, "--quiet", "--out", tmp_path / "r2")
    assert_user_error(code, err, "config.json is missing")
    assert not (tmp_path / "r2").exists()
    no_weights = tmp_path / "no_weights"
    shutil.copytree(bert_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    code, _, err = run_cli(capsys, "train", "--data", csv, "--text", "review", "--label",
                           "label", "--model", no_weights, "--quiet", "--out", tmp_path / "r3")
    assert_user_error(code, err, "no model weights")


# ------------------------------------------------------- the few-sample fine-tuning recipe
def test_layer_decay_gives_each_layer_a_lower_rate_than_the_one_above(bert_dir: Path) -> None:
    from dlforge.config import TrainConfig
    from dlforge.models.pretrained import decayed_parameter_sets
    from dlforge.train.trainer import make_optimizer

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = PretrainedEncoder(bert_dir)
            self.head = nn.Linear(self.encoder.out_dim, 2)

    model = Classifier()
    groups = model.encoder.layer_groups()  # embeddings, layer 0, layer 1, the pooler
    assert len(groups) == 4
    assert {id(p) for p in groups[1]} == {id(p) for p in
                                          model.encoder.model.encoder.layer[0].parameters()}
    assert {id(p) for p in groups[0]} >= {id(p) for p in
                                          model.encoder.model.embeddings.parameters()}
    assert sum(len(g) for g in groups) == len(list(model.encoder.parameters()))
    sets = decayed_parameter_sets(model, 1e-4, 0.5, head_lr=1e-3)
    rates = {id(p): lr for params, lr in sets for p in params}
    layer = model.encoder.model.encoder.layer
    assert rates[id(model.head.weight)] == 1e-3
    assert rates[id(next(layer[1].parameters()))] == pytest.approx(1e-4)
    assert rates[id(next(layer[0].parameters()))] == pytest.approx(5e-5)
    assert rates[id(model.encoder.model.embeddings.word_embeddings.weight)] == \
        pytest.approx(2.5e-5)
    assert rates[id(model.encoder.model.pooler.dense.weight)] == pytest.approx(1e-4)
    opt = make_optimizer(model, TrainConfig(lr=1e-4, weight_decay=0.0), layer_decay=0.5)
    assert sorted({g["lr"] for g in opt.param_groups}) == pytest.approx([2.5e-5, 5e-5, 1e-4])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_reinit_layers_reinitialises_the_top_layers_only(bert_dir: Path) -> None:
    torch.manual_seed(1)
    original = PretrainedEncoder(bert_dir).model.state_dict()
    enc = PretrainedEncoder(bert_dir, reinit_layers=1)
    new = enc.model.state_dict()
    changed = {k for k in original if not torch.equal(original[k], new[k])}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)
    assert any(k.endswith("attention.self.query.weight") for k in changed)
    with pytest.raises(ConfigError, match="reinit_layers=3 .* only 2 layers"):
        PretrainedEncoder(bert_dir, reinit_layers=3)


def test_restarts_keep_the_best_run_on_validation(bert_dir, capsys):
    from dlforge import TextClassifier

    texts, labels = _toy_reviews(60)
    common = dict(model=str(bert_dir), max_length=16, epochs=2, batch_size=16, lr=1e-3,
                  patience=0, precision="fp32", baseline_weight=0)
    runs = [TextClassifier(seed=s, restarts=1, verbose=0, **common).fit(texts, labels)
            for s in (0, 1)]
    scores = [r.metrics_["validation"]["accuracy"] for r in runs]
    best = TextClassifier(seed=0, restarts=2, verbose=1, **common).fit(texts, labels)
    err = capsys.readouterr().err
    assert "restart 1/2 (seed 0)" in err and "restart 2/2 (seed 1)" in err
    assert "restarts: kept restart" in err
    assert best.metrics_["validation"]["accuracy"] == max(scores)
    kept = 1 if "kept restart 2" in err else 0
    assert np.allclose(best.predict_proba(texts), runs[kept].predict_proba(texts), atol=1e-6)


def test_the_recipe_restarts_a_pretrained_model_on_few_rows_only():
    from dlforge.config import TrainConfig
    from dlforge.train.recipe import choose_recipe

    assert choose_recipe(TrainConfig(), 400, "pretrained")[0].restarts == 3
    assert choose_recipe(TrainConfig(), 5000, "pretrained")[0].restarts == 1
    assert choose_recipe(TrainConfig(), 400, "cnn")[0].restarts == 1
    assert choose_recipe(TrainConfig(restarts=2), 400, "pretrained")[0].restarts == 2


def test_a_run_with_restarts_keeps_the_kept_restarts_checkpoints(bert_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    from tests.test_cli import run_cli

    csv = _toy_reviews_csv(tmp_path)
    code, _, err = run_cli(capsys, "train", "--data", csv, "--text", "review", "--label",
                           "label", "--model", bert_dir, "--max-length", "16", "--epochs", "2",
                           "--lr", "1e-3", "--restarts", "2", "--baseline-weight", "0",
                           "--precision", "fp32", "--out", tmp_path / "run")
    assert code == 0, err
    assert "restarts: kept restart" in err
    run = tmp_path / "run"
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert not (run / "restarts").exists()
    best = load_file(run / "checkpoints" / "best.safetensors")
    model = load_file(run / "model.safetensors")
    shared = [k for k in model if k in best]
    assert shared and all(torch.equal(best[k], model[k]) for k in shared)
