"""The parameter table as Markdown: docs/parameters.md is this module's output
(``make docs`` writes it; ``tests/test_docs.py`` fails when it is stale). Defaults are read
from the schema itself, so the page cannot disagree with it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from dlforge.config.data import (
    AudioAugment,
    AudioInput,
    CleanConfig,
    DataConfig,
    ForecastConfig,
    ImageAugment,
    ImageInput,
    OutputConfig,
    SequenceInput,
    SeriesAugment,
    TextAugment,
    TextInput,
)
from dlforge.config.models import (
    AutoModelConfig,
    CNNConfig,
    CRNNConfig,
    EnsembleConfig,
    MLPConfig,
    PretrainedModelConfig,
    RNNConfig,
    TransformerConfig,
)
from dlforge.config.params import ESTIMATOR_KINDS, PARAMS, Param
from dlforge.config.seq2seq import Seq2SeqConfig
from dlforge.config.train import PrivacyConfig, TrainConfig

__all__ = ["markdown"]

ESTIMATOR_NAMES = {"text": "TextClassifier", "image": "ImageClassifier",
                   "sequence": "SequenceModel", "tabular": "TabularClassifier/Regressor",
                   "forecast": "Forecaster", "audio": "AudioClassifier"}
_SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig, "data.clean": CleanConfig, "output": OutputConfig,
    "forecast": ForecastConfig, "train": TrainConfig, "privacy": PrivacyConfig,
    "<text>": TextInput, "<image>": ImageInput,
    "<sequence>": SequenceInput, "<text>.augment": TextAugment,
    "<image>.augment": ImageAugment, "<series>.augment": SeriesAugment,
    "<audio>": AudioInput, "<audio>.augment": AudioAugment, "seq2seq": Seq2SeqConfig,
}
_FAMILIES: tuple[type[BaseModel], ...] = (TransformerConfig, CNNConfig, RNNConfig, MLPConfig,
                                          PretrainedModelConfig, AutoModelConfig, CRNNConfig,
                                          EnsembleConfig)


def _show(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, BaseModel):
        return "off"
    return str(v).replace("|", "\\|")


def _field_default(model: type[BaseModel], name: str) -> str | None:
    field = model.model_fields.get(name)
    if field is None:
        return None
    if field.default_factory is not None:
        return _show(field.default_factory())  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        return "required"
    return _show(field.default)


def default(p: Param) -> str:
    """The schema's default of ``p``'s key (per family for model keys, per input kind for
    slotted keys)."""
    section, _, key = p.path.rpartition(".")
    if p.path == "model.name":
        return ("by the data: transformer (text), cnn (images, audio), rnn (sequences, "
                "series), mlp (tables)")
    if key == "augment" or p.path == "tracking":
        return "off"
    if section == "model":
        found = [(m.model_fields["name"].default, _field_default(m, key)) for m in _FAMILIES
                 if key in m.model_fields]
        values = {v for _, v in found}
        if len(values) == 1:
            return values.pop() or ""
        return ", ".join(f"{fam} {v}" for fam, v in found)
    if section.startswith("<") and "|" in section.partition(">")[0]:  # <a|b> or <a|b>.augment
        slot, _, rest = section[1:].partition(">")
        found = [(k, _field_default(_SECTIONS[f"<{k}>{rest}"], key)) for k in slot.split("|")
                 if f"<{k}>{rest}" in _SECTIONS]
        return ", ".join(f"{k} {v}" for k, v in found if v is not None)
    model = _SECTIONS.get(section)
    return (_field_default(model, key) or "") if model is not None else ""


def markdown() -> str:
    """docs/parameters.md."""
    lines = [
        "# Parameters",
        "",
        "Every hyperparameter, once: the estimators' keyword arguments, the `dlforge train` "
        "flags and the short names of a `tune:` search space all come from this table "
        "(`src/dlforge/config/params.py`). This page is generated from it (`make docs`).",
        "",
        "A key such as `<text>.vocab_size` sets that field of the run's text input "
        "(`inputs.0.vocab_size` for a text classifier); `<series>` is the forecast section of "
        "a forecasting run, else its sequence input.",
        "",
        "| name | config key | default | flag | estimators | tune | what it is |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in PARAMS:
        who = ", ".join(ESTIMATOR_NAMES[k] for k in ESTIMATOR_KINDS if k in p.estimators)
        path = p.path.replace("|", "\\|")  # a column separator even inside backticks
        lines.append(f"| `{p.name}` | `{path}` | {default(p)} | "
                     f"{f'`--{p.flag}`' if p.flag else ''} | {who} | "
                     f"{'yes' if p.tune else ''} | {p.help.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
