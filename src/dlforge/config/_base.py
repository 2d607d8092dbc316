"""The base every section of the run schema derives from: strict, validated on assignment."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from dlforge._atomic import atomic_file
from dlforge.errors import ConfigError

__all__ = ["_Strict", "dump_settings", "load_settings", "validate_settings"]


class _Strict(BaseModel):
    # Unknown keys are errors; assignments are validated too (set_params goes through them).
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


M = TypeVar("M", bound=BaseModel)


def validate_settings(cls: type[M], data: dict[str, Any], source: str) -> M:
    """``cls(**data)``, or one ConfigError whose parts each name a key, what was expected and
    what came (an unknown key lists the valid ones)."""
    try:
        return cls(**data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            key = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = f"unknown setting; valid ones are: {', '.join(cls.model_fields)}"
            elif "input" in e and not isinstance(e["input"], dict):
                msg += f" (got {e['input']!r})"
            lines.append(f"{source}: {key}: {msg}" if key else f"{source}: {msg}")
        raise ConfigError("; ".join(lines)) from None


def dump_settings(cfg: BaseModel, path: Path) -> None:
    """``cfg`` as YAML at ``path``, written beside and renamed into place."""
    text = yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def load_settings(cls: type[M], path: Path) -> M:
    """The YAML file at ``path`` validated as ``cls`` (errors name the file)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: unreadable ({err})") from None
    return validate_settings(cls, data if isinstance(data, dict) else {}, str(path))
