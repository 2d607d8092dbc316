"""The ``dlforge`` command: one module per command group, each a list of commands
(:class:`~dlforge.cli._common.Commands`) that this module puts on the app. A command parses its
flags and calls the Python API; every user error (DlforgeError, a bad flag) is one line on
stderr and exit code 2.

``train`` (train, compare), ``tune``, ``runs`` (evaluate, predict, info), ``quickstart``,
``serve`` (export, serve), ``audit`` (explain, audit, report), ``estimate``, ``lm`` (lm train,
generate, eval); ``report`` holds the tables they print.
"""

from __future__ import annotations

import sys

import typer

from dlforge.cli import audit, estimate, lm, quickstart, runs, serve, train, tune
from dlforge.cli._common import ARGV, err
from dlforge.errors import DlforgeError
from dlforge.train.distributed import is_main_process

__all__ = ["app", "entry", "main"]

app = typer.Typer(
    name="dlforge",
    help="From a data file to a trained, evaluated deep-learning model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)
for _group in (train, tune, runs, quickstart, serve, audit, estimate):
    _group.COMMANDS.register(app)
lm_app = typer.Typer(
    name="lm",
    help="Language models: train a GPT on any text, generate from it, score it.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
lm.COMMANDS.register(lm_app)
app.add_typer(lm_app, name="lm")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (usage errors and user errors: 2)."""
    ARGV[:] = [str(a) for a in (argv if argv is not None else sys.argv[1:])]
    try:
        app(args=argv, standalone_mode=True)  # typer reports bad flags itself, exit code 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except DlforgeError as e:
        if is_main_process():  # under torchrun, one process speaks for all
            err(str(e))
        return 2
    return 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
