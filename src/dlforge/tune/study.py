"""An Optuna study over the run config's search space, on one machine or many.

Each trial samples the ``tune:`` keys into a copy of the config (define-by-run: a key the
sampled model family does not have, such as ``heads`` for the CNN, is not sampled), trains it
exactly as ``dlforge train`` would, and reports the monitored validation metric after every
epoch so the pruner (median or Hyperband) can stop hopeless trials early. The objective is
that metric at the best epoch, in its direction (accuracy up, loss or MAE down).

Storage is an SQLite file in the study folder by default; any SQLAlchemy URL (PostgreSQL) lets
many workers, on many machines, share one study: each runs the same command. The trial budget
is exact across workers: a trial takes a place only if fewer than N trials (finished, running or
failed by an error) were created before it; a place taken by a worker that died is freed when
its heartbeat goes stale, so a killed study, restarted, still completes N trials.

With ``tracking:`` (``--track``) the study is a parent run (the config and search space as
params, the best value, trials.csv and the plots), each trial a child run (its config and
sampled values, its epochs, its objective; pruned trials end KILLED, failed ones FAILED) and
the best configuration's training a child run named best (see :mod:`dlforge.train.tracking`).
"""

from __future__ import annotations

import contextlib
import copy
import math
import multiprocessing
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dlforge._atomic import atomic_file
from dlforge._extras import require
from dlforge.config import RunConfig, apply_overrides, config_to_dict, dump_config, validate_config
from dlforge.data.frames import output_kind, read_data
from dlforge.errors import ConfigError, DataError, DlforgeError
from dlforge.train.callbacks import Callback
from dlforge.train.metrics import monitor_mode, resolve_monitor
from dlforge.train.recipe import MAX_EPOCHS
from dlforge.train.tracking import Tracker, config_params
from dlforge.tune.space import check_space, sample_config

__all__ = ["FitTrial", "TrainRun", "TuneResult", "run_study"]

# How a trial trains: (config, output kind, data, source, callbacks) -> its metrics (the
# estimator's ``metrics_``). Given by the front door (dlforge.tune), which owns the estimators;
# a module-level function, so that worker processes can be handed it.
FitTrial = Callable[[RunConfig, str, pd.DataFrame, str, list[Callback]], dict[str, Any]]
# How the best configuration becomes a run directory: dlforge.estimators.files.train.
TrainRun = Callable[..., Any]

HEARTBEAT_S = 5  # a running trial records a heartbeat this often ...
GRACE = 3  # ... and is failed as stale after GRACE missed heartbeats (its worker died)


@dataclass
class TuneResult:
    study_name: str
    storage: str
    folder: Path
    monitor: str
    direction: str
    trials: pd.DataFrame
    best_value: float | None
    best_params: dict[str, Any]
    best_run: Path | None


# ---------------------------------------------------------------------------- the study
def _sampler(cfg: RunConfig, worker: int | None = None) -> Any:
    """The configured sampler. A lone worker uses ``tune.seed`` (a reproducible study); workers
    sharing a study mix in their index and machine, so they do not propose the same
    configurations in lockstep."""
    import socket
    import zlib

    import optuna

    t = cfg.tune
    assert t is not None
    seed = t.seed if worker is None else zlib.crc32(
        f"{t.seed}/{socket.gethostname()}/{worker}".encode())
    if t.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if t.sampler == "grid":
        return optuna.samplers.GridSampler({n: s["choice"] for n, s in t.space.items()},
                                           seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(cfg: RunConfig) -> Any:
    import optuna

    t = cfg.tune
    assert t is not None
    if t.pruner == "hyperband":
        # Unset epochs are chosen per trial by the recipe, at most MAX_EPOCHS.
        epochs = [cfg.train.epochs or MAX_EPOCHS["scratch"]]
        for name, path in t.paths().items():
            if path == "train.epochs":
                epochs += [int(v) for v in next(iter(t.space[name].values()))]
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs))
    if t.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    return optuna.pruners.NopPruner()


