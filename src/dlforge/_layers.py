"""The layer order of the package, declared once: a module imports only from its own unit or
from units in lower layers — at module level and inside functions alike (``TYPE_CHECKING``
blocks aside). Units in the same layer are side by side and do not import one another.
``tests/test_layers.py`` walks every import and holds the package to this table;
``docs/architecture.md`` draws it.
"""

from __future__ import annotations

__all__ = ["LAYERS"]

# Lowest first. Each entry is one layer: the units (a module or a subpackage) in it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("dlforge._version", "dlforge.errors", "dlforge._atomic", "dlforge._layers",
     "dlforge.reference"),                          # leaves: no dlforge imports at all
    ("dlforge._extras",),                           # optional dependencies: import or one line
    ("dlforge.config",),                            # the run schema and its parameter table
    ("dlforge.data",),                              # read, clean, split, features
    ("dlforge.models",),                            # layers and one file per family
    ("dlforge.train",),                             # the training loop, metrics, DP-SGD
    ("dlforge.run", "dlforge.testing"),             # the run directory (files only); check_model
    ("dlforge.tune", "dlforge.audit", "dlforge.estimate", "dlforge.lm"),  # side by side
    ("dlforge.estimators",),                        # the Python front door
    ("dlforge.serve",),                             # HTTP, ONNX
    ("dlforge.cli",),                               # the dlforge command
    ("dlforge",),                                   # the public names (__init__)
)
