"""``dlforge train --source COL --target COL``: a sequence-to-sequence run from flags (or from
a YAML file with a ``seq2seq:`` section), and the seq2seq side of ``predict``, ``evaluate``
and ``info`` (they call :mod:`dlforge.estimators.files`, which hands a seq2seq run here).

The flags are the parameter table's: the rows a sequence-to-sequence run shares with the
others (``--epochs``, ``--d-model``, ``--vocab-size``, ``--max-length``, ...) and its own
(keys ``seq2seq.*``: ``--beam-size``, ``--label-smoothing``, ...). A flag that means nothing
to it (``--label``, ``--image-size``) is an error naming the ones it takes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from dlforge.cli.report import prog
from dlforge.config.params import flag_params
from dlforge.config.seq2seq import Seq2SeqConfig, seq2seq_config
from dlforge.errors import ConfigError
from dlforge.estimators.seq2seq import Seq2Seq

__all__ = ["is_seq2seq_file", "report_metrics", "report_scores", "train_seq2seq"]

PREFIX = "seq2seq."


def _settings() -> dict[str, str]:
    """Table row name → Seq2SeqConfig field, for every flagged row a seq2seq run takes."""
    fields = Seq2SeqConfig.model_fields
    out = {}
    for p in flag_params():
        if p.path.startswith(PREFIX):
            out[p.name] = p.path[len(PREFIX):]
        elif p.name in fields:
            out[p.name] = p.name
    return out


def is_seq2seq_file(path: Path | None) -> bool:
    """Whether a YAML config describes a sequence-to-sequence run (a ``seq2seq:`` section)."""
    if path is None or not path.is_file():
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False  # the ordinary loader reports it
    return isinstance(data, dict) and "seq2seq" in data


def _from_file(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    extra = sorted(set(data) - {"seq2seq"})
    if extra:
        raise ConfigError(f"{path}: {extra[0]}: a sequence-to-sequence config has one section, "
                          "seq2seq:")
    section = data["seq2seq"]
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: seq2seq: expected a mapping of settings")
    if section.get("data") is not None and not Path(section["data"]).is_absolute():
        section["data"] = str((path.parent / section["data"]).resolve())
    return section


def train_seq2seq(config: Path | None, source: str | None, target: str | None,
                  others: dict[str, Any], params: dict[str, Any], out: Path | None,
                  resume: Path | None, overwrite: bool, quiet: bool) -> Seq2Seq:
    """Train the run the flags (and the file) describe into ``out``; print its scores."""
    given = [f"--{k}" for k, v in others.items() if v]
    if given:
        raise ConfigError(f"{', '.join(given)}: not for a sequence-to-sequence run (its "
                          "columns are --source and --target; it trains in one process)")
    if resume is not None:
        raise ConfigError("--resume: a sequence-to-sequence run is not resumable; train it "
                          "again")
    if out is None:
        raise ConfigError("--out: name the run directory to write, e.g. --out runs/my-model")
    settings = _from_file(config) if config is not None else {}
    takes = _settings()
    for name, value in params.items():
        if value is None:
            continue
        p = next(q for q in flag_params() if q.name == name)
        if name not in takes:
            raise ConfigError(f"--{p.flag}: not a setting of a sequence-to-sequence run; it "
                              f"takes: {', '.join('--' + q.flag for q in flag_params() if q.name in takes)}")  # noqa: E501
        settings[takes[name]] = value
    if source is not None:
        settings["source"] = source
    if target is not None:
        settings["target"] = target
    missing = [f for f, key in (("--data", "data"), ("--source", "source"),
                                ("--target", "target")) if settings.get(key) is None]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}: a sequence-to-sequence run needs "
                          "--data FILE --source COLUMN --target COLUMN")
    cfg = seq2seq_config(settings, "options")
    s2s = Seq2Seq(**cfg.model_dump(), verbose=0 if quiet else 1)
    s2s.fit(cfg.data, out=out, overwrite=overwrite)
    report_metrics(s2s.metrics_)
    me = prog()
    typer.echo(f"\nRun saved to {out}. Next:\n"
               f"  {me} predict {out} --data new.csv --out predictions.csv\n"
               f"  {me} evaluate {out} --data test.csv   # pairs it has not seen\n"
               f"  {me} serve {out}")
    return s2s


def report_metrics(metrics: dict[str, Any]) -> None:
    """The scores of a training run's validation and test splits (see :func:`report_scores`)."""
    for split in ("validation", "test"):
        if metrics.get(split):
            report_scores(split, metrics[split])


def report_scores(name: str, scores: dict[str, Any]) -> None:
    """BLEU, chrF and exact match beside the copy baseline's, and sacreBLEU's signatures."""
    model, copy = scores.get("model", {}), scores.get("copy_baseline", {})
    shown = ", ".join(f"{k.replace('_', ' ')} {model[k]:.2f} (copy {copy[k]:.2f})"
                      for k in ("bleu", "chrf", "exact_match") if k in model)
    typer.echo(f"{name}: {shown} on {model.get('rows', 0):,} pairs")
    sig = model.get("signature")
    if sig:
        typer.echo(f"  sacreBLEU signatures: BLEU {sig['bleu']}; chrF {sig['chrf']}")
    if scores.get("note"):
        typer.echo(f"  {scores['note']}")
