"""Experiment tracking: ``--track mlflow`` / ``tracking:`` logs the resolved config, the metrics
of every epoch and the run directory's files to MLflow (a local SQLite file by default, a real
``mlflow server`` here too) and TensorBoard event files; ``dlforge tune`` nests a run per trial
under the study's; the bad inputs are one line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from dlforge import TextClassifier
from dlforge.config import MlflowTracking, TrackingConfig, add_trackers, validate_config
from dlforge.errors import ConfigError
from tests.test_cli import assert_user_error, run_cli

mlflow = pytest.importorskip("mlflow")
pytest.importorskip("tensorboard")
from mlflow import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import (  # noqa: E402
    EventAccumulator,
)

# MLflow's SQLAlchemy store uses a loader strategy SQLAlchemy 2.1 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")

ARGS = ["--text", "review", "--label", "sentiment", "--vocab-size", "300", "--max-length", "16",
        "--d-model", "16", "--heads", "2", "--epochs", "2", "--batch-size", "32",
        "--precision", "fp32", "--patience", "0", "--quiet"]


@pytest.fixture(autouse=True)
def _here(tmp_path, monkeypatch):
    """Each test in its own folder (the default stores are ./mlflow.db and ./tensorboard),
    with no tracking URI from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def runs_of(uri: str, experiment: str = "dlforge") -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    return client.search_runs([exp.experiment_id])


def scalars(folder: Path) -> EventAccumulator:
    acc = EventAccumulator(str(folder))
    acc.Reload()
    return acc


# ------------------------------------------------------------------ train: the local store
def test_train_logs_config_epochs_files_and_tags(toy_csv, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, *ARGS,
                           "--track", "mlflow", "--track", "tensorboard", "--out", "runs/toy")
    assert code == 0, err
    run_dir = tmp_path / "runs" / "toy"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["tracking"]["mlflow"] == {"uri": None, "experiment": None}

    # MLflow: by default the SQLite file ./mlflow.db, no server
    (run,) = runs_of("sqlite:///mlflow.db")
    assert run.info.run_name == "toy" and run.info.status == "FINISHED"
    params = run.data.params
    # the resolved config: the recipe's choices (lr, warm-up) as the run's config.yaml holds them
    assert params["train.epochs"] == "2" and params["model.name"] == "transformer"
    assert params["train.lr"] == str(saved["train"]["lr"])
    assert params["train.warmup"] == str(saved["train"]["warmup"])
    assert params["inputs.0.name"] == "review"
    assert not any(k.startswith("tracking.") for k in params)
    tags = run.data.tags
    assert tags["dlforge.dataset"] == "toy.csv" and tags["dlforge.family"] == "transformer"
    assert tags["dlforge.version"] and tags["dlforge.run_dir"] == str(run_dir.resolve())
    client = MlflowClient(tracking_uri="sqlite:///mlflow.db")
    for key in ("train_loss", "val_loss", "val_accuracy", "lr"):
        history = client.get_metric_history(run.info.run_id, key)
        assert [m.step for m in history] == [1, 2], key
    metrics = yaml.safe_load((run_dir / "metrics.json").read_text())  # JSON is YAML
    assert run.data.metrics["validation.accuracy"] == pytest.approx(
        metrics["validation"]["accuracy"])
    files = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"MODEL_CARD.md", "metrics.json", "history.csv", "config.yaml", "plots"} <= files
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/curves.png", "plots/confusion_matrix.png"} <= plots

    # TensorBoard: ./tensorboard/<run name>, the same epochs
    acc = scalars(tmp_path / "tensorboard" / "toy")
    assert [e.step for e in acc.Scalars("val_loss")] == [1, 2]
    assert [e.step for e in acc.Scalars("train_loss")] == [1, 2]
    assert {"config", "model_card", "tags"} <= {t.split("/")[0] for t in acc.Tags()["tensors"]}
    assert {"plots/curves", "plots/confusion_matrix"} <= set(acc.Tags()["images"])


def test_python_estimator_tracks_to_tensorboard(toy, tmp_path, tiny_params, capsys):
    texts, labels = toy
    clf = TextClassifier(**{**tiny_params, "epochs": 2},
                         track={"tensorboard": {"log_dir": str(tmp_path / "tb")}})
    clf.fit(texts, labels)
    assert [p.name for p in (tmp_path / "tb").iterdir()] == ["TextClassifier"]
    acc = scalars(tmp_path / "tb" / "TextClassifier")
    assert [e.step for e in acc.Scalars("val_accuracy")] == [1, 2]
    final = acc.Scalars("validation.accuracy")
    assert final[-1].value == pytest.approx(clf.metrics_["validation"]["accuracy"])
    assert "config.yaml" in {t.split("/")[0] for t in acc.Tags()["tensors"]}
    assert clf.config_.tracking is not None and clf.get_params()["track"] is not None


