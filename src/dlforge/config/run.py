"""The whole run (:class:`RunConfig`) and the front doors onto it: validating plain data
(:func:`validate_config`), reading YAML (:func:`load_config`), dotted-path overrides such as CLI
flags (:func:`apply_overrides`), and writing the resolved config (:func:`dump_config`).
Validation errors name each bad key's path (``model.heads: ...``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from dlforge._atomic import atomic_file
from dlforge.config._base import _Strict
from dlforge.config.data import (
    INPUT_CONFIGS,
    INPUT_KINDS,
    TABULAR_KINDS,
    DataConfig,
    ForecastConfig,
    InputConfig,
    OutputConfig,
    TextInput,
)
from dlforge.config.models import (
    FAMILY_CONFIGS,
    FAMILY_KINDS,
    MODEL_FAMILIES,
    ModelConfig,
    TransformerConfig,
    member_model,
)
from dlforge.config.train import PrivacyConfig, TrackingConfig, TrainConfig, TuneConfig
from dlforge.errors import ConfigError

__all__ = [
    "RunConfig",
    "apply_overrides",
    "check_family_fits",
    "config_to_dict",
    "default_family",
    "dump_config",
    "format_validation_error",
    "is_pretrained_path",
    "load_config",
    "resolve_data_path",
    "validate_config",
]


# ------------------------------------------------------------------------------------------ run
class RunConfig(_Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    inputs: list[InputConfig] = Field(default_factory=list)
    output: OutputConfig | None = None
    forecast: ForecastConfig | None = None  # a forecasting run (then no inputs/output)
    model: ModelConfig = Field(default_factory=TransformerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tune: TuneConfig | None = None  # a search space for dlforge tune
    privacy: PrivacyConfig | None = None  # differentially private training (DP-SGD)
    tracking: TrackingConfig | None = None  # MLflow / TensorBoard (dlforge.train.tracking)

    @property
    def text(self) -> TextInput:
        """The first text input (the one of a text classifier)."""
        for inp in self.inputs:
            if isinstance(inp, TextInput):
                return inp
        raise ConfigError("this run has no text input")

    @model_validator(mode="after")
    def _inputs_fit_the_model(self) -> RunConfig:
        if self.forecast is not None:
            if self.inputs or self.output is not None:
                raise ValueError("forecast: a forecasting run takes its columns from forecast "
                                 "(targets, covariates, exogenous); remove inputs and output")
            if self.model.name == "ensemble":
                raise ValueError("model.name: ensemble averages rows' predictions; a "
                                 "forecasting run takes one family (or auto)")
            check_family_fits(self.model.name, ["sequence"])
            return self
        if not self.inputs:
            raise ValueError("inputs: list at least one input column (or give forecast:)")
        if self.output is None:
            raise ValueError("output: name the output column (output: {name: COLUMN})")
        names = [i.name for i in self.inputs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"inputs: column {dup[0]!r} is listed twice")
        if self.output.name in names:
            raise ValueError(f"output.name: column {self.output.name!r} is also an input")
        kinds = [i.type for i in self.inputs]
        members = getattr(self.model, "members", None)  # an ensemble: each member must fit
        for family in members or [self.model.name]:
            check_family_fits(member_model(family)["name"] if members else family, kinds,
                              "model.members" if members else "model.name")
        if getattr(self.model, "pretrained", None) and "text" not in kinds:
            raise ValueError("model.pretrained: a pretrained encoder takes a text input; this "
                             "run has none")
        return self

    @model_validator(mode="after")
    def _privacy_fits(self) -> RunConfig:
        """What DP-SGD cannot make private is refused here, each with the way out."""
        if self.privacy is None:
            return self
        refused = [  # (key, refused?, why and what to do instead)
            ("forecast", self.forecast is not None,
             "forecasting windows overlap, so one row of the table is in many training "
             "examples and DP-SGD's per-example guarantee would not cover it; train a "
             "classifier or regressor on independent rows"),
            ("model.name", self.model.name == "pretrained",
             "a pretrained Hugging Face encoder cannot be trained privately here; use "
             "transformer, cnn, rnn or mlp"),
            ("model.name", self.model.name == "auto",
             "model selection trains and scores many models on the same rows, which the "
             "privacy budget does not account for; name the family (transformer, cnn, rnn, "
             "mlp)"),
            ("model.name", self.model.name == "ensemble",
             "an ensemble trains several models on the same rows, which the privacy budget "
             "does not account for; name one family (transformer, cnn, rnn, mlp)"),
            ("model.checkpointing", getattr(self.model, "checkpointing", False),
             "activation checkpointing re-runs the forward pass in backward, which breaks "
             "Opacus' per-row gradients; set it to false"),
            ("train.accumulate", self.train.accumulate > 1,
             "gradient accumulation is not supported with DP-SGD (each Poisson-sampled batch "
             "is one noisy step); set it to 1 and raise train.batch_size instead"),
            ("train.compile", self.train.compile,
             "torch.compile does not run Opacus' per-row gradient hooks; set it to false"),
            ("train.cv", bool(self.train.cv),
             "cross-validation trains more models on the same rows, which the privacy budget "
             "does not account for; remove it"),
        ]
        for key, bad, reason in refused:
            if bad:
                raise ValueError(f"{key}: {reason} (privacy is set)")
        return self


def check_family_fits(family: str, kinds: list[str], key: str = "model.name") -> None:
    """Raise ValueError unless model ``family`` can encode inputs of ``kinds`` (``key``: the
    config key the message names)."""
    rich = [k for k in kinds if k not in TABULAR_KINDS]
    if len(rich) > 1:
        raise ValueError(f"inputs: at most one text, image or audio input per model (got "
                         f"{len(rich)}: {', '.join(rich)}); numeric and category columns may be "
                         "added freely")
    kind = rich[0] if rich else "table"
    fits = FAMILY_KINDS[family]
    if kind in fits or (not rich and family == "auto"):
        return
    good = [f for f, ks in FAMILY_KINDS.items() if kind in ks and f not in ("pretrained",
                                                                          "auto", "ensemble")]
    raise ValueError(f"{key}: {family!r} does not fit {kind} inputs; families that fit "
                     f"{kind} inputs: {', '.join(good)}")


# ------------------------------------------------------------------------------------- helpers
def _loc_to_path(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, item in enumerate(loc):
        if isinstance(item, int):
            parts.append(f"[{item}]")
            continue
        # Discriminated unions put the tag in the location (model.transformer.heads): drop it.
        if i > 0 and loc[i - 1] == "model" and item in MODEL_FAMILIES:
            continue
        if i > 0 and isinstance(loc[i - 1], int) and item in INPUT_KINDS:
            continue
        if i > 0 and loc[i - 1] == "tune" and item == "space":
            continue
        if item in ("function-after", "function-before"):
            continue
        parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "<root>"


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """One line per problem, each naming the key's dotted path."""
    lines = []
    for e in err.errors():
        path = _loc_to_path(tuple(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            parent = _parent_model_fields(tuple(e["loc"])[:-1])
            if parent:
                msg += f"; valid keys here are: {', '.join(parent)}"
        elif e["type"] == "union_tag_invalid":
            tag = e.get("ctx", {}).get("tag")
            what, choices = (("input type", INPUT_KINDS) if "inputs" in e["loc"]
                             else ("model", MODEL_FAMILIES))
            msg = f"unknown {what} {tag!r}; choose one of: {', '.join(choices)}"
            if what == "model":
                named = [f for f in MODEL_FAMILIES if f != "pretrained"]
                msg = (f"unknown model {tag!r}; choose one of: {', '.join(named)}, or the path "
                       "of a local Hugging Face model folder")
        elif "input" in e and e["type"] not in ("missing",) and not isinstance(e["input"], dict):
            msg += f" (got {e['input']!r})"
        msg = msg.removeprefix("Value error, ")
        if msg.startswith((f"{path}.", f"{path}:")):  # the message names the key itself
            path = "<root>"
        lines.append(f"{source}: {msg}" if path == "<root>" else f"{source}: {path}: {msg}")
    return "; ".join(lines)


def _parent_model_fields(loc: tuple[Any, ...]) -> list[str]:
    model: Any = RunConfig
    for item in loc:
        if isinstance(item, int):
            continue
        if item in INPUT_KINDS and loc and "inputs" in loc:
            model = dict(zip(INPUT_KINDS, INPUT_CONFIGS, strict=True))[item]
            continue
        if model is None:
            return []
        if item in MODEL_FAMILIES and loc and "model" in loc:
            model = {c.model_fields["name"].default: c for c in FAMILY_CONFIGS}[item]
            continue
        field = model.model_fields.get(item)
        if field is None:
            return []
        ann = field.annotation
        model = None
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                model = cand
                break
    return list(model.model_fields) if model is not None else []


def validate_config(data: dict[str, Any], source: str = "config") -> RunConfig:
    """Build a RunConfig from plain data, raising ConfigError naming each bad key's path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got "
                          f"{type(data).__name__}")
    model = data.get("model")
    inputs = data.get("inputs")
    if isinstance(inputs, list):  # an input without a type is a text column
        data = {**data, "inputs": [{"type": "text", **i} if isinstance(i, dict) and "type" not in i
                                   else i for i in inputs]}
    if isinstance(model, str):  # model: transformer, or model: path/to/hf-folder
        model = {"name": model}
    if isinstance(model, dict) and isinstance(model.get("name"), str) and is_pretrained_path(
            model["name"]):
        model = {**model, "name": "pretrained", "path": model["name"]}
    if model is not None:
        data = {**data, "model": model}
    if model is None or (isinstance(model, dict) and "name" not in model):
        family = ("rnn" if data.get("forecast") is not None
                  else default_family(data.get("inputs")))
        data = {**data, "model": {"name": family, **(model or {})}}
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def is_pretrained_path(name: str) -> bool:
    """True when ``name`` looks like a folder path rather than one of our family names."""
    if name in MODEL_FAMILIES:
        return False
    seps = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if any(sep in name for sep in seps) or name.startswith((".", "~", "/")):
        return True
    return Path(name).is_dir()


def default_family(inputs: Any) -> str:
    """The family a config without ``model.name`` gets: cnn for images and audio, mlp for
    tables, the Transformer for text."""
    kinds = {i.get("type", "text") for i in inputs if isinstance(i, dict)} if isinstance(
        inputs, list) else set()
    if "image" in kinds or "audio" in kinds:
        return "cnn"
    if "sequence" in kinds:
        return "rnn"
    if kinds and kinds <= set(TABULAR_KINDS):
        return "mlp"
    return "transformer"


def resolve_data_path(cfg: RunConfig, config: Path) -> None:
    """A relative data.path not found from here but found beside the config file means that
    file (as ``dlforge train`` reads it)."""
    if cfg.data.path and not Path(cfg.data.path).is_absolute():
        beside = config.parent / cfg.data.path
        if beside.exists() and not Path(cfg.data.path).exists():
            cfg.data.path = str(beside)



def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read a YAML run config; ``overrides`` (dotted paths) win over the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{p}: not UTF-8 text ({err.reason})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", err)
        raise ConfigError(f"{p}:{where} is not valid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{p}: the config file is empty")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of keys at the top level")
    if overrides:
        data = apply_overrides(data, overrides)
    return validate_config(data, source=str(p))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted-path keys (``train.epochs``, ``inputs.0.name``) in a copy of ``data``.

    Switching ``model.name`` to another family drops the old family's settings, so
    ``--model cnn`` on a file written for the transformer does what it says.
    """
    import copy

    out = copy.deepcopy(data)
    new_family = overrides.get("model.name")
    model = out.get("model")
    if (new_family is not None and isinstance(model, dict)
            and model.get("name", "transformer") != new_family):
        out["model"] = {}
    for key, value in overrides.items():
        node: Any = out
        parts = key.split(".")
        for part in parts[:-1]:
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append({})
                node = node[idx]
            else:
                nxt = node.get(part)
                if nxt is None:
                    nxt = [] if parts[parts.index(part) + 1].isdigit() else {}
                    node[part] = nxt
                node = nxt
        last = parts[-1]
        if isinstance(node, list):
            idx = int(last)
            while len(node) <= idx:
                node.append({})
            node[idx] = value
        else:
            node[last] = value
    return out


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def dump_config(cfg: RunConfig, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, allow_unicode=True)
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(text, encoding="utf-8")
