"""``dlforge train`` and ``dlforge compare``: a run from a config file or from flags.

The hyperparameter flags are not written here: every row of the parameter table
(:mod:`dlforge.config.params`) with a flag becomes an option of ``train`` (:func:`param_flags`),
so a new hyperparameter is one row there. This module writes only the flags that say which
columns are inputs, and where the run goes.
"""

from __future__ import annotations

import functools
import inspect
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dlforge.cli import seq2seq
from dlforge.cli._common import ARGV, TRACK_HELP, Commands, err, privacy_flags
from dlforge.cli._common import examples as _examples
from dlforge.cli.report import cv_summary, leaderboard_table, metrics_table, prog
from dlforge.config import (
    add_trackers,
    apply_overrides,
    default_family,
    load_config,
    resolve_data_path,
    validate_config,
)
from dlforge.config.params import Param, flag_params, resolve_path
from dlforge.data.frames import read_data
from dlforge.data.io import read_table
from dlforge.errors import ConfigError
from dlforge.estimators import files
from dlforge.estimators.tabular import infer_inputs
from dlforge.train.distributed import is_main_process

__all__ = ["COMMANDS", "param_flags"]

COMMANDS = Commands()

# Flags that name the input columns (not hyperparameters: they come before the table).
INPUT_FLAGS = ("text", "image", "audio", "numeric", "category", "sequence", "kind", "forecast",
               "covariates", "exogenous")
KINDS = ("text", "image", "audio", "table")
_PLAIN = {"int": int, "float": float, "str": str}


# ------------------------------------------------------------------------ the table's flags
def _option(p: Param) -> inspect.Parameter:
    """The typer option of one row: ``--name VALUE`` (text for lists and sizes, parsed by
    :func:`_parse`), or ``--name`` alone for a switch."""
    if p.parse == "switch":
        kind: Any = bool | None
        info = typer.Option(f"--{p.flag}", help=p.help)
    else:
        kind = (_PLAIN[p.type] if p.parse == "plain" else str) | None
        info = typer.Option(f"--{p.flag}", help=p.help)
    return inspect.Parameter(p.dest, inspect.Parameter.KEYWORD_ONLY, default=None,
                             annotation=Annotated[kind, info])


def param_flags(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with one option per flagged row of the parameter table, in place of its
    ``params`` argument; ``fn`` gets the rows' values as ``params`` (by row name, None where
    not given)."""
    rows = flag_params()
    own = inspect.signature(fn, eval_str=True)
    names = list(own.parameters)
    at = names.index("params")
    before = [own.parameters[n] for n in names[:at]]
    after = [own.parameters[n] for n in names[at + 1:]]
    table = [_option(p) for p in rows]
    signature = own.replace(parameters=[*before, *table, *after])

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        params = {p.name: kwargs.pop(p.dest) for p in rows}
        return fn(**kwargs, params=params)

    command.__signature__ = signature  # type: ignore[attr-defined]
    command.__annotations__ = {q.name: q.annotation for q in signature.parameters.values()}
    return command


def _ints(flag: str, value: str, sep: str = ",") -> list[int]:
    try:
        out = [int(v) for v in value.replace(" ", "").split(sep) if v]
    except ValueError:
        raise ConfigError(f"--{flag}: expected whole numbers separated by {sep!r}, got "
                          f"{value!r}") from None
    if not out:
        raise ConfigError(f"--{flag}: expected at least one number")
    return out


def _names(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _parse(p: Param, value: Any) -> Any:
    """A flag's text as the value its config key takes."""
    if value is None or p.parse in ("plain", "switch"):
        return value
    if p.parse == "names":
        return _names(value) or None
    if p.parse == "size":
        size = _ints(p.flag or p.name, value.lower().replace("x", ","))
        size = size * 2 if len(size) == 1 else size
        if len(size) != 2:
            raise ConfigError(f"--{p.flag}: expected HxW such as 32x32, got {value!r}")
        return size
    return _ints(p.flag or p.name, value)


def _config_keys(params: dict[str, Any], inputs: list[dict[str, Any]],
                 forecast: bool = False) -> dict[str, Any]:
    """The given flags as dotted config keys, each row's ``<kind>`` slot resolved to the
    run's input of that kind."""
    family = params["model"] or ("rnn" if forecast else default_family(inputs))
    keys = {}
    for p in flag_params():
        v = _parse(p, params[p.name])
        if v is None:
            continue
        if p.name == "hidden" and family != "mlp":  # the RNN's hidden size is one number
            if len(v) != 1:
                raise ConfigError(f"--hidden: the {family} model takes one hidden size, got "
                                  f"{len(v)}")
            v = v[0]
        if p.name in ("folds", "families") and params["model"] != "auto":
            raise ConfigError(f"--{p.flag}: only for model selection (--model auto, or dlforge "
                              "compare)")
        if p.path.startswith("forecast.") and not forecast:
            raise ConfigError(f"--{p.flag}: only for forecasting (--forecast COLUMN)")
        if p.path.startswith("seq2seq."):
            raise ConfigError(f"--{p.flag}: only for sequence to sequence (--source COLUMN "
                              "--target COLUMN)")
        keys[resolve_path(p.path, inputs, forecast, name=f"--{p.flag}")] = v
    if "train.seed" in keys:
        keys["data.seed"] = keys["train.seed"]
    return keys


