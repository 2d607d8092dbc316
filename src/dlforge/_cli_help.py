"""Help text shared by the CLI's modules (cli.py, cli_lm.py, cli_audit.py)."""

from __future__ import annotations

__all__ = ["examples"]


def examples(*lines: str) -> str:
    """An "Examples" epilog, one command a line."""
    # Rich help joins single newlines; one paragraph per example keeps them on their own lines.
    return "[b]Examples[/b]\n\n" + "\n\n".join(f"  [cyan]$ {ln}[/cyan]" for ln in lines)
