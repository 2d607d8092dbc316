"""Our runs as estimator inputs: a run config (YAML) or a trained run directory becomes
:class:`~dlforge.estimate.counts.Counts` plus what the data says (rows, tokens per sample).

A run directory holds the fitted inputs, so its counts are exact. A config is read with its
data (as training would read it): the tokenizer, categories and classes are fitted on all rows
to learn the sizes the model will have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dlforge.config import RunConfig, load_config, resolve_data_path
from dlforge.data.clean import clean_frame
from dlforge.data.features import load_target
from dlforge.data.frames import encode_labels, read_data
from dlforge.data.inputs import build_features, load_features
from dlforge.data.io import read_table
from dlforge.errors import ConfigError, DlforgeError, RunDirError
from dlforge.estimate.counts import Counts
from dlforge.estimate.ours import count_ours
from dlforge.models.gpt import GPTConfig
from dlforge.run import LM_TASK, check_run, read_manifest
from dlforge.train.device import resolve_device, resolve_precision

__all__ = ["RunInfo", "from_config", "from_run_dir", "is_run_dir", "lm_run",
           "run_precision"]


class RunInfo:
    """A run's counts, config, and training rows (None when unknown)."""

    def __init__(self, counts: Counts, cfg: RunConfig, train_rows: int | None, source: str):
        self.counts, self.cfg, self.train_rows, self.source = counts, cfg, train_rows, source


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and (path / "dlforge.json").is_file()


def run_precision(cfg: RunConfig) -> str:
    """The precision the run trains in here: ``auto`` resolved as the trainer resolves it."""
    if cfg.train.precision != "auto":
        return cfg.train.precision
    try:
        return resolve_precision("auto", resolve_device(cfg.train.device))
    except ConfigError:  # e.g. device cuda asked for on a machine without one
        return "bf16"


def _act_bytes(cfg: RunConfig) -> int:
    return 2 if run_precision(cfg) == "bf16" else 4


def lm_run(path: Path) -> tuple[Any, dict[str, Any]] | None:
    """A language-model run directory as (Arch, the run's own training settings: tokens seen,
    batch, sequence length, precision); None for any other path."""
    import json

    from dlforge.config.lm import load_lm_config
    from dlforge.estimate.arch import arch_from
    if not is_run_dir(path) or read_manifest(path).get("task") != LM_TASK:
        return None
    arch = arch_from(GPTConfig(**json.loads((path / "model.json").read_text(encoding="utf-8"))))
    cfg = load_lm_config(path / "config.yaml")
    metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
    batch = cfg.batch_size * cfg.accumulate
    steps = int(metrics.get("steps", cfg.max_steps))
    return arch.with_(name=path.name), {
        "tokens": float(steps * batch * cfg.block_size), "batch_size": batch,
        "seq_len": cfg.block_size, "precision": metrics.get("precision")}


def from_run_dir(path: Path) -> RunInfo:
    """A trained run's counts from its own records (config, fitted input state, labels),
    checked against its manifest first."""
    check_run(path)
    try:
        cfg = load_config(path / "config.yaml")
    except DlforgeError as err:
        raise RunDirError(f"{path}: config.yaml does not validate: {err}") from None
    if cfg.forecast is not None:
        specs, kinds, n_outputs = _forecast_shapes(cfg)
    else:
        features = load_features(cfg, path)
        specs = {n: f.spec() for n, f in features.items()}
        kinds = {n: f.kind for n, f in features.items()}
        n_outputs = load_target(path / "labels.json").n_outputs
    counts = count_ours(cfg, specs, kinds, n_outputs, act_bytes=_act_bytes(cfg),
                        name=path.name)
    rows = None
    data_file = path / "data.json"
    if data_file.is_file():
        rows = json.loads(data_file.read_text(encoding="utf-8")).get("splits", {}).get("train")
    return RunInfo(counts, cfg, rows, str(path))


def _train_share(cfg: RunConfig) -> float:
    return 1.0 - cfg.data.validation_split - cfg.data.test_split


def from_config(path: Path) -> RunInfo:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found (expected a run config YAML, a run "
                          "directory or a preset name)")
    cfg = load_config(path)
    resolve_data_path(cfg, path)
    if cfg.forecast is not None:
        return _forecast(cfg, str(path))
    if not cfg.data.path or not Path(cfg.data.path).exists():
        raise ConfigError(f"{path}: data.path {cfg.data.path!r} not found; the estimate reads "
                          "the data to size the vocabulary and outputs (or estimate a trained "
                          "run directory)")
    specs, kinds, n_outputs, lengths, rows = fit_sizes(cfg)
    counts = count_ours(cfg, specs, kinds, n_outputs, seq_len=lengths,
                        act_bytes=_act_bytes(cfg), name=path.stem)
    return RunInfo(counts, cfg, int(rows * _train_share(cfg)), str(path))


def fit_sizes(cfg: RunConfig) -> tuple[dict, dict, int, dict[str, int], int]:
    """(specs, kinds, n_outputs, mean tokens per sequence input, rows) from the config's data,
    each input fitted on every row as training would on its training rows."""
    source = str(cfg.data.path)
    df = read_data(cfg)
    texts = [i.name for i in cfg.inputs if i.type == "text"]
    df, _ = clean_frame(df, texts, cfg.output.name, cfg.data.clean, source=source,
                        key_cols=[i.name for i in cfg.inputs])
    target, _, _ = encode_labels(df, cfg, source)
    features = build_features(cfg)
    lengths: dict[str, int] = {}
    for name, feat in features.items():
        loaded = feat.load(df[name].tolist(), source)
        feat.fit(loaded, source)
        lens = feat.lengths(feat.encode(loaded))
        if lens is not None and len(lens):
            lengths[name] = max(1, int(round(float(np.mean(lens)))))
    specs = {n: f.spec() for n, f in features.items()}
    kinds = {i.name: i.type for i in cfg.inputs}
    return specs, kinds, target.n_outputs, lengths, len(df)


def _forecast_shapes(cfg: RunConfig) -> tuple[dict[str, dict[str, Any]], dict[str, str], int]:
    """(specs, kinds, n_outputs) of a forecasting run: the window of every column, the
    exogenous future, ``horizon`` steps of each target."""
    fc = cfg.forecast
    assert fc is not None
    cols = len(fc.targets) + len(fc.covariates) + len(fc.exogenous)
    specs: dict[str, dict[str, Any]] = {"window": {"features": cols, "max_length": fc.window}}
    kinds = {"window": "sequence"}
    if fc.exogenous:
        specs["future"] = {"width": fc.horizon * len(fc.exogenous)}
        kinds["future"] = "numeric"
    return specs, kinds, fc.horizon * len(fc.targets)


def _forecast(cfg: RunConfig, source: str) -> RunInfo:
    fc = cfg.forecast
    assert fc is not None
    specs, kinds, n_outputs = _forecast_shapes(cfg)
    counts = count_ours(cfg, specs, kinds, n_outputs, act_bytes=_act_bytes(cfg),
                        name=Path(source).stem)
    rows = None
    if cfg.data.path and Path(cfg.data.path).is_file():
        n = len(read_table(Path(cfg.data.path), cfg.data.format))
        rows = max(0, int((n - fc.window - fc.horizon + 1) * _train_share(cfg)))
    return RunInfo(counts, cfg, rows, source)
