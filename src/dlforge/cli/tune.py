"""``dlforge tune``: an Optuna study over a config's ``tune:`` search space."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlforge.cli._common import TRACK_HELP, Commands
from dlforge.cli._common import examples as _examples
from dlforge.config import add_trackers, load_config, resolve_data_path
from dlforge.estimators.steps import tune as run_tune

__all__ = ["COMMANDS"]

COMMANDS = Commands()


# ----------------------------------------------------------------------------------- tune
@COMMANDS(epilog=_examples(
    "dlforge tune run.yaml --trials 20 --out runs/tune",
    "dlforge tune run.yaml --trials 50 --workers 2 --timeout 3600 --out runs/tune",
    "dlforge tune run.yaml --trials 200 --storage postgresql+psycopg://u:p@db/optuna "
    "--study tweets --out runs/tune   # the same command on every machine",
    "dlforge tune run.yaml --trials 20 --track mlflow --out runs/tune   # a run per trial",
))
def tune(
    config: Annotated[Path, typer.Argument(help="A YAML run config with a tune: section.")],
    trials: Annotated[int, typer.Option(help="Trials in all (every worker together).")],
    out: Annotated[Path, typer.Option(help="The study folder to write.")],
    timeout: Annotated[float | None, typer.Option(help="Stop starting trials after S s.")] = None,
    storage: Annotated[str | None, typer.Option(
        help="SQLAlchemy URL of the study database (default: SQLite in --out).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name (default: --out's name).")] = None,
    workers: Annotated[int, typer.Option(help="Local worker processes.")] = 1,
    best: Annotated[bool, typer.Option(help="Train the best configuration into OUT/best.")] = True,
    refit: Annotated[bool, typer.Option(
        help="Train OUT/best on the training and validation rows together.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    track: Annotated[list[str] | None, typer.Option(help=TRACK_HELP)] = None,
) -> None:
    """Search the config's tune: space with Optuna (TPE, random or grid; median or Hyperband
    pruning) and keep the best run. Interrupted studies resume; workers on many machines share
    one study through --storage."""
    cfg = load_config(config)
    resolve_data_path(cfg, config)
    cfg.tracking = add_trackers(cfg.tracking, track)
    result = run_tune(cfg, out, trials=trials, timeout=timeout, storage=storage, study=study,
                      workers=workers, best_run=best, refit=refit, verbose=0 if quiet else 1)
    table = result.trials
    shown = table.drop(columns=[c for c in ("error",) if c in table and not table[c].any()])
    typer.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if result.best_value is not None:
        typer.echo(f"best val {result.monitor}: {result.best_value:.4f} with "
                   + ", ".join(f"{k}={v}" for k, v in result.best_params.items()))
    typer.echo(f"study folder: {out} (trials.csv, plots/"
               + (", best/" if result.best_run else "") + ")")

