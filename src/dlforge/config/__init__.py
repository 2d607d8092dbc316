"""The run schema: one validated description of a run, whichever front door built it.

Python (``TextClassifier(...)``), YAML (``dlforge train run.yaml``) and CLI flags
(``dlforge train --data ... --text ... --label ...``) all produce a :class:`RunConfig`.
Unknown keys and wrong types raise :class:`~dlforge.errors.ConfigError` naming the key's path
(``model.heads: ...``). The resolved config, every default filled in, is saved in each run
directory as ``config.yaml``.

The schema is split along its sections: :mod:`~dlforge.config.data` (``data``, ``inputs``,
``forecast``, ``output``), :mod:`~dlforge.config.models` (``model``),
:mod:`~dlforge.config.train` (``train``, ``privacy``, ``tune``,
``tracking``) and :mod:`~dlforge.config.run`
(the whole run, loading, validating, overriding and dumping it). A language model's flat
settings are in :mod:`dlforge.config.lm`. Every name is importable from here.
"""

from dlforge.config._base import _Strict as _Strict
from dlforge.config.data import (
    INPUT_KINDS,
    TABULAR_KINDS,
    AudioAugment,
    AudioInput,
    CategoryInput,
    CleanConfig,
    DataConfig,
    ForecastConfig,
    ImageAugment,
    ImageInput,
    InputConfig,
    NumericInput,
    OutputConfig,
    SequenceInput,
    SeriesAugment,
    TextAugment,
    TextInput,
)
from dlforge.config.models import (
    FAMILY_KINDS,
    MODEL_FAMILIES,
    AutoModelConfig,
    CNNConfig,
    CRNNConfig,
    EnsembleConfig,
    MLPConfig,
    ModelConfig,
    PretrainedModelConfig,
    RNNConfig,
    TransformerConfig,
)
from dlforge.config.run import (
    RunConfig,
    apply_overrides,
    check_family_fits,
    config_to_dict,
    default_family,
    dump_config,
    format_validation_error,
    is_pretrained_path,
    load_config,
    resolve_data_path,
    validate_config,
)
from dlforge.config.train import (
    SPEC_KINDS,
    TRACKERS,
    TUNE_ALIASES,
    TUNE_SETTINGS,
    MlflowTracking,
    PrivacyConfig,
    TensorBoardTracking,
    TrackingConfig,
    TrainConfig,
    TuneConfig,
    add_trackers,
)

__all__ = [
    "FAMILY_KINDS",
    "INPUT_KINDS",
    "MODEL_FAMILIES",
    "SPEC_KINDS",
    "TABULAR_KINDS",
    "TRACKERS",
    "TUNE_ALIASES",
    "TUNE_SETTINGS",
    "AudioAugment",
    "AudioInput",
    "AutoModelConfig",
    "EnsembleConfig",
    "CNNConfig",
    "CRNNConfig",
    "CategoryInput",
    "CleanConfig",
    "DataConfig",
    "ForecastConfig",
    "ImageAugment",
    "ImageInput",
    "InputConfig",
    "MLPConfig",
    "MlflowTracking",
    "ModelConfig",
    "NumericInput",
    "OutputConfig",
    "PretrainedModelConfig",
    "PrivacyConfig",
    "RNNConfig",
    "RunConfig",
    "SequenceInput",
    "SeriesAugment",
    "TextAugment",
    "TensorBoardTracking",
    "TextInput",
    "TrackingConfig",
    "TrainConfig",
    "TransformerConfig",
    "TuneConfig",
    "add_trackers",
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
