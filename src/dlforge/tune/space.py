"""The search space of a study: the config's ``tune:`` keys, each resolved to its config path,
checked against the run, and sampled into a trial's config (define-by-run: a key the sampled
model family does not have, such as ``heads`` for the CNN, is not sampled)."""

from __future__ import annotations

from typing import Any

from dlforge.config import RunConfig, apply_overrides, config_to_dict, validate_config
from dlforge.config.params import resolve_path
from dlforge.errors import ConfigError

__all__ = ["check_space", "sample_config"]


# ---------------------------------------------------------------------------- search space
def _probe(spec: dict[str, list[Any]]) -> Any:
    kind, values = next(iter(spec.items()))
    if kind in ("int", "log_int"):
        return int(values[0])
    return values[0]


def _applies(base: dict[str, Any], overrides: dict[str, Any], path: str, value: Any) -> bool:
    """Whether ``path`` is a key of the config ``base`` + ``overrides`` (for its family)."""
    try:
        validate_config(apply_overrides(base, {**overrides, path: value}))
    except ConfigError as err:
        return "unknown key" not in str(err)
    return True


def _ordered(cfg: RunConfig) -> list[tuple[str, str, dict[str, list[Any]]]]:
    """(name, dotted path, spec), the model family first (other keys depend on it)."""
    assert cfg.tune is not None
    paths = _paths(cfg)
    items = [(name, paths[name], spec) for name, spec in cfg.tune.space.items()]
    return sorted(items, key=lambda t: t[1] != "model.name")


def _paths(cfg: RunConfig) -> dict[str, str]:
    """Each searched key's config path, a short name's ``<kind>`` slot resolved to this run's
    input (see :func:`dlforge.config.params.resolve_path`)."""
    assert cfg.tune is not None
    inputs = [i.model_dump() for i in cfg.inputs]
    return {name: resolve_path(path, inputs, cfg.forecast is not None, name=f"tune.{name}")
            for name, path in cfg.tune.paths().items()}


def _base(cfg: RunConfig) -> dict[str, Any]:
    base = config_to_dict(cfg)
    base.pop("tune", None)
    return base


def check_space(cfg: RunConfig) -> None:
    """ConfigError naming a searched key that is no config key for any searched family."""
    base = _base(cfg)
    families = [{}]
    for _, path, spec in _ordered(cfg):
        if path == "model.name":
            families = [{"model.name": v} for v in spec.get("choice", [])]
            continue
        if not any(_applies(base, fam, path, _probe(spec)) for fam in families):
            searched = " or the searched families" if len(families) > 1 else ""
            raise ConfigError(f"tune.{_name(cfg, path)}: {path!r} is not a key of this run's "
                              f"config (model {base['model']['name']!r}{searched}); use a short "
                              "name (lr, batch_size, epochs, d_model, heads, layers, dropout, "
                              "hidden, model) or a dotted path such as train.warmup")


def _name(cfg: RunConfig, path: str) -> str:
    assert cfg.tune is not None
    return next(n for n, p in _paths(cfg).items() if p == path)


def sample_config(trial: Any, cfg: RunConfig) -> tuple[RunConfig, dict[str, Any]]:
    """The trial's config: each searched key sampled (if the sampled family has it)."""
    base = _base(cfg)
    overrides: dict[str, Any] = {}
    for name, path, spec in _ordered(cfg):
        if path != "model.name" and not _applies(base, overrides, path, _probe(spec)):
            continue
        kind, values = next(iter(spec.items()))
        if kind == "choice":
            value = trial.suggest_categorical(name, values)
        elif kind in ("int", "log_int"):
            value = trial.suggest_int(name, int(values[0]), int(values[1]),
                                      log=kind == "log_int")
        else:
            value = trial.suggest_float(name, float(values[0]), float(values[1]),
                                        log=kind == "log_uniform")
        overrides[path] = value
    return (validate_config(apply_overrides(base, overrides), source=f"trial {trial.number}"),
            overrides)