def _storage(url: str, heartbeat: int) -> Any:
    import warnings

    import optuna

    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme.endswith("+psycopg"):  # SQLAlchemy's PostgreSQL driver of the tune extra
        require("psycopg", "tune", f"--storage {scheme}://...")
    netloc = url.split("://", 1)[1].split("/", 1)[0] if "://" in url else ""
    if netloc.count("@") > 1:  # ambiguous: which '@' ends the password? Never guess.
        raise ConfigError(f"--storage: {url.split('://', 1)[0]}://... has more than one '@' "
                          "before the host; percent-encode an '@' in the user name or password "
                          "as %40")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the heartbeat is marked experimental
            kwargs = ({"connect_args": {"timeout": 60}} if url.startswith("sqlite")
                      else None)  # local workers queue for SQLite's lock instead of failing
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs,
                                              heartbeat_interval=heartbeat,
                                              grace_period=GRACE * heartbeat)
    except Exception as err:  # sqlalchemy/psycopg raise many kinds for a bad URL or server
        raise ConfigError(f"--storage: cannot open {_redact(url)}: "
                          f"{_scrub(_first_line(err), url)}") from None


def _redact(url: str) -> str:
    """The URL with its password hidden (only the scheme if it cannot be parsed)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy can read: show nothing that could be secret
        return url.split("://", 1)[0] + "://..." if "://" in url else "<unreadable URL>"


def _scrub(text: str, url: str) -> str:
    """``text`` (a driver's message) with the URL's password removed."""
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):
        password = make_url(url).password
        if password and len(str(password)) >= 3:  # drivers do not echo passwords; be sure
            text = text.replace(str(password), "***")
    return text


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class _Prune(Callback):
    """Report the monitored validation metric after every epoch; stop a hopeless trial."""

    def __init__(self, trial: Any, monitor: str):
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, trainer: Any, row: dict[str, Any]) -> None:
        import optuna

        value = row.get(f"val_{self.monitor}")
        if value is None:
            return
        self.trial.report(float(value), row["epoch"])
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")


def _counts_for_budget(t: Any) -> bool:
    """Trials that hold a place in the budget: all but skipped ones and stale failures (a
    worker that died; they carry no error of ours)."""
    from optuna.trial import TrialState

    if t.user_attrs.get("skipped"):
        return False
    return not (t.state == TrialState.FAIL and "error" not in t.user_attrs)


def _objective(study: Any, cfg: RunConfig, df: pd.DataFrame, n_trials: int, monitor: str,
               kind: str, fit: FitTrial, parent: dict[str, Any] | None = None
               ) -> Callable[[Any], float]:
    import optuna

    def objective(trial: Any) -> float:
        before = [t for t in study.get_trials(deepcopy=False) if t.number < trial.number]
        if sum(_counts_for_budget(t) for t in before) >= n_trials:
            trial.set_user_attr("skipped", True)  # the budget is spent: stop this worker
            study.stop()
            raise optuna.TrialPruned("trial budget reached")
        child: Tracker | None = None
        try:
            trial_cfg, overrides = sample_config(trial, cfg)
            trial.set_user_attr("overrides", overrides)
            if parent is not None:  # the trial's child run of the study's (tracking:)
                child = _trial_run(trial_cfg, trial, parent)
            # The tracker first: it logs an epoch before the pruner may stop the trial there.
            callbacks: list[Callback] = [*([] if child is None else [child]),
                                     _Prune(trial, monitor)]
            metrics = fit(trial_cfg, kind, df, str(cfg.data.path), callbacks)
        except optuna.TrialPruned:
            if child is not None:
                child.finish(status="KILLED", tags={"dlforge.trial_state": "pruned"})
            raise
        except BaseException as err:  # recorded as a failed trial; the study goes on
            if isinstance(err, Exception):
                trial.set_user_attr("error", f"{type(err).__name__}: {_first_line(err)}")
            if child is not None:
                child.finish(status="FAILED" if isinstance(err, Exception) else "KILLED",
                             tags={"dlforge.trial_state": "failed",
                                   "dlforge.error": trial.user_attrs.get("error", "")})
            raise
        value = (metrics.get("validation") or {}).get(monitor)
        if value is None or not math.isfinite(float(value)):
            # Recorded as a failed trial of ours (it holds its place in the budget).
            trial.set_user_attr("error", f"diverged: val {monitor} is {value}")
            if child is not None:
                child.finish(metrics=metrics, status="FAILED",
                             tags={"dlforge.trial_state": "failed",
                                   "dlforge.error": trial.user_attrs["error"]})
            raise DataError(f"trial {trial.number} diverged: val {monitor} is {value}")
        if child is not None:
            child.log_metrics({"objective": float(value)})
            child.finish(metrics=metrics, tags={"dlforge.trial_state": "complete"})
        return float(value)

    return objective


def _trial_run(trial_cfg: RunConfig, trial: Any, parent: dict[str, Any]) -> Tracker:
    """The child run of one trial: its config (with the sampled values) and the sampled
    values by their short names as params."""
    return Tracker.open(trial_cfg, f"trial-{trial.number}", parent=parent,
                        tags={"dlforge.trial": str(trial.number)},
                        params={**config_params(trial_cfg, child=True),
                                **{f"trial.{k}": v for k, v in trial.params.items()}},
                        verbose=0)


def _tally(study: Any) -> tuple[int, int, int, str]:
    """(finished, pruned, failed, best) over the trials that count for the budget."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False)
            if _counts_for_budget(t) and t.state.is_finished()]
    best = ""
    with contextlib.suppress(ValueError):
        best = f"best {study.best_value:.4f} (trial {study.best_trial.number})"
    return (len(done), sum(t.state == TrialState.PRUNED for t in done),
            sum(t.state == TrialState.FAIL for t in done), best)


