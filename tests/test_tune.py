"""Tuning: the search space, workers sharing a study (SQLite and PostgreSQL), pruning,
resuming a killed study, and the bad inputs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from dlforge import tune
from dlforge.config import validate_config
from dlforge.errors import ConfigError
from tests.test_cli import assert_user_error, run_cli

pytest.importorskip("optuna")


def tune_config(csv: Path, space: dict, epochs: int = 3, **train) -> dict:
    return {"data": {"path": str(csv)},
            "inputs": [{"name": "review", "vocab_size": 300, "max_length": 16}],
            "output": {"name": "sentiment"},
            "model": {"name": "cnn", "d_model": 8, "filters": 4, "kernel_sizes": [2]},
            "train": {"epochs": epochs, "batch_size": 32, "precision": "fp32", "patience": 0,
                      **train},
            "tune": space}


SPACE = {"lr": {"log_uniform": [1e-3, 3e-2]}, "d_model": {"choice": [8, 16]}}


def finished_trials(out: Path) -> pd.DataFrame:
    table = pd.read_csv(out / "trials.csv")
    assert table["trial"].is_unique  # no trial recorded (or run) twice
    return table


def test_one_worker_study_folder(toy_csv, tmp_path):
    cfg = validate_config(tune_config(toy_csv, {
        **SPACE, "model": {"choice": ["cnn", "transformer"]}, "heads": {"choice": [2, 4]}}))
    result = tune(cfg, tmp_path / "study", trials=6, verbose=0)
    table = finished_trials(tmp_path / "study")
    assert len(table) == 6 and set(table["state"]) <= {"complete", "pruned"}
    # heads is no key of the CNN: define-by-run samples it for the Transformer only
    assert table.loc[table["param_model"] == "cnn", "param_heads"].isna().all()
    assert table.loc[table["param_model"] == "transformer", "param_heads"].notna().all()
    assert result.best_run is not None and (result.best_run / "dlforge.json").is_file()
    assert {p.name for p in (tmp_path / "study" / "plots").iterdir()} >= {"history.png"}
    from dlforge import load

    best = load(result.best_run)
    assert best.metrics_["validation"]["accuracy"] == pytest.approx(result.best_value)


def _two_workers(cfg: dict, out: Path, storage: str | None, trials: int) -> pd.DataFrame:
    tune(validate_config(cfg), out, trials=trials, workers=2, storage=storage,
         study=f"s{time.time_ns()}", best_run=False, verbose=0)
    return finished_trials(out)


def test_two_workers_share_an_sqlite_study(toy_csv, tmp_path):
    table = _two_workers(tune_config(toy_csv, SPACE, epochs=2), tmp_path / "study", None, 6)
    assert len(table) == 6 and table["state"].isin(["complete", "pruned", "fail"]).all()


@pytest.mark.skipif("DLFORGE_TEST_POSTGRES" not in os.environ,
                    reason="needs the PostgreSQL cluster .ci/run starts")
def test_two_workers_share_a_postgres_study(toy_csv, tmp_path):
    table = _two_workers(tune_config(toy_csv, SPACE, epochs=2), tmp_path / "study",
                         os.environ["DLFORGE_TEST_POSTGRES"], 6)
    assert len(table) == 6


def test_pruning_stops_diverging_trials_early(toy_csv, tmp_path):
    # Half the grid's learning rates make AdamW diverge; the median pruner stops those trials.
    space = {"lr": {"choice": [3e-2, 30.0]}, "train.seed": {"choice": [0, 1, 2, 3, 4]},
             "sampler": "grid"}
    reached = {}
    for pruner in ("median", "none"):
        cfg = validate_config(tune_config(toy_csv, {**space, "pruner": pruner}, epochs=5))
        tune(cfg, tmp_path / pruner, trials=10, best_run=False, verbose=0)
        table = finished_trials(tmp_path / pruner)
        reached[pruner] = int((table["epochs_reported"] == 5).sum())
    assert reached["median"] < reached["none"] == 10


def test_killed_study_restarts_to_n_trials(toy_csv, tmp_path):
    cfg_file = tmp_path / "tune.yaml"
    cfg_file.write_text(yaml.safe_dump(tune_config(toy_csv, SPACE, epochs=6)))
    out = tmp_path / "study"
    code = ("import sys; from dlforge import tune; from dlforge.config import load_config; "
            f"tune(load_config({str(cfg_file)!r}), {str(out)!r}, trials=5, heartbeat=1, "
            "best_run=False, verbose=0)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    db = out / "study.db"
    deadline = time.time() + 60
    import sqlite3

    while time.time() < deadline:  # kill it once a trial has finished
        time.sleep(0.3)
        if not db.exists():
            continue
        try:
            with sqlite3.connect(db) as con:
                n = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()
        except sqlite3.OperationalError:  # the study's tables are still being created
            continue
        if n and n[0] >= 1:
            break
    proc.kill()
    proc.wait()
    assert not (out / "trials.csv").exists()
    # Restarted at once: the study folder's own SQLite file frees the dead run's trial (a
    # shared --storage waits for its heartbeat to go stale instead).
    result = tune(validate_config(tune_config(toy_csv, SPACE, epochs=6)), out, trials=5,
                  best_run=False, verbose=0)
    table = finished_trials(out)
    assert len(table) == 5 and (table["state"] != "running").all()
    assert len(result.trials) == 5


def test_bad_inputs(toy_csv, tmp_path, capsys):
    with pytest.raises(ConfigError, match="tune: the search space is empty"):
        validate_config(tune_config(toy_csv, {}))
    with pytest.raises(ConfigError, match=r"tune.lr: log_uniform needs \[low, high\]"):
        validate_config(tune_config(toy_csv, {"lr": {"log_uniform": [1e-2]}}))
    with pytest.raises(ConfigError, match="tune.lr: expected one of log_uniform"):
        validate_config(tune_config(toy_csv, {"lr": {"between": [1, 2]}}))
    cfg = validate_config(tune_config(toy_csv, {"train.nope": {"choice": [1, 2]}}))
    with pytest.raises(ConfigError, match="tune.train.nope: 'train.nope' is not a key"):
        tune(cfg, tmp_path / "s", trials=2, verbose=0)
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(tune_config(toy_csv, SPACE)))
    code, _, err = run_cli(capsys, "tune", good, "--trials", "0", "--out", tmp_path / "s0")
    assert_user_error(code, err, "--trials: must be at least 1")
    code, _, err = run_cli(capsys, "tune", good, "--trials", "2", "--out", tmp_path / "s1",
                           "--storage", "postgresql+psycopg://me:secret@127.0.0.1:1/none")
    assert_user_error(code, err, "--storage: cannot", "me:***@127.0.0.1:1/none")
    assert "secret" not in err
    code, _, err = run_cli(capsys, "tune", good, "--trials", "2", "--out", tmp_path / "s1",
                           "--storage", "postgresql+psycopg://me:p@ss@127.0.0.1:1/none")
    assert_user_error(code, err, "percent-encode", "%40")
    assert "p@ss" not in err
    code, _, err = run_cli(capsys, "tune", good, "--trials", "2", "--out", tmp_path / "s1",
                           "--storage", "postgresql+psycopg//me:secret@host/db")
    assert code == 2 and "secret" not in err
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "tune", good, "--trials", "1", "--out", tmp_path / "afile")
    assert_user_error(code, err, "is a file")
    plain = tmp_path / "plain.yaml"
    raw = tune_config(toy_csv, SPACE)
    raw.pop("tune")
    plain.write_text(yaml.safe_dump(raw))
    code, _, err = run_cli(capsys, "tune", plain, "--trials", "2", "--out", tmp_path / "s2")
    assert_user_error(code, err, "tune: the config has no search space")


def test_refit_trains_on_train_and_validation(toy_csv, tmp_path):
    from dlforge import load

    cfg = validate_config(tune_config(toy_csv, SPACE, epochs=3))
    result = tune(cfg, tmp_path / "study", trials=2, refit=True, verbose=0)
    best = load(result.best_run)
    assert best.config_.data.validation_split == 0.0
    assert best.data_report_["splits"]["validation"] == 0
    assert "validation" not in best.metrics_ and len(best.history_) <= 3


def test_no_validation_split_trains_every_row(toy_csv, tmp_path):
    from dlforge.estimators import files as api

    cfg = validate_config({**tune_config(toy_csv, SPACE), "tune": None,
                           "data": {"path": str(toy_csv), "validation_split": 0.0,
                                    "test_split": 0.2}})
    clf = api.train(cfg, tmp_path / "run", verbose=0)
    assert clf.data_report_["splits"]["validation"] == 0 and "test" in clf.metrics_
    assert clf.best_epoch_ == 3 and (tmp_path / "run" / "plots" / "curves.png").is_file()


def test_a_diverged_trial_is_a_failure_that_counts(tmp_path):
    from dlforge.testing import toy_texts

    texts, labels = toy_texts(80, seed=0)
    csv = tmp_path / "toy.csv"
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(csv, index=False)
    raw = tune_config(csv, {"lr": {"choice": [1e30]}}, epochs=1, grad_clip=0)
    raw["output"]["type"] = "binary"
    result = tune(validate_config(raw), tmp_path / "s", trials=2, timeout=120,
                  best_run=False, verbose=0)
    assert len(result.trials) == 2  # the budget is spent: no endless study