def test_a_failing_backend_warns_once_and_training_goes_on(toy_csv, tmp_path, capsys,
                                                           monkeypatch):
    from dlforge.train import tracking

    def broken(self, values, step):
        raise OSError("disk full")

    monkeypatch.setattr(tracking._TensorBoard, "log_metrics", broken)
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, *ARGS, "--track", "tensorboard",
                           "--out", "runs/toy")
    assert code == 0, err
    assert (tmp_path / "runs" / "toy" / "dlforge.json").is_file()
    warnings = [ln for ln in err.splitlines() if ln.startswith("warning: tracking:")]
    assert warnings == ["warning: tracking: tensorboard: disk full; it stops logging this run, "
                        "the training goes on"]


# ------------------------------------------------------------------ a real MLflow server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """``mlflow server`` with a SQLite backend on a free loopback port (its URI); stopped,
    with its workers, at the end."""
    port = _free_port()
    folder = tmp_path / "server"
    folder.mkdir()
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{folder / 'backend.db'}", "--artifacts-destination", str(folder / "art"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # a cold start on a busy 2-core machine is slow
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.close()
                    pytest.fail("mlflow server did not start:\n"
                                + (folder / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        yield uri
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_train_logs_to_a_real_mlflow_server(mlflow_server, toy_csv, tmp_path, capsys,
                                            monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)  # honoured: the config has none
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, *ARGS, "--track", "mlflow",
                           "--out", "runs/served")
    assert code == 0, err
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the local default
    runs = mlflow.search_runs(experiment_names=["dlforge"])
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["status"] == "FINISHED" and row["tags.mlflow.runName"] == "served"
    assert row["params.train.epochs"] == "2" and row["params.inputs.0.name"] == "review"
    assert row["tags.dlforge.dataset"] == "toy.csv"
    assert row["tags.dlforge.family"] == "transformer"
    assert row["metrics.val_loss"] > 0
    client = MlflowClient(tracking_uri=mlflow_server)
    assert [m.step for m in client.get_metric_history(row["run_id"], "val_loss")] == [1, 2]
    files = {a.path for a in client.list_artifacts(row["run_id"])}
    assert {"MODEL_CARD.md", "metrics.json", "plots"} <= files


# ---------------------------------------------------------------------------------- tune
def test_tune_logs_a_parent_and_a_child_run_per_trial(toy_csv, tmp_path, capsys):
    cfg = tmp_path / "tune.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"path": str(toy_csv)},
        "inputs": [{"name": "review", "vocab_size": 300, "max_length": 16}],
        "output": {"name": "sentiment"},
        "model": {"name": "cnn", "d_model": 8, "filters": 4, "kernel_sizes": [2]},
        "train": {"epochs": 2, "batch_size": 32, "precision": "fp32", "patience": 0},
        "tune": {"lr": {"log_uniform": [1e-3, 3e-2]}, "pruner": "none"},
        "tracking": {"mlflow": {"experiment": "toy-study"}}}))
    code, _, err = run_cli(capsys, "tune", cfg, "--trials", "2", "--out", "study", "--quiet",
                           "--track", "tensorboard")
    assert code == 0, err
    runs = runs_of("sqlite:///mlflow.db", "toy-study")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.run_name == "study" and parent.info.status == "FINISHED"
    assert parent.data.params["tune.space.lr.log_uniform"] == "[0.001, 0.03]"  # the space
    assert "best_val_accuracy" in parent.data.metrics
    assert {"trials.csv", "plots"} <= {a.path for a in MlflowClient(
        "sqlite:///mlflow.db").list_artifacts(parent.info.run_id)}
    children = {r.info.run_name: r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) == {"trial-0", "trial-1", "best"}
    for name in ("trial-0", "trial-1"):
        child = children[name]
        assert child.info.status == "FINISHED"
        lr = float(child.data.params["trial.lr"])
        assert float(child.data.params["train.lr"]) == pytest.approx(lr)
        assert child.data.metrics["objective"] == pytest.approx(
            child.data.metrics["validation.accuracy"])
        assert not any(k.startswith("tune.") for k in child.data.params)
    assert children["best"].data.tags["dlforge.run_dir"] == str(
        (tmp_path / "study" / "best").resolve())
    # TensorBoard: the study's folder, a folder per trial inside it
    study_tb = tmp_path / "tensorboard" / "study"
    assert {p.name for p in study_tb.iterdir() if p.is_dir()} == {"trial-0", "trial-1", "best"}
    assert [e.step for e in scalars(study_tb / "trial-1").Scalars("val_loss")] == [1, 2]


# ------------------------------------------------------------------------------ bad input
def test_unknown_tracker_is_one_line(toy_csv, tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, *ARGS, "--track", "wandb",
                           "--out", "runs/x")
    assert_user_error(code, err, "--track: unknown tracker 'wandb'", "mlflow, tensorboard")
    assert not (tmp_path / "runs").exists()


def test_unreachable_server_fails_before_training(toy_csv, tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({
        "data": {"path": str(toy_csv)}, "inputs": [{"name": "review"}],
        "output": {"name": "sentiment"},
        "tracking": {"mlflow": {"uri": f"http://127.0.0.1:{_free_port()}"}}}))
    code, _, err = run_cli(capsys, "train", cfg, "--epochs", "1", "--quiet", "--out", "runs/x")
    assert_user_error(code, err, "tracking.mlflow.uri: no MLflow server answers at "
                      "http://127.0.0.1:", "mlflow server")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


def test_resume_takes_no_track_flag(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--resume", tmp_path / "r", "--track", "mlflow")
    assert_user_error(code, err, "--resume", "--track")


def test_missing_extra_is_one_line(toy_csv, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow: ImportError
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, *ARGS, "--track", "mlflow",
                           "--out", "runs/x")
    assert_user_error(code, err)
    assert err.strip() == ("error: experiment tracking (--track, tracking:) needs the track "
                           "extra, which is not installed: pip install 'dlforge[track]'")


# --------------------------------------------------------------------------------- config
def test_tracking_config_forms():
    base = {"inputs": [{"name": "t"}], "output": {"name": "y"}}
    by_name = validate_config({**base, "tracking": "mlflow"}).tracking
    assert by_name == TrackingConfig(mlflow=MlflowTracking())
    both = validate_config({**base, "tracking": ["mlflow", "tensorboard"]}).tracking
    assert both.names() == ["mlflow", "tensorboard"]
    assert validate_config({**base, "tracking": {"tensorboard": True}}).tracking.names() == [
        "tensorboard"]
    # the dumped config reads back the same (an off backend stays off)
    dumped = validate_config({**base, "tracking": "mlflow"}).model_dump(mode="json")
    assert validate_config(dumped).tracking.names() == ["mlflow"]
    with pytest.raises(ConfigError, match=r"tracking\.mlflow\.url: unknown key; valid keys "
                                          r"here are: uri, experiment"):
        validate_config({**base, "tracking": {"mlflow": {"url": "x"}}})
    with pytest.raises(ConfigError, match="unknown tracker 'wandb'"):
        validate_config({**base, "tracking": ["wandb"]})


def test_track_flag_adds_to_the_config_section():
    mine = TrackingConfig(mlflow=MlflowTracking(uri="http://tracking:5000", experiment="e"))
    merged = add_trackers(mine, ["tensorboard", "mlflow"])
    assert merged.mlflow == mine.mlflow and merged.tensorboard is not None  # settings kept
    assert add_trackers(None, ["mlflow,tensorboard"]).names() == ["mlflow", "tensorboard"]
    assert add_trackers(mine, None) is mine and add_trackers(None, []) is None


def test_a_run_trained_again_gets_a_folder_of_its_own(tmp_path):
    from dlforge.train.tracking import _fresh

    assert _fresh(tmp_path / "tb" / "run") == tmp_path / "tb" / "run"
    assert _fresh(tmp_path / "tb" / "run") == tmp_path / "tb" / "run-2"
    assert _fresh(tmp_path / "tb" / "run") == tmp_path / "tb" / "run-3"


def test_the_uri_comes_from_config_then_environment_then_default(monkeypatch):
    from dlforge.train.tracking import DEFAULT_MLFLOW_URI, _mlflow_uri

    assert _mlflow_uri(MlflowTracking()) == (DEFAULT_MLFLOW_URI, "tracking: mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert _mlflow_uri(MlflowTracking()) == ("http://env:5000", "MLFLOW_TRACKING_URI")
    assert _mlflow_uri(MlflowTracking(uri="sqlite:///x.db")) == ("sqlite:///x.db",
                                                               "tracking.mlflow.uri")
