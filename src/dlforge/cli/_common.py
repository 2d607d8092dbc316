"""What the command groups share: the one way a module registers its commands, help text,
the error line, and the ``--dp-*`` flags' check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from dlforge.errors import ConfigError

__all__ = ["ARGV", "TRACK_HELP", "Commands", "err", "examples", "privacy_flags"]

# --track of dlforge train and dlforge tune (both add backends to the config's tracking:).
TRACK_HELP = ("Log the run to mlflow, tensorboard or both (repeat the flag, or mlflow,tensorboard; "
              "the track extra). MLflow: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here; "
              "settings in the config's tracking: section.")

# The arguments of the running command (dlforge.cli.main sets them; train --nproc re-runs them
# under torchrun).
ARGV: list[str] = []


class Commands:
    """The commands of one group module: ``@COMMANDS(epilog=...)`` collects a function with
    its ``typer.Typer.command`` arguments; :mod:`dlforge.cli` puts every group's commands on
    the app with :meth:`register` (the group modules never import the app)."""
    def __init__(self) -> None:
        self.items: list[tuple[Callable[..., Any], dict[str, Any]]] = []

    def __call__(self, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def collect(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.items.append((fn, kwargs))
            return fn

        return collect

    def register(self, app: typer.Typer) -> None:
        for fn, kwargs in self.items:
            app.command(**kwargs)(fn)


def err(msg: str) -> None:
    """A user error: one line on stderr."""
    typer.echo(f"error: {msg}", err=True)


def examples(*lines: str) -> str:
    """An "Examples" epilog, one command a line."""
    # Rich help joins single newlines; one paragraph per example keeps them on their own lines.
    return "[b]Examples[/b]\n\n" + "\n\n".join(f"  [cyan]$ {ln}[/cyan]" for ln in lines)


def privacy_flags(epsilon: float | None, delta: float | None, max_grad_norm: float | None,
                  accountant: str | None) -> dict[str, Any] | None:
    """The ``privacy`` settings from the ``--dp-*`` flags of ``train`` and ``lm train`` (None
    without ``--dp-epsilon``); the other flags alone are an error: they need the budget."""
    given = {"target_epsilon": epsilon, "target_delta": delta, "max_grad_norm": max_grad_norm,
             "accountant": accountant}
    flags = {"target_delta": "--dp-delta", "max_grad_norm": "--dp-max-grad-norm",
             "accountant": "--dp-accountant"}
    if epsilon is None:
        named = [flag for key, flag in flags.items() if given[key] is not None]
        if named:
            raise ConfigError(f"{', '.join(named)}: differentially private training needs its "
                              "budget too: add --dp-epsilon (e.g. --dp-epsilon 8)")
        return None
    return {k: v for k, v in given.items() if v is not None}
