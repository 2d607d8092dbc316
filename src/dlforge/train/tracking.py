"""Experiment tracking: a run's resolved config (as params), its metrics after every epoch
(step = epoch) and its files (plots, model card, metrics) logged to MLflow and/or TensorBoard.

``tracking:`` in the config turns it on (``--track mlflow,tensorboard`` on ``dlforge train``
and ``dlforge tune``, ``track=`` on an estimator). A :class:`Tracker` is a callback of the
training loop that whoever drives the training opens first and finishes last, once the
resolved config and the run directory exist:

- ``dlforge train`` (``dlforge.estimators.files.train``): one run, named after the run
  directory, its files as artifacts;
- an estimator's ``fit`` (:func:`tracked_fit`): one run, named after the estimator;
- ``dlforge tune``: a parent run for the study, a child run per trial (its config and sampled
  values, its epochs, its objective) and one for the best configuration trained into best/.

Opening is strict: an MLflow server that does not answer is a ConfigError before any training.
After that, tracking never stops training: a backend that fails says so in one warning line
and stops logging.

MLflow's store is ``tracking.mlflow.uri``, else ``MLFLOW_TRACKING_URI``, else
``sqlite:///mlflow.db`` in the working directory: no server either, and MLflow's own default
(``mlflow ui`` in that folder shows the runs; artifacts go to ./mlruns). MLflow 3 refuses the
older ./mlruns file store (maintenance mode) unless ``MLFLOW_ALLOW_FILE_STORE=true``.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import json
import numbers
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlforge._extras import require
from dlforge._version import __version__
from dlforge.config import MlflowTracking, RunConfig, TensorBoardTracking, config_to_dict
from dlforge.errors import ConfigError
from dlforge.train.callbacks import Callback
from dlforge.train.distributed import is_main_process

if TYPE_CHECKING:
    from dlforge.train.trainer import Trainer

__all__ = ["DEFAULT_EXPERIMENT", "DEFAULT_MLFLOW_URI", "TRACK_FEATURE", "Tracker",
           "config_params", "flatten", "run_tags", "scalars", "tracked_fit"]

TRACK_FEATURE = "experiment tracking (--track, tracking:)"
DEFAULT_MLFLOW_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "dlforge"
# The files of a run directory (or a study folder) logged as artifacts, with its plots/.
RUN_FILES = ("MODEL_CARD.md", "metrics.json", "history.csv", "config.yaml", "data.json",
             "trials.csv")
_PARAM_CHARS = 6000  # MLflow's longest param value


# ------------------------------------------------------------------------------- the values
def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts (and lists of dicts, by index) as one level of dotted keys; a list of plain
    values stays one value."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    if isinstance(obj, list | tuple) and any(isinstance(v, dict) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}{i}."))
        return out
    return {prefix[:-1]: obj}


def config_params(cfg: RunConfig, child: bool = False) -> dict[str, str]:
    """The config as flat params (``train.lr``, ``inputs.0.vocab_size``), without the tracking
    section (and, for a child run of a study, without the search space)."""
    skip = ("tracking.", "tune.") if child else ("tracking.",)
    return {k: _text(v) for k, v in flatten(config_to_dict(cfg)).items()
            if not k.startswith(skip)}


def scalars(values: dict[str, Any]) -> dict[str, float]:
    """The numeric leaves of ``values`` (nested dicts flattened; lists, text, flags and None
    left out), as floats."""
    return {k: float(v) for k, v in flatten(values).items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)}


def run_tags(cfg: RunConfig) -> dict[str, str]:
    """The data file, the model family and the dlforge version of a run."""
    tags = {"dlforge.family": cfg.model.name, "dlforge.version": __version__}
    if cfg.data.path:
        tags["dlforge.dataset"] = Path(cfg.data.path).name
    if cfg.forecast is None and cfg.output is not None:
        tags["dlforge.output"] = cfg.output.name
    return tags


def _text(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, list | tuple | dict) else str(v)
    return s[:_PARAM_CHARS]


def _key(k: str) -> str:
    """A metric or param name MLflow accepts (letters, digits, _ - . / and space)."""
    return re.sub(r"[^\w\-./ ]", "_", k)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _redact(uri: str) -> str:
    """``uri`` with a password in it replaced by ***."""
    return re.sub(r"(://[^/:@]*:)[^/@]*@", r"\1***@", uri)


def _warn(msg: str) -> None:
    print(f"warning: tracking: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- the tracker
class Tracker(Callback):
    """One tracked run on every backend the config's ``tracking:`` names: a callback that logs
    each epoch's row (train loss, validation metrics, learning rate, speed; with
    ``train.restarts``, the later restarts under ``restart_N/``), then :meth:`finish`. Used as
    a context manager, a run left unfinished by an exception ends FAILED (KILLED on Ctrl-C)."""

    def __init__(self, backends: list[Any], cfg: RunConfig | None = None, child: bool = False):
        self.backends = backends
        self.cfg = cfg  # as given: its params are logged if the run ends before a resolved one
        self.child = child
        self.finished = False
        self._params_logged = False
        self._trainings = 0
        self._epoch = 0

    @classmethod
    def open(cls, cfg: RunConfig, name: str, *, parent: dict[str, Any] | None = None,
             tags: dict[str, str] | None = None, params: dict[str, Any] | None = None,
             verbose: int = 1) -> Tracker:
        """Start the run ``name`` on each backend of ``cfg.tracking`` (a child of ``parent``,
        another tracker's :meth:`ref`, when given). A backend that cannot start is a
        ConfigError (MissingExtraError without the track extra); a child run that cannot
        start is a warning, and goes untracked there."""
        tracking = cfg.tracking
        if tracking is None:
            raise ValueError("cfg.tracking is not set")
        tags = {**run_tags(cfg), **(tags or {})}
        kinds = [(_Mlflow, tracking.mlflow), (_TensorBoard, tracking.tensorboard)]
        backends: list[Any] = []
        try:
            for kind, settings in kinds:
                if settings is None or (parent is not None and kind.name not in parent):
                    continue
                try:
                    backends.append(kind(settings, name, tags,
                                         None if parent is None else parent[kind.name]))
                except ConfigError as err:
                    if parent is None:
                        raise
                    _warn(f"{kind.name}: {err}; run {name!r} goes untracked there")
        except BaseException:
            for b in backends:
                b.close("FAILED")
            raise
        tracker = cls(backends, cfg, child=parent is not None)
        if params:
            tracker.log_params(params)
        if verbose:
            for b in backends:
                print(f"tracking: {b.where}", file=sys.stderr, flush=True)
        return tracker

    def ref(self) -> dict[str, Any]:
        """What a child run needs to nest under this one (plain data: it goes to worker
        processes)."""
        return {b.name: b.ref for b in self.backends}

    # ------------------------------------------------------------------ the callback
    def on_train_begin(self, trainer: Trainer) -> None:
        self._trainings += 1

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        prefix = "" if self._trainings <= 1 else f"restart_{self._trainings}/"
        epoch = int(row["epoch"])
        self._epoch = max(self._epoch, epoch)
        self.log_metrics({f"{prefix}{k}": v for k, v in scalars(row).items() if k != "epoch"},
                         epoch)

    # ------------------------------------------------------------------ logging
    def log_params(self, params: dict[str, Any]) -> None:
        self._each("log_params", {_key(k): _text(v) for k, v in params.items()})
        self._params_logged = True

    def log_metrics(self, values: dict[str, Any], step: int | None = None) -> None:
        clean = {_key(k): float(v) for k, v in values.items()}
        if clean:
            self._each("log_metrics", clean, self._epoch if step is None else step)

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._each("set_tags", {k: str(v) for k, v in tags.items()})

    def finish(self, cfg: RunConfig | None = None, metrics: dict[str, Any] | None = None,
               run_dir: str | Path | None = None, *, status: str = "FINISHED",
               tags: dict[str, Any] | None = None) -> None:
        """End the run: ``cfg`` (the resolved config) as params and tags, the numbers of
        ``metrics`` (the final scores: ``validation.accuracy``, ``test.rmse``, ...), the files
        of ``run_dir`` as artifacts (without one, the config and metrics as files), then
        ``status`` (FINISHED, FAILED or KILLED). Once only."""
        if self.finished:
            return
        self.finished = True
        given = cfg or self.cfg
        if given is not None and not self._params_logged:
            self.log_params(config_params(given, self.child))
        if cfg is not None:
            self.set_tags(run_tags(cfg))
        if tags:
            self.set_tags(tags)
        if metrics:
            self.log_metrics(scalars(metrics))
        if run_dir is not None:
            self.set_tags({"dlforge.run_dir": str(Path(run_dir).resolve())})
            self._each("log_run_dir", Path(run_dir))
        elif cfg is not None:
            import yaml

            files = {"config.yaml": yaml.safe_dump(config_to_dict(cfg), sort_keys=False)}
            if metrics:
                files["metrics.json"] = json.dumps(metrics, indent=2, default=_plain)
            self._each("log_texts", files)
        for b in self.backends:
            try:
                b.close(status)
            except Exception as err:  # never fail a finished training over its log
                _warn(f"{b.name}: could not end the run: {_first_line(err)}")

    def _each(self, method: str, *args: Any) -> None:
        """Call ``method`` on every live backend; one that fails is warned about once and
        stops logging (a tracker's error must not stop the training it watches)."""
        for b in self.backends:
            if not b.alive:
                continue
            try:
                getattr(b, method)(*args)
            except Exception as err:  # any store or network error: report, keep training
                b.alive = False
                _warn(f"{b.name}: {_first_line(err)}; it stops logging this run, the "
                      "training goes on")

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: Any) -> None:
        if not self.finished:
            self.finish(status="FINISHED" if kind is None else
                        "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else str(v)


def tracked_fit(fit: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an estimator's ``_fit_frame(self, df, cfg, source, ..., callbacks=...)``: with
    ``cfg.tracking`` set and no Tracker among the callbacks (``dlforge train`` and ``dlforge
    tune`` bring their own, to log the run directory or to nest the run), the fit is one
    tracked run named after the estimator, ended with its resolved config and metrics."""
    signature = inspect.signature(fit)

    @functools.wraps(fit)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        cfg = bound.arguments["cfg"]
        callbacks = list(bound.arguments.get("callbacks", ()))
        if (cfg.tracking is None or not is_main_process()
                or any(isinstance(c, Tracker) for c in callbacks)):
            return fit(self, *args, **kwargs)
        name = type(self).__name__
        with Tracker.open(cfg, name, tags={"dlforge.estimator": name},
                          verbose=self.verbose) as tracker:
            bound.arguments["callbacks"] = [*callbacks, tracker]
            result = fit(*bound.args, **bound.kwargs)
            tracker.finish(self.config_, self.metrics_)
        return result

    return wrapper


# ------------------------------------------------------------------------------ backends
class _Mlflow:
    """A run in an MLflow tracking store (a SQLite file, a server, any URI MLflow takes),
    written through ``MlflowClient`` (no global active run: safe beside user code)."""

    name = "mlflow"

    def __init__(self, settings: MlflowTracking, run_name: str, tags: dict[str, str],
                 parent: dict[str, Any] | None):
        mlflow = require("mlflow", "track", TRACK_FEATURE)
        self.alive = True
        if parent is not None:
            uri, source, experiment = parent["uri"], "tracking.mlflow.uri", None
        else:
            uri, source = _mlflow_uri(settings)
            _check_server(uri, source)
            experiment = (settings.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME")
                          or DEFAULT_EXPERIMENT)
        try:
            self.client = mlflow.MlflowClient(tracking_uri=uri)
            experiment_id = (parent["experiment_id"] if parent is not None
                             else _experiment(self.client, experiment))
            if parent is not None:
                tags = {**tags, "mlflow.parentRunId": parent["run_id"]}
            run = self.client.create_run(experiment_id, run_name=run_name, tags=tags)
        except ConfigError:
            raise
        except Exception as err:  # MLflow raises many kinds for a bad URI or store
            raise ConfigError(f"{source}: cannot log to MLflow at {_redact(uri)}: "
                              f"{_first_line(err)}") from None
        self.run_id = run.info.run_id
        self.ref = {"uri": uri, "experiment_id": experiment_id, "run_id": self.run_id}
        see = (f"open {_redact(uri)}" if uri.startswith(("http://", "https://"))
               else f"mlflow ui --backend-store-uri {uri}")
        self.where = (f"MLflow run {run_name!r} in experiment {experiment!r} at "
                      f"{_redact(uri)} (to see it: {see})")

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes 100 params a call
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_run_dir(self, folder: Path) -> None:
        for name in RUN_FILES:
            if (folder / name).is_file():
                self.client.log_artifact(self.run_id, str(folder / name))
        if (folder / "plots").is_dir():
            self.client.log_artifacts(self.run_id, str(folder / "plots"), "plots")

    def log_texts(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            self.client.log_text(self.run_id, text, name)

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)


def _mlflow_uri(settings: MlflowTracking) -> tuple[str, str]:
    """(the tracking URI, where it came from): the config, else MLFLOW_TRACKING_URI, else
    the local SQLite file."""
    if settings.uri:
        return settings.uri, "tracking.mlflow.uri"
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env, "MLFLOW_TRACKING_URI"
    return DEFAULT_MLFLOW_URI, "tracking: mlflow"


def _check_server(uri: str, source: str) -> None:
    """Fail fast, before any training, if an HTTP tracking server does not answer (MLflow's own
    client would retry for minutes, then fail at the first epoch)."""
    if not uri.startswith(("http://", "https://")):
        return
    import ssl
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
            pass
    except urllib.error.HTTPError:
        return  # something answered (a proxy, an auth wall): the client will say more
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        if isinstance(reason, ssl.SSLError):
            return  # it answered; MLflow's client has its own TLS settings (MLFLOW_TRACKING_*)
        raise ConfigError(f"{source}: no MLflow server answers at {_redact(uri)} ({reason}); "
                          "start one (mlflow server --host 127.0.0.1 --port 5000) or log to a "
                          f"local file instead (leave the uri unset: {DEFAULT_MLFLOW_URI})"
                          ) from None


def _experiment(client: Any, name: str) -> str:
    """The id of the experiment ``name``, created if it does not exist."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name)
        except Exception:  # another process created it meanwhile: use theirs
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        raise ConfigError(f"tracking.mlflow.experiment: the MLflow experiment {name!r} is "
                          "deleted; restore it (mlflow experiments restore --experiment-id "
                          f"{exp.experiment_id}) or name another")
    return exp.experiment_id


class _TensorBoard:
    """Event files in ``log_dir/<run name>`` (a child in its parent's folder): scalars per
    epoch, the config and tags as text, the plots as images, the model card as text."""

    name = "tensorboard"

    def __init__(self, settings: TensorBoardTracking, run_name: str, tags: dict[str, str],
                 parent: dict[str, Any] | None):
        require("tensorboard", "track", TRACK_FEATURE)
        from torch.utils.tensorboard import SummaryWriter

        self.alive = True
        root = Path(settings.log_dir if parent is None else parent["log_dir"])
        try:
            folder = _fresh(root / re.sub(r"[\\/]", "_", run_name))
        except OSError as err:
            raise ConfigError(f"tracking.tensorboard.log_dir: cannot write to {root}: "
                              f"{err.strerror or err}") from None
        self.writer = SummaryWriter(log_dir=str(folder))
        self.tags = dict(tags)
        self.ref = {"log_dir": str(folder)}
        self.where = (f"TensorBoard events in {folder} (to see them: tensorboard --logdir "
                      f"{root if parent is None else Path(parent['log_dir']).parent})")

    def log_params(self, params: dict[str, str]) -> None:
        self.writer.add_text("config", _table(params))

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_run_dir(self, folder: Path) -> None:
        import matplotlib.image

        card = folder / "MODEL_CARD.md"
        if card.is_file():
            self.writer.add_text("model_card", card.read_text(encoding="utf-8"))
        for png in sorted((folder / "plots").glob("*.png")):
            image = matplotlib.image.imread(png)[..., :3]  # (H, W, RGB) in [0, 1]
            self.writer.add_image(f"plots/{png.stem}", image, dataformats="HWC")

    def log_texts(self, files: dict[str, str]) -> None:
        for name, text in files.items():
            self.writer.add_text(name, "\n".join(f"    {line}" for line in text.splitlines()))

    def close(self, status: str) -> None:
        self.writer.add_text("tags", _table({**self.tags, "status": status}))
        self.writer.close()


def _table(values: dict[str, str]) -> str:
    """A Markdown table (TensorBoard's text tab renders it)."""
    rows = [f"| {k} | {str(v).replace('|', '/')} |" for k, v in values.items()]
    return "\n".join(["| key | value |", "|---|---|", *rows])


def _fresh(folder: Path) -> Path:
    """``folder``, created; ``folder-2``, ``folder-3``, ... if it exists already (a run
    trained again under the same name gets its own curves)."""
    for i in itertools.count(1):  # mkdir is the claim: two processes never share a folder
        candidate = folder if i == 1 else folder.with_name(f"{folder.name}-{i}")
        with contextlib.suppress(FileExistsError):
            candidate.mkdir(parents=True)
            return candidate
    raise AssertionError("itertools.count does not end")
