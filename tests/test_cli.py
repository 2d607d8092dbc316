"""The shell front door, including every bad input the foundation issue lists."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dlforge.cli import main
from tests.conftest import TRAIN_ARGS


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"


# ------------------------------------------------------------------------------ happy paths
def test_train_evaluate_predict_info(trained_run, tmp_path, capsys):
    run, csv = trained_run
    code, out, _ = run_cli(capsys, "evaluate", run, "--data", csv)
    assert code == 0 and "accuracy" in out and "majority baseline" in out
    code, out, _ = run_cli(capsys, "evaluate", run, "--data", csv, "--json")
    metrics = json.loads(out)
    assert code == 0 and metrics["accuracy"] > metrics["baseline"]["accuracy"]
    for suffix in (".csv", ".jsonl", ".parquet"):
        dest = tmp_path / f"pred{suffix}"
        code, out, _ = run_cli(capsys, "predict", run, "--data", csv, "--out", dest)
        assert code == 0 and "wrote 160 predictions" in out
    pred = pd.read_csv(tmp_path / "pred.csv")
    assert {"review", "sentiment", "prediction", "proba_neg", "proba_pos"} <= set(pred.columns)
    assert (pred["prediction"] == pred["sentiment"]).mean() > 0.8
    code, out, _ = run_cli(capsys, "info", run)
    assert code == 0 and "transformer" in out and "parameters" in out
    code, out, _ = run_cli(capsys, "info", run, "--json")
    assert json.loads(out)["labels"]["classes"] == ["neg", "pos"]


def test_train_from_yaml_with_flag_overrides(toy_csv, tmp_path, capsys):
    cfg = {"data": {"path": toy_csv.name},  # relative to the YAML file
           "inputs": [{"name": "review", "vocab_size": 300, "max_length": 16}],
           "output": {"name": "sentiment"},
           "model": {"name": "cnn", "d_model": 16, "filters": 8},
           "train": {"epochs": 5, "batch_size": 16, "precision": "fp32"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "runs" / "cnn"
    code, stdout, err = run_cli(capsys, "train", tmp_path / "run.yaml", "--epochs", "2",
                                "--quiet", "--out", out)
    assert code == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["model"]["name"] == "cnn"
    assert saved["model"]["kernel_sizes"] == [3, 4, 5]  # resolved defaults are saved
    assert f"dlforge predict {out}" in stdout
    # A second train into the same folder needs --overwrite.
    code, _, err = run_cli(capsys, "train", tmp_path / "run.yaml", "--quiet", "--out", out)
    assert_user_error(code, err, "already exists", "--overwrite")
    code, _, err = run_cli(capsys, "train", tmp_path / "run.yaml", "--model", "rnn", "--quiet",
                           "--epochs", "1", "--out", out, "--overwrite")
    assert code == 0, err
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["name"] == "rnn"


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "info", "quickstart"])
def test_help_shows_examples(command, capsys):
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0 and "Examples" in out and f"dlforge {command}" in out


def test_real_entry_point_exit_code_and_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dlforge.cli", "predict", tmp_path, "--data",
                           tmp_path / "x.csv", "--out", tmp_path / "p.csv"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path}: not a dlforge run directory: " \
                                  "dlforge.json is missing"


# ------------------------------------------------------------------------------ bad input
def _train(capsys, data, out, *extra):
    return run_cli(capsys, "train", "--data", data, *TRAIN_ARGS, "--out", out, *extra)


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))


def test_missing_file(tmp_path, capsys):
    code, _, err = _train(capsys, tmp_path / "nope.csv", tmp_path / "run")
    assert_user_error(code, err, "nope.csv: file not found")
    _assert_nothing_written(tmp_path / "run")


def test_unreadable_format(tmp_path, capsys):
    (tmp_path / "d.xlsx").write_bytes(b"PK\x03\x04")
    code, _, err = _train(capsys, tmp_path / "d.xlsx", tmp_path / "run")
    assert_user_error(code, err, "unreadable format '.xlsx'", ".csv")
    _assert_nothing_written(tmp_path / "run")


def test_column_that_does_not_exist(toy_csv, tmp_path, capsys):
    args = ["train", "--data", toy_csv, *TRAIN_ARGS, "--out", tmp_path / "run"]
    args[args.index("--text") + 1] = "body"
    code, _, err = run_cli(capsys, *args)
    assert_user_error(code, err, "column 'body' not found; columns are: review, sentiment",
                      "--text")
    _assert_nothing_written(tmp_path / "run")


SINGLE_CLASS = "review,sentiment\n" + "".join(f"text {i},pos\n" for i in range(20))


@pytest.mark.parametrize("content,needle", [
    pytest.param(b"", "the file is empty", id="empty"),
    pytest.param(b"review,sentiment\n", "header but no rows", id="header-only"),
    pytest.param(b"review,sentiment\n<br/>,pos\n   ,neg\n", "no rows left after cleaning",
                 id="empty-after-cleaning"),
    pytest.param(SINGLE_CLASS.encode(), "a single class in the labels ('pos')",
                 id="single-class"),
    pytest.param(b"review,sentiment\ngood,pos\nbad,neg\nna\xefve,pos\n",
                 "d.csv: line 4: bytes that are not UTF-8", id="not-utf8"),
    pytest.param(b"review,sentiment\ngood,pos\nbad,neg,extra\n",
                 "d.csv: line 3: expected 2 fields, saw 3", id="ragged-row"),
    pytest.param(b"review,sentiment\ngood,\nbad,\n", "column 'sentiment' has no labels",
                 id="nan-labels"),
])
def test_bad_data_file(tmp_path, capsys, content, needle):
    (tmp_path / "d.csv").write_bytes(content)
    code, _, err = _train(capsys, tmp_path / "d.csv", tmp_path / "run")
    assert_user_error(code, err, needle)
    _assert_nothing_written(tmp_path / "run")


@pytest.mark.parametrize("cfg,needle", [
    ({"train": {"epohcs": 3}}, "train.epohcs: unknown key; valid keys here are: epochs"),
    ({"train": {"epochs": "many"}}, "train.epochs: Input should be a valid integer"),
    ({"model": {"name": "transformer", "heads": [4]}}, "model.heads:"),
])
def test_yaml_unknown_key_or_wrong_type(toy_csv, tmp_path, capsys, cfg, needle):
    base = {"data": {"path": str(toy_csv)}, "inputs": [{"name": "review"}],
            "output": {"name": "sentiment"}}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**base, **cfg}))
    code, _, err = run_cli(capsys, "train", tmp_path / "run.yaml", "--out", tmp_path / "run")
    assert_user_error(code, err, "run.yaml", needle)
    _assert_nothing_written(tmp_path / "run")


@pytest.mark.parametrize("flag,value,needle", [("--epochs", "0", "train.epochs"),
                                               ("--lr", "-0.001", "train.lr")])
def test_zero_epochs_or_negative_lr(toy_csv, tmp_path, capsys, flag, value, needle):
    code, _, err = _train(capsys, toy_csv, tmp_path / "run", flag, value)
    assert_user_error(code, err, needle)
    _assert_nothing_written(tmp_path / "run")


def test_predict_on_a_folder_that_is_not_a_run(toy_csv, tmp_path, capsys):
    (tmp_path / "notarun").mkdir()
    code, _, err = run_cli(capsys, "predict", tmp_path / "notarun", "--data", toy_csv, "--out",
                           tmp_path / "p.csv")
    assert_user_error(code, err, "not a dlforge run directory")
    assert not (tmp_path / "p.csv").exists()


def test_predict_on_a_file_missing_the_text_column(trained_run, tmp_path, capsys):
    run, _ = trained_run
    pd.DataFrame({"body": ["good"], "x": [1]}).to_csv(tmp_path / "new.csv", index=False)
    code, _, err = run_cli(capsys, "predict", run, "--data", tmp_path / "new.csv", "--out",
                           tmp_path / "p.csv")
    assert_user_error(code, err, "column 'review' not found; columns are: body, x", "--text")
    assert not (tmp_path / "p.csv").exists()


def test_bad_flag_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "train", "--epochs", "three")
    assert code == 2 and "Traceback" not in err


def test_train_without_data_flags(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--out", tmp_path / "r")
    assert_user_error(code, err, "missing --data, --text, --label")


def test_resume_from_the_shell(toy_csv, tmp_path, capsys):
    from dlforge.config import validate_config
    from dlforge.estimators import files as api
    from tests.test_run import _CrashAt

    cfg = validate_config({"data": {"path": str(toy_csv)},
                           "inputs": [{"name": "review", "vocab_size": 300, "max_length": 16}],
                           "output": {"name": "sentiment"},
                           "model": {"name": "transformer", "d_model": 16, "heads": 2},
                           "train": {"epochs": 3, "batch_size": 16, "precision": "fp32"}})
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        api.train(cfg, out, verbose=0, callbacks=(_CrashAt(2),))
    code, _, err = run_cli(capsys, "train", "--resume", out, "--epochs", "9")
    assert_user_error(code, err, "--resume continues with the run's saved config", "--epochs")
    code, _, err = run_cli(capsys, "train", "--resume", out, "--quiet")
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["epochs_run"] == 3
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "never")
    assert_user_error(code, err, "no unfinished run to resume")


def test_multilabel_jsonl_and_separator_csv(tmp_path, capsys):
    from dlforge.testing import toy_texts

    texts, labels = toy_texts(160, seed=4, classes=3)
    tags = [[lab] + (["long"] if len(t.split()) > 5 else []) for t, lab in zip(texts, labels,
                                                                              strict=True)]
    pd.DataFrame({"review": texts, "sentiment": tags}).to_json(
        tmp_path / "d.jsonl", orient="records", lines=True)
    code, _, err = _train(capsys, tmp_path / "d.jsonl", tmp_path / "ml", "--epochs", "6")
    assert code == 0, err
    assert json.loads((tmp_path / "ml" / "labels.json").read_text())["kind"] == "multilabel"
    code, _, err = run_cli(capsys, "predict", tmp_path / "ml", "--data", tmp_path / "d.jsonl",
                           "--out", tmp_path / "p.csv")
    assert code == 0, err
    pred = pd.read_csv(tmp_path / "p.csv")
    assert {"proba_long", "proba_neg", "proba_odd", "proba_pos"} <= set(pred.columns)
    assert pred["prediction"].fillna("").str.contains("long").any()
    # The same labels as "a|b" strings in a CSV, with output.type multilabel.
    pd.DataFrame({"review": texts, "sentiment": ["|".join(t) for t in tags]}).to_csv(
        tmp_path / "d.csv", index=False)
    code, _, err = _train(capsys, tmp_path / "d.csv", tmp_path / "ml2", "--output-type",
                          "multilabel")
    assert code == 0, err
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "ml2", "--data", tmp_path / "d.csv",
                             "--json")
    assert code == 0, err
    assert "micro_f1" in json.loads(out)


def test_augmentation_flags_reach_the_saved_config(toy_csv, tmp_path, capsys):
    code, _, err = _train(capsys, toy_csv, tmp_path / "aug", "--augment-delete", "0.1",
                          "--augment-mask", "0.05", "--epochs", "1")
    assert code == 0, err
    saved = yaml.safe_load((tmp_path / "aug" / "config.yaml").read_text())
    assert saved["inputs"][0]["augment"] == {"delete": 0.1, "swap": 0.0, "mask": 0.05}
    code, _, err = _train(capsys, toy_csv, tmp_path / "bad", "--augment-swap", "2")
    assert_user_error(code, err, "inputs[0].augment.swap")
    _assert_nothing_written(tmp_path / "bad")


def test_cross_validation_flag(toy_csv, tmp_path, capsys):
    code, out, err = _train(capsys, toy_csv, tmp_path / "cv", "--cv", "3", "--epochs", "6")
    assert code == 0, err
    cv = json.loads((tmp_path / "cv" / "metrics.json").read_text())["cross_validation"]
    assert cv["k"] == 3 and len(cv["folds"]) == 3
    assert cv["mean"]["accuracy"] > cv["mean"]["baseline_accuracy"]
    assert cv["std"]["accuracy"] >= 0
    assert "3-fold cross-validation: accuracy" in out
    code, out, _ = run_cli(capsys, "info", tmp_path / "cv")
    assert code == 0 and "3-fold cross-validation" in out
    code, _, err = _train(capsys, toy_csv, tmp_path / "bad", "--cv", "1")
    assert_user_error(code, err, "train.cv")
    _assert_nothing_written(tmp_path / "bad")
