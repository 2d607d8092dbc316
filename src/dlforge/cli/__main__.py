"""``python -m dlforge.cli``: the ``dlforge`` command (torchrun starts it this way)."""

from dlforge.cli import entry

entry()
