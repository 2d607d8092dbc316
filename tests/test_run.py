import json
import shutil

import pytest
import torch

from dlforge import load
from dlforge.config import validate_config
from dlforge.errors import RunDirError
from dlforge.estimators import files as api
from dlforge.run import check_run, partial_dir
from dlforge.train.callbacks import Callback


def test_run_directory_contents(trained_run):
    run, _ = trained_run
    names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert {"dlforge.json", "config.yaml", "model.safetensors", "features.json",
            "tokenizers/review.json", "labels.json",
            "metrics.json", "data.json", "history.csv", "plots/curves.png",
            "plots/confusion_matrix.png", "checkpoints/last.safetensors",
            "checkpoints/best.safetensors", "checkpoints/train_state.pt"} <= names
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["validation"]["baseline"]["strategy"] == "majority class"
    text = (run / "config.yaml").read_text()  # resolved: the recipe's choices filled in
    assert "warmup: 0.1" in text and "patience: 3" in text and "null" not in text.split(
        "train:")[1].split("tune:")[0].replace("num_threads: null", "").replace(
        "cv: null", "")  # every recipe setting chosen, the baseline's share settled
    assert not list(run.parent.glob(".run.*"))  # no temp or partial folder left


def test_load_refuses_incomplete_or_altered_runs(trained_run, tmp_path):
    run, _ = trained_run
    with pytest.raises(RunDirError, match="no such run directory"):
        load(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(RunDirError, match="not a dlforge run directory: dlforge.json is missing"):
        load(tmp_path / "plain")
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "tokenizers" / "review.json").unlink()
    with pytest.raises(RunDirError, match="incomplete run: tokenizers/review.json is missing"):
        load(broken)
    altered = tmp_path / "altered"
    shutil.copytree(run, altered)
    with (altered / "labels.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(RunDirError, match="labels.json was changed"):
        check_run(altered)


def test_save_replaces_a_run_but_never_a_foreign_folder(trained_run, tmp_path):
    run, _ = trained_run
    clf = load(run)
    target = tmp_path / "copy"
    clf.save(target)
    clf.save(target)  # replacing an earlier run is fine
    check_run(target)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(RunDirError, match="not a dlforge run; refusing"):
        clf.save(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert not list(tmp_path.glob(".*tmp*"))


class _CrashAt(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_begin(self, trainer, epoch):
        if epoch == self.epoch:
            raise RuntimeError("simulated crash")


def test_resume_gives_the_uninterrupted_result(toy_csv, tmp_path):
    cfg = validate_config({
        "data": {"path": str(toy_csv)},
        "inputs": [{"name": "review", "vocab_size": 300, "max_length": 16}],
        "output": {"name": "sentiment"},
        "model": {"name": "transformer", "d_model": 16, "heads": 2, "dropout": 0.2},
        "train": {"epochs": 4, "batch_size": 16, "lr": 1e-2, "patience": 0,
                  "precision": "fp32"},
    })
    whole = api.train(cfg, tmp_path / "whole", verbose=0)
    out = tmp_path / "interrupted"
    with pytest.raises(RuntimeError, match="simulated crash"):
        api.train(cfg, out, verbose=0, callbacks=(_CrashAt(3),))
    assert not out.exists() and partial_dir(out).is_dir()
    with pytest.raises(RunDirError, match="no such run directory.*unfinished.*--resume"):
        load(out)
    resumed = api.train(None, out, resume=True, verbose=0)
    assert [r["train_loss"] for r in resumed.history_] == [r["train_loss"] for r in
                                                           whole.history_]
    for (k, a), b in zip(whole.model_.state_dict().items(), resumed.model_.state_dict().values(),
                         strict=True):
        assert torch.equal(a, b), k
    assert not partial_dir(out).exists()
    with pytest.raises(RunDirError, match="complete; there is nothing to resume"):
        api.train(None, out, resume=True, verbose=0)


@pytest.mark.parametrize("kind", ["table", "forecast"])
def test_resume_for_other_kinds(kind, tmp_path):
    from tests.test_kinds import credit_table
    from tests.test_sequences import seasonal_series

    csv = tmp_path / "d.csv"
    if kind == "table":
        credit_table(200).to_csv(csv, index=False)
        raw = {"inputs": [{"name": "income", "type": "numeric"},
                          {"name": "debt", "type": "numeric"},
                          {"name": "purpose", "type": "category"}],
               "output": {"name": "default"}, "model": {"name": "mlp", "hidden": [8]}}
    else:
        seasonal_series(80).to_csv(csv, index=False)
        raw = {"forecast": {"targets": ["sales"], "time": "month", "window": 12, "horizon": 3},
               "model": {"name": "rnn", "hidden": 8, "d_model": 8}}
    cfg = validate_config({**raw, "data": {"path": str(csv)},
                           "train": {"epochs": 4, "batch_size": 16, "lr": 1e-2, "patience": 0,
                                     "precision": "fp32"}})
    whole = api.train(cfg, tmp_path / "whole", verbose=0)
    out = tmp_path / "interrupted"
    with pytest.raises(RuntimeError, match="simulated crash"):
        api.train(cfg, out, verbose=0, callbacks=(_CrashAt(3),))
    resumed = api.train(None, out, resume=True, verbose=0)
    assert [r["train_loss"] for r in resumed.history_] == [r["train_loss"] for r in
                                                           whole.history_]
    again = load(out)
    assert type(again) is type(whole)
