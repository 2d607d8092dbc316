"""What the CLI's modules share (cli.py, cli_lm.py, cli_audit.py, cli_serve.py): help text,
and the list by which a module beside cli.py hands its commands to the ``dlforge`` app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dlforge.errors import ConfigError

__all__ = ["Commands", "examples", "privacy_flags"]


class Commands:
    """Commands defined in a module beside cli.py: ``@COMMANDS(epilog=...)`` collects a
    function with its ``app.command`` arguments; cli.py registers them on the app (the modules
    cannot import the app: cli.py imports them)."""

    def __init__(self) -> None:
        self.items: list[tuple[Callable[..., Any], dict[str, Any]]] = []

    def __call__(self, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.items.append((fn, kwargs))
            return fn

        return register


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