class _Bar:
    """A rich progress bar of the study on a terminal: trials done, pruned, failed, best."""

    def __init__(self, n_trials: int, monitor: str):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.monitor = monitor
        self.progress = Progress(TextColumn("tuning"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.description}"), transient=False)
        self.task = self.progress.add_task("", total=n_trials)
        self.progress.start()

    def update(self, study: Any) -> None:
        done, pruned, failed, best = _tally(study)
        self.progress.update(self.task, completed=done,
                             description=f"{pruned} pruned, {failed} failed; {best}")

    def close(self) -> None:
        self.progress.stop()


def _progress(n_trials: int, monitor: str, say: Callable[[str], None],
              bar: _Bar | None = None) -> Callable[..., None]:
    from optuna.trial import TrialState

    def report(study: Any, trial: Any) -> None:
        if trial.user_attrs.get("skipped"):
            return
        if bar is not None:
            bar.update(study)
            return
        done, pruned, failed, best = _tally(study)
        what = {TrialState.COMPLETE: f"{monitor} {trial.value:.4f}" if trial.value is not None
                else "complete",
                TrialState.PRUNED: "pruned",
                TrialState.FAIL: f"failed ({trial.user_attrs.get('error', '?')})"}.get(
            trial.state, trial.state.name.lower())
        params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        say(f"trial {trial.number}: {what} [{params}]; {done}/{n_trials} done, "
            f"{pruned} pruned, {failed} failed{'; ' + best if best else ''}")

    return report


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)