# ------------------------------------------------------------------------------------ train
def _inputs_from_flags(cols: dict[str, Any], data: str | None, label: str | None
                       ) -> list[dict[str, Any]]:
    """The ``inputs`` of a run given by flags: --text, --image, --numeric, --category,
    --sequence, or --kind table (every column but the label, numeric or category by its
    values)."""
    kind = cols["kind"]
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    numeric, category = _names(cols["numeric"]), _names(cols["category"])
    text, image, audio = cols["text"], cols["image"], cols["audio"]
    if kind == "image" and image is None:
        if data is None or not Path(data).is_dir():
            raise ConfigError("--kind image: --data must be a folder of class sub-folders "
                              "(or name the image-path column of a table with --image)")
        image = "image"
    if kind == "audio" and audio is None:
        if data is None or not Path(data).is_dir():
            raise ConfigError("--kind audio: --data must be a folder of class sub-folders of "
                              "clips (or name the audio-path column of a table with --audio)")
        audio = "audio"
    if kind == "table":
        if data is None or label is None:
            raise ConfigError("--kind table needs --data FILE and --label COLUMN")
        return infer_inputs(read_table(data), [label], numeric, category,
                            [text] if text else [])
    inputs = [{"name": text, "type": "text"}] if text else []
    if image:
        inputs.append({"name": image, "type": "image"})
    if audio:
        inputs.append({"name": audio, "type": "audio"})
    if cols["sequence"]:
        inputs.append({"name": cols["sequence"], "type": "sequence"})
    inputs += [{"name": c, "type": "numeric"} for c in numeric]
    inputs += [{"name": c, "type": "category"} for c in category]
    return inputs


def _config(config: Path | None, cols: dict[str, Any], params: dict[str, Any]) -> Any:
    """The run config the flags describe: a config file with the flags on top, a forecast
    (--forecast), or the inputs named by flags."""
    if config is not None:
        bad = [f"--{k}" for k in INPUT_FLAGS if cols[k] is not None]
        if bad:
            raise ConfigError(f"{', '.join(bad)}: with a config file, the inputs come from its "
                              "inputs: list")
        plain = load_config(config)
        inputs = [i.model_dump() for i in plain.inputs]
        cfg = load_config(config, overrides=_config_keys(params, inputs,
                                                         plain.forecast is not None))
        if params["data"] is None:
            resolve_data_path(cfg, config)
        return cfg
    if cols["forecast"] is not None:
        if params["data"] is None:
            raise ConfigError("missing --data: forecasting needs --data FILE (a table in time "
                              "order)")
        base = {"forecast": {"targets": _names(cols["forecast"]),
                             "covariates": _names(cols["covariates"]),
                             "exogenous": _names(cols["exogenous"])}}
        return validate_config(apply_overrides(base, _config_keys(params, [], True)),
                               source="options")
    data = params["data"]
    inputs = _inputs_from_flags(cols, data, params["label"])
    if params["label"] is None and data is not None and Path(data).is_dir() and inputs and \
            inputs[0]["type"] in ("image", "audio"):
        params = {**params, "label": "label"}  # a folder of classes: its names are the labels
    missing = [f for f, v in (("--data", data), ("--text", inputs or None),
                              ("--label", params["label"])) if v is None]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)}: without a config file, train needs "
                          "--data FILE, --label COLUMN and the inputs: --text COLUMN, --image, "
                          "--audio, --numeric, --category, --sequence or --kind "
                          "image|audio|table (or "
                          "--forecast COLUMN)")
    return validate_config(apply_overrides({"inputs": inputs, "output": {}},
                                           _config_keys(params, inputs)), source="options")


