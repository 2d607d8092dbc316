"""The version of dlforge: one place, read by the package and by what it writes (run manifests,
the server)."""

__version__ = "0.1.0"