def _work(cfg_data: dict[str, Any], storage_url: str, study_name: str, n_trials: int,
          timeout: float | None, monitor: str, kind: str, heartbeat: int, fit: FitTrial,
          parent: dict[str, Any] | None, verbose: int, worker: int | None = None) -> None:
    """One worker: run trials of the shared study until the budget (or timeout) is spent."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = validate_config(cfg_data)
    storage = _storage(storage_url, heartbeat)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=_sampler(cfg, worker), pruner=_pruner(cfg))
    df = read_data(cfg)
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if verbose else (lambda s: None)
    bar = _Bar(n_trials, monitor) if verbose and worker is None and sys.stderr.isatty() else None
    try:
        study.optimize(_objective(study, cfg, df, n_trials, monitor, kind, fit, parent),
                       timeout=timeout, catch=(Exception,),
                       callbacks=[_progress(n_trials, monitor, say, bar)])
    finally:
        if bar is not None:
            bar.close()


def _worker_main(*args: Any) -> None:
    try:
        _work(*args)
    except DlforgeError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def run_study(config: RunConfig, out: str | Path, *, fit: FitTrial, train: TrainRun,
              trials: int, timeout: float | None = None, storage: str | None = None,
              study: str | None = None, workers: int = 1, best_run: bool = True,
              refit: bool = False, heartbeat: int = HEARTBEAT_S, verbose: int = 1
              ) -> TuneResult:
    """Run (or resume) the study over ``config.tune`` with ``trials`` trials in all, each
    trained by ``fit`` (the best configuration by ``train``), write the
    study folder ``out`` (``trials.csv``, ``plots/``, ``best/`` run directory) and return the
    results. ``workers`` > 1 runs that many local worker processes against the one study;
    other machines join by running the same command with the same ``storage`` URL. With
    ``refit`` the best run is trained on the training and validation rows together, for the
    number of epochs at which the best trial peaked."""
    optuna = require("optuna", "tune", "dlforge tune")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if trials < 1:
        raise ConfigError(f"--trials: must be at least 1, got {trials}")
    if workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {workers}")
    if config.tune is None:
        raise ConfigError("tune: the config has no search space; add a tune: section, e.g. "
                          "tune: {lr: {log_uniform: [1e-5, 1e-2]}}")
    if config.data.path is None:
        raise DataError("data.path: no data file given; use --data FILE or data.path")
    check_space(config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} is a file; choose a folder for the study")
    df = read_data(config)
    kind = output_kind(config, df, str(config.data.path))
    monitor = "mae" if kind == "forecast" and config.train.monitor == "auto" else (
        config.train.monitor if kind == "forecast" else resolve_monitor(config.train.monitor,
                                                                        kind))
    direction = "minimize" if monitor_mode(monitor) == "min" or monitor == "smape" else "maximize"
    out.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{(out / 'study.db').resolve()}"
    name = study or out.name
    rdb = _storage(url, heartbeat)
    try:
        optuna.create_study(storage=rdb, study_name=name, direction=direction,
                            load_if_exists=True)
    except Exception as err:
        raise ConfigError(f"--storage: cannot use {_redact(url)}: "
                          f"{_scrub(_first_line(err), url)}") from None
    existing = optuna.load_study(study_name=name, storage=rdb)
    if storage is None:
        # The study folder's own SQLite file belongs to this command: a trial still marked
        # running was left by a run that died. Free its place now (shared storage waits for
        # the dead worker's heartbeat to go stale instead).
        from optuna.trial import TrialState

        for t in existing.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            rdb.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
    if existing.direction.name.lower() != direction:
        raise ConfigError(f"--study {name}: that study {existing.direction.name.lower()}s, but "
                          f"this run's metric {monitor!r} should be {direction}d")
    dump_config(config, out / "config.yaml")
    say = (lambda s: print(s, file=sys.stderr, flush=True)) if verbose else (lambda s: None)
    say(f"study {name!r} in {_redact(url)}: {trials} trials, {workers} worker(s), objective "
        f"val {monitor} ({direction}), sampler {config.tune.sampler}, pruner "
        f"{config.tune.pruner}")
    # The study's parent run (tracking:): opened now, so a tracking server that does not
    # answer stops the study before its first trial.
    parent = (Tracker.open(config, name, tags={"dlforge.study": name},
                           params=config_params(config), verbose=verbose)
              if config.tracking is not None else None)
    with parent if parent is not None else contextlib.nullcontext():
        args = (config_to_dict(config), url, name, trials, timeout, monitor, kind, heartbeat,
                fit, None if parent is None else parent.ref(), verbose)
        t0 = time.perf_counter()
        if workers == 1:
            _work(*args, None if storage is None else 0)
        else:
            _run_workers(args, workers, trials, monitor, verbose, name, rdb)
        return _summarise(config, out, url, name, heartbeat, monitor, direction, best_run,
                          refit, time.perf_counter() - t0, say, train, parent)


def _run_workers(args: tuple[Any, ...], workers: int, trials: int, monitor: str, verbose: int,
                 name: str, rdb: Any) -> None:
    """``workers`` local worker processes on the study (``args``: :func:`_work`'s)."""
    import optuna

    ctx = multiprocessing.get_context("spawn")
    bar = _Bar(trials, monitor) if verbose and sys.stderr.isatty() else None
    if bar is not None:  # the workers stay quiet; this process shows the study
        args = (*args[:-1], 0)
    procs = [ctx.Process(target=_worker_main, args=(*args, i)) for i in range(workers)]
    for p in procs:
        p.start()
    try:
        while bar is not None and any(p.is_alive() for p in procs):
            bar.update(optuna.load_study(study_name=name, storage=rdb))
            time.sleep(1.0)
    finally:
        for p in procs:
            p.join()
        if bar is not None:
            bar.update(optuna.load_study(study_name=name, storage=rdb))
            bar.close()
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        raise DlforgeError(f"{len(bad)} of {workers} tuning workers failed (exit codes "
                           f"{bad}); see their messages above")


def _summarise(cfg: RunConfig, out: Path, url: str, name: str, heartbeat: int, monitor: str,
               direction: str, best_run: bool, refit: bool, seconds: float,
               say: Callable[[str], None], train: TrainRun,
               parent: Tracker | None = None) -> TuneResult:
    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name=name, storage=_storage(url, heartbeat))
    trials = [t for t in study.get_trials() if _counts_for_budget(t)]
    rows = []
    for t in trials:
        value = t.value if t.state == TrialState.COMPLETE else None
        row = {"trial": t.number, "state": t.state.name.lower(), monitor: value,
               **{f"param_{k}": v for k, v in t.params.items()},
               "epochs_reported": len(t.intermediate_values),
               "seconds": (t.duration.total_seconds() if t.duration else None),
               "error": t.user_attrs.get("error", "")}
        rows.append(row)
    table = pd.DataFrame(rows)
    with atomic_file(out / "trials.csv") as tmp:
        table.to_csv(tmp, index=False)
    _plots(study, out / "plots", say)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best_value, best_params, best_dir = None, {}, None
    if complete:
        best = (min if direction == "minimize" else max)(complete, key=lambda t: t.value)
        best_value, best_params = best.value, dict(best.params)
        say(f"best: trial {best.number}, val {monitor} {best.value:.4f} "
            f"({', '.join(f'{k}={_short(v)}' for k, v in best.params.items())}); "
            f"{len(trials)} trials in {seconds:.0f} s")
        if best_run:
            overrides = copy.deepcopy(best.user_attrs.get("overrides", {}))
            if refit:  # train + validation rows, as many epochs as the best trial needed
                steps = best.intermediate_values
                pick = min if direction == "minimize" else max
                epochs = pick(steps, key=lambda e: steps[e]) if steps else cfg.train.epochs
                overrides.update({"data.validation_split": 0.0, "train.patience": 0,
                                  "train.epochs": int(epochs) if epochs else None})
            best_cfg = validate_config(apply_overrides(
                {k: v for k, v in config_to_dict(cfg).items() if k != "tune"}, overrides))
            best_dir = out / "best"
            say(f"training the best configuration into {best_dir}"
                + (" on the training and validation rows" if refit else ""))
            if parent is None:
                train(best_cfg, best_dir, overwrite=True, verbose=0)
            else:  # a child run of the study's, with the run directory's files
                with Tracker.open(best_cfg, "best", parent=parent.ref(), verbose=0,
                                  tags={"dlforge.best_trial": str(best.number)}) as child:
                    clf = train(best_cfg, best_dir, overwrite=True, verbose=0,
                                callbacks=(child,))
                    child.finish(clf.config_, clf.metrics_, best_dir)
    else:
        say("no trial completed; nothing to keep")
    if parent is not None:
        parent.finish(metrics={} if best_value is None else {f"best_val_{monitor}": best_value},
                      run_dir=out, tags={"dlforge.objective": f"val {monitor} ({direction})",
                                         **({"dlforge.best_trial": str(best.number)}
                                            if complete else {})})
    return TuneResult(name, _redact(url), out, monitor, direction, table, best_value,
                      best_params, best_dir)


def _plots(study: Any, folder: Path, say: Callable[[str], None]) -> None:
    """Optimisation history, parameter importances and parallel coordinates (PNG)."""
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    folder.mkdir(parents=True, exist_ok=True)
    for fname, plot in (("history.png", ovm.plot_optimization_history),
                        ("importances.png", ovm.plot_param_importances),
                        ("parallel_coordinate.png", ovm.plot_parallel_coordinate)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # optuna marks these plots experimental
                ax = plot(study)
            fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
            fig.set_size_inches(9, 5)
            fig.tight_layout()
            with atomic_file(folder / fname) as tmp:
                fig.savefig(tmp, format="png", dpi=110)
            plt.close(fig)
        except Exception as err:  # e.g. importances need 2+ completed trials
            say(f"plot {fname} skipped: {_first_line(err)}")