@COMMANDS(epilog=_examples(
    "dlforge train --data tweets.csv --text text --label source --out runs/tweets",
    "dlforge train --data reviews.jsonl --text review --label rating --model cnn --epochs 10 "
    "--out runs/cnn",
    "dlforge train run.yaml --epochs 3 --lr 1e-3   # flags override the file",
    "dlforge train --data t.csv --text text --label y --augment-delete 0.1 --augment-mask 0.1 "
    "--out runs/aug",
    "dlforge train --resume runs/tweets            # continue an interrupted run",
    "dlforge train --data t.csv --text text --label y --model cnn --cv 5 --out runs/cnn",
    "dlforge train --data images/ --kind image --image-size 32x32 --augment-flip 0.5 "
    "--out runs/images",
    "dlforge train --data speech/train --kind audio --augment-time-mask 10 "
    "--augment-freq-mask 5 --out runs/speech",
    "dlforge train --data clips.csv --audio path --label word --model crnn --out runs/crnn",
    "dlforge train --data credit.csv --kind table --label default --out runs/credit",
    "dlforge train --data reviews.csv --text review --numeric price --category brand "
    "--label rating --out runs/mixed",
    "dlforge train --data t.csv --text text --label y --model models/bert-base "
    "--freeze-layers 8 --lr 2e-5 --head-lr 1e-3 --out runs/bert",
    "dlforge train --data air.csv --forecast value --time time --window 24 --horizon 12 "
    "--out runs/air",
    "dlforge train --data ecg.jsonl --sequence trace --label rhythm --model rnn --out runs/ecg",
    "dlforge train --data t.csv --text text --label y --dp-epsilon 8 --out runs/private",
    "dlforge train --data t.csv --text text --label y --track mlflow,tensorboard "
    "--out runs/tracked",
))
@param_flags
def train(
    config: Annotated[Path | None, typer.Argument(help="A YAML run config.")] = None,
    kind: Annotated[str | None, typer.Option(
        help="text, image, audio or table (table: every column but --label is an input; "
             "image, audio: --data is a folder of class sub-folders).")] = None,
    text: Annotated[str | None, typer.Option(help="The text column.")] = None,
    image: Annotated[str | None, typer.Option(help="A column of image paths.")] = None,
    audio: Annotated[str | None, typer.Option(
        help="A column of audio file paths (WAV, FLAC, OGG, MP3).")] = None,
    numeric: Annotated[str | None, typer.Option(help="Numeric columns, a,b,c.")] = None,
    category: Annotated[str | None, typer.Option(help="Categorical columns, a,b,c.")] = None,
    sequence: Annotated[str | None, typer.Option(
        help="A column of numeric sequences (lists, or numbers separated by spaces).")] = None,
    forecast: Annotated[str | None, typer.Option(
        help="Forecast these columns (a,b) of a table in time order.")] = None,
    covariates: Annotated[str | None, typer.Option(
        help="Forecasting: other series whose past values are inputs.")] = None,
    exogenous: Annotated[str | None, typer.Option(
        help="Forecasting: columns known in advance (their future values are inputs).")] = None,
    source: Annotated[str | None, typer.Option(
        help="Sequence to sequence: the source text column (with --target).")] = None,
    target: Annotated[str | None, typer.Option(
        help="Sequence to sequence: the target text column, the text to generate.")] = None,
    *,
    params: dict[str, Any],
    out: Annotated[Path | None, typer.Option(help="Run directory to write.")] = None,
    nproc: Annotated[int | None, typer.Option(
        help="Train with N data-parallel processes on this machine (torchrun, DDP: gloo on "
             "CPU, NCCL on GPU); --batch-size stays the global batch.")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue the interrupted run whose --out was this folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run at --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
    track: Annotated[list[str] | None, typer.Option(help=TRACK_HELP)] = None,
) -> None:
    """Train a model on text, images, audio, a table, a sequence or a series, and write a run
    directory. --model auto (or dlforge compare) picks the family by cross-validation."""
    cols = {"kind": kind, "text": text, "image": image, "audio": audio, "numeric": numeric,
            "category": category, "sequence": sequence, "forecast": forecast,
            "covariates": covariates, "exogenous": exogenous}
    if source is not None or target is not None or seq2seq.is_seq2seq_file(config):
        seq2seq.train_seq2seq(config, source, target, {**cols, "track": track, "nproc": nproc},
                              params, out, resume, overwrite, quiet)
        return
    launch = nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ
    privacy_flags(params["dp_epsilon"], params["dp_delta"], params["dp_max_grad_norm"],
                  params["dp_accountant"])  # checked here; the values reach the config
    # through the parameter table (privacy.*)
    if resume is not None:
        given = [f"--{p.flag}" for p in flag_params() if params[p.name] is not None]
        given += [f"--{k}" for k, v in cols.items() if v is not None]
        given += ["--track"] if track else []
        if config is not None or given or (out is not None and out != resume):
            raise ConfigError("--resume continues with the run's saved config; pass no config "
                              f"file or other options (got {', '.join(given) or config or out})")
        if launch:
            files.preflight(None, resume, resume=True)
            _launch_distributed(nproc)  # re-runs this command under torchrun, then exits
        _report_trained(files.train(None, resume, resume=True, verbose=0 if quiet else 1),
                        resume)
        return
    if out is None:
        raise ConfigError("--out: name the run directory to write, e.g. --out runs/my-model")
    cfg = _config(config, cols, params)
    cfg.tracking = add_trackers(cfg.tracking, track)
    if launch and cfg.privacy is not None:
        raise ConfigError("--nproc: differentially private training (--dp-epsilon, privacy:) "
                          "runs in one process; remove --nproc")
    if launch:  # check everything a user can get wrong once, here, then start the processes
        files.preflight(cfg, out, overwrite=overwrite)
        read_data(cfg)
        _launch_distributed(nproc)
    try:
        clf = files.train(cfg, out, overwrite=overwrite, verbose=0 if quiet else 1)
    except KeyboardInterrupt:
        if files.resumable(out):
            err(f"interrupted; continue from the last finished epoch with: {prog()} train "
                f"--resume {out}")
        else:  # no epoch finished, so no checkpoint: the same command starts again
            err("interrupted before the first epoch finished, so there is nothing to resume; "
                f"start again with: {prog()} {shlex.join(ARGV)}")
        raise typer.Exit(130) from None
    _report_trained(clf, out)


def _launch_distributed(nproc: int) -> None:
    """Run the same train command in ``nproc`` processes with PyTorch's torchrun."""
    args, skip = [], False
    for a in ARGV:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        args.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "dlforge.cli", *args]
    env = dict(os.environ)
    env.setdefault("DLFORGE_THREADS_PER_PROCESS", str(max(1, (os.cpu_count() or 1) // nproc)))
    env.setdefault("LOGLEVEL", "ERROR")  # torchrun's own banner and warnings
    done = subprocess.run(cmd, env=env)
    if done.returncode:
        err(f"distributed training failed (exit code {done.returncode}); the first error is "
            "above")
    raise typer.Exit(2 if done.returncode else 0)


def _report_trained(clf: Any, out: Path) -> None:
    if not is_main_process():
        return
    console = Console()
    board = leaderboard_table(clf.metrics_)
    if board is not None:
        console.print(board)
    console.print(metrics_table(clf.metrics_))
    spent = getattr(clf, "privacy_", None)
    if spent:
        console.print(f"Differential privacy: ε = {spent['epsilon']:.3g} spent at δ = "
                      f"{spent['delta']:g} ({spent['accountant']} accountant, noise multiplier "
                      f"{spent['noise_multiplier']:.3g}, max grad norm {spent['max_grad_norm']:g})")
    cv = cv_summary(clf.metrics_)
    if cv:
        console.print(cv, soft_wrap=True)
    data, me = Path(str(clf.config_.data.path)), prog()
    new = (data.with_name("new_" + data.name) if data.is_dir() else  # a folder of images
           data.with_name("new" + "".join(data.suffixes) if data.suffix else "new.csv"))
    hint = "" if clf.metrics_.get("test") else "; --test-split holds rows out for a test score"
    console.print(
        f"\nRun saved to [b]{out}[/b]. Next:\n"
        f"  {me} evaluate {out} --data {new.name}   # labelled rows it has not seen "
        f"({data.name} trained it{hint})"
        f"\n  {me} predict {out} --data {new.name} --out predictions.csv\n"
        f"  {me} info {out}", soft_wrap=True)


# ---------------------------------------------------------------------------------- compare
@COMMANDS(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog=_examples(
        "dlforge compare --data tweets.csv --text text --label source --epochs 3 "
        "--out runs/best",
        "dlforge compare --data air.csv --forecast value --time time --window 24 --horizon 12 "
        "--folds 4 --out runs/air",
        "dlforge compare run.yaml --families cnn,rnn --out runs/best",
    ))
def compare(ctx: typer.Context) -> None:
    """Train every model family that fits the data under the same budget, score each by
    k-fold cross-validation (stratified; expanding windows in time for forecasting), print the
    leaderboard and keep the winner as the run (train --model auto). Takes train's options,
    plus --folds K (default 3) and --families a,b."""
    args = list(ctx.args)
    if "--model" in args:
        raise ConfigError("--model: compare chooses the model itself; use --families a,b to "
                          "limit the candidates")
    root = ctx.find_root()
    command = root.command.get_command(root, "train")  # type: ignore[attr-defined]
    ARGV[:] = ["train", *args, "--model", "auto"]
    command.main(ARGV[1:], prog_name=f"{root.info_name} train", standalone_mode=True)
