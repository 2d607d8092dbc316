"""Shared fixtures: tiny data made on the spot, tiny models, one trained run per session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from dlforge.testing import toy_texts

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))

# Small, fast settings for every estimator a test builds.
TINY = dict(model="transformer", vocab_size=300, max_length=16, d_model=16, heads=2, layers=1,
            epochs=3, batch_size=16, lr=1e-2, patience=0, verbose=0, precision="fp32")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of many tiny trainings: on a shared 2-core machine two
    OpenMP threads per process make such models up to ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_params() -> dict:
    return dict(TINY)


@pytest.fixture(scope="session")
def toy() -> tuple[list[str], list[str]]:
    return toy_texts(160, seed=0)


@pytest.fixture
def toy_csv(tmp_path: Path, toy) -> Path:
    texts, labels = toy
    path = tmp_path / "toy.csv"
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(path, index=False)
    return path


TRAIN_ARGS = ["--text", "review", "--label", "sentiment", "--vocab-size", "300",
              "--max-length", "16", "--d-model", "16", "--heads", "2", "--epochs", "3",
              "--batch-size", "16", "--lr", "1e-2", "--warmup", "0.1", "--precision", "fp32",
              "--quiet"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run directory trained once from the CLI on a toy CSV: (run_dir, csv)."""
    from dlforge.cli import main

    d = tmp_path_factory.mktemp("trained")
    texts, labels = toy_texts(160, seed=0)
    csv = d / "toy.csv"
    pd.DataFrame({"review": texts, "sentiment": labels}).to_csv(csv, index=False)
    run = d / "run"
    assert main(["train", "--data", str(csv), *TRAIN_ARGS, "--out", str(run)]) == 0
    return run, csv


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> tuple[Any, Path]:
    """A tiny language model trained once on tests.test_lm.TEXT and saved as a run named
    ``fox``: (LanguageModel, run_dir). Shared by the language-model and serving tests."""
    from dlforge import LanguageModel
    from tests.test_lm import TEXT, TINY

    out = tmp_path_factory.mktemp("lm") / "fox"
    return LanguageModel(**TINY).fit(TEXT, out=out), out

