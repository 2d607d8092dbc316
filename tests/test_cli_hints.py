"""What the CLI tells a new user to do next, and when a score cannot be trusted: the held-out
hint after training, the warning when evaluation data overlaps the training rows, the command
printed on Ctrl-C, and the order of the epoch and early-stopping lines."""

import json

import numpy as np
import pandas as pd
import pytest

from dlforge.cli import main
from dlforge.data.rows import FILE as ROWS
from dlforge.data.rows import load_fingerprints, overlap, row_fingerprints
from dlforge.train.trainer import Trainer
from tests.conftest import TRAIN_ARGS, toy_texts


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_fingerprints_match_rows_whatever_the_file_format(tmp_path):
    df = pd.DataFrame({"text": ["a b", "c d", "a b", "e"], "n": [1, 2, 1, 3], "y": [0, 1, 0, 1]})
    fp = row_fingerprints(df, ["text", "n"])
    assert fp.dtype == np.uint64 and len(fp) == 3  # distinct rows only, sorted
    assert (np.diff(fp.astype(np.float64)) > 0).all()
    df.to_parquet(tmp_path / "d.parquet")
    back = pd.read_parquet(tmp_path / "d.parquet")
    assert overlap(back, ["text", "n"], fp) == 4
    other = pd.DataFrame({"text": ["a b", "zz"], "n": [2, 3]})  # same text, other number
    assert overlap(other, ["text", "n"], fp) == 0
    assert overlap(other, ["missing"], fp) == 0


def test_train_hint_and_overlap_warning(trained_run, tmp_path, capsys):
    run, csv = trained_run
    assert load_fingerprints(run) is not None and (run / ROWS).is_file()
    # Scored on its own training file: a warning naming how many rows it trained on.
    code, out, err = run_cli(capsys, "evaluate", run, "--data", csv)
    assert code == 0 and "accuracy" in out
    assert "warning: 160 of 160 rows of" in err and "overestimates" in err
    code, out, _ = run_cli(capsys, "evaluate", run, "--data", csv, "--json")
    assert json.loads(out)["overlap"] == {"rows": 160, "of": 160}
    # Half new rows, half old: the count says so; entirely new rows: no warning.
    texts, labels = toy_texts(80, seed=123)
    old = pd.read_csv(csv).head(40)
    mixed = pd.concat([old, pd.DataFrame({"review": texts[:40], "sentiment": labels[:40]})])
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    code, out, err = run_cli(capsys, "evaluate", run, "--data", tmp_path / "mixed.csv")
    assert code == 0 and "warning: 40 of 80 rows" in err
    fresh = pd.DataFrame({"review": texts[40:], "sentiment": labels[40:]})
    fresh = fresh[~fresh["review"].isin(pd.read_csv(csv)["review"])]
    fresh.to_csv(tmp_path / "fresh.csv", index=False)
    code, out, err = run_cli(capsys, "evaluate", run, "--data", tmp_path / "fresh.csv")
    assert code == 0 and "warning" not in err


def test_next_hint_suggests_held_out_data(toy_csv, tmp_path, capsys):
    out_dir = tmp_path / "run"
    args = [a for a in TRAIN_ARGS if a != "--quiet"]
    code, out, err = run_cli(capsys, "train", "--data", toy_csv, *args, "--epochs", "1",
                             "--test-split", "0.2", "--out", out_dir)
    assert code == 0, err
    hint = [ln for ln in out.splitlines() if " evaluate " in ln]
    assert len(hint) == 1 and "--data new.csv" in hint[0] and "toy.csv trained it" in hint[0]
    assert "--test-split" not in hint[0]  # this run has a test score already
    assert "test rows" in err and "no test split" not in err
    code, out, err = run_cli(capsys, "train", "--data", toy_csv, *args, "--epochs", "1",
                             "--out", tmp_path / "run2")
    assert code == 0 and "no test split" in err
    hint = next(ln for ln in out.splitlines() if " evaluate " in ln)
    assert "--test-split holds rows out" in hint


def _interrupt_at(monkeypatch, call: int) -> None:
    """Make the ``call``-th optimiser step raise KeyboardInterrupt (as Ctrl-C would)."""
    real, seen = Trainer.train_step, [0]

    def step(self, *a, **kw):
        seen[0] += 1
        if seen[0] == call:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(Trainer, "train_step", step)


def test_ctrl_c_in_the_first_epoch_prints_a_command_that_works(toy_csv, tmp_path, capsys,
                                                              monkeypatch):
    out_dir = tmp_path / "run"
    _interrupt_at(monkeypatch, 2)
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, *TRAIN_ARGS, "--epochs", "1",
                           "--out", out_dir)
    assert code == 130 and "nothing to resume" in err and "--resume" not in err
    assert not any(tmp_path.glob(".run.partial*")) and not out_dir.exists()
    command = err.split("start again with: ", 1)[1].strip().split(" ", 1)[1]
    monkeypatch.undo()
    code, _, err = run_cli(capsys, *command.split())
    assert code == 0, err
    assert out_dir.is_dir()


def test_ctrl_c_after_an_epoch_prints_resume(toy_csv, tmp_path, capsys, monkeypatch):
    out_dir = tmp_path / "run"
    _interrupt_at(monkeypatch, 12)  # 144 training rows / 16 = 9 steps an epoch: in epoch 2
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, *TRAIN_ARGS, "--epochs", "2",
                           "--out", out_dir)
    assert code == 130 and f"--resume {out_dir}" in err
    monkeypatch.undo()
    code, _, err = run_cli(capsys, "train", "--resume", out_dir, "--quiet")
    assert code == 0, err


@pytest.mark.parametrize("patience", [1])
def test_early_stopping_line_comes_after_the_epoch_line(toy_csv, tmp_path, capsys, patience):
    args = [a for a in TRAIN_ARGS if a not in ("--quiet",)]
    i = args.index("--lr")
    args[i + 1] = "1e-9"  # nothing improves: early stopping after epoch 1 + patience
    code, _, err = run_cli(capsys, "train", "--data", toy_csv, *args, "--epochs", "4",
                           "--patience", str(patience), "--out", tmp_path / "run")
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith(("epoch ", "early stopping"))]
    stop = next(i for i, ln in enumerate(lines) if ln.startswith("early stopping"))
    assert stop == len(lines) - 1 and lines[stop - 1].startswith(f"epoch {stop}/4")
