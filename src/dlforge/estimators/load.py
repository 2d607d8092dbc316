"""A run directory back into the estimator that wrote it: ``dlforge.load``.

The run is checked first (every file against the manifest's digests); the estimator class comes
from the manifest, and it restores its own fitted state and weights."""

from __future__ import annotations

from pathlib import Path

from dlforge.config import load_config
from dlforge.errors import DlforgeError, RunDirError
from dlforge.estimators.audio import AudioClassifier
from dlforge.estimators.base import DeepModel
from dlforge.estimators.forecast import Forecaster
from dlforge.estimators.image import ImageClassifier
from dlforge.estimators.language import LanguageModel
from dlforge.estimators.seq2seq import Seq2Seq
from dlforge.estimators.sequence import SequenceModel
from dlforge.estimators.tabular import TabularClassifier, TabularRegressor
from dlforge.estimators.text import TextClassifier
from dlforge.run import FINETUNE_TASK, LM_TASK, MANIFEST, SEQ2SEQ_TASK, check_run

__all__ = ["ESTIMATORS", "load", "load_deep_model"]

# The manifest's "estimator" -> its class.
ESTIMATORS: dict[str, type[DeepModel]] = {cls.__name__: cls for cls in (
    TextClassifier, ImageClassifier, SequenceModel, TabularClassifier, TabularRegressor,
    Forecaster, AudioClassifier)}


def load(path: str | Path, device: str | None = None) -> DeepModel | LanguageModel | Seq2Seq:
    """Load a run directory as a fitted estimator that predicts exactly as the saved one (a
    :class:`~dlforge.LanguageModel` for a language model's run, a :class:`~dlforge.Seq2Seq` for
    a sequence-to-sequence run)."""
    path = Path(path)
    manifest = check_run(path)
    if manifest.get("task") == LM_TASK:
        return LanguageModel._restore(path, device)
    if manifest.get("task") == SEQ2SEQ_TASK:
        return Seq2Seq._restore(path, device)
    if manifest.get("task") == FINETUNE_TASK:  # a pretrained causal LM's fine-tune
        from dlforge.estimators.pretrained_lm import PretrainedLM

        return PretrainedLM.load(path, device=device or "cpu")
    try:
        cfg = load_config(path / "config.yaml")
    except DlforgeError as err:
        raise RunDirError(f"{path}: config.yaml does not validate: {err}") from None
    name = manifest.get("estimator", "")
    cls = ESTIMATORS.get(name)
    if cls is None:
        raise RunDirError(f"{path}: unknown estimator {manifest.get('estimator')!r} in "
                          f"{MANIFEST}")
    return cls._load_run(path, cfg, device)


def load_deep_model(path: str | Path, command: str, device: str | None = None) -> DeepModel:
    """:func:`load` for commands that need a classifier, regressor or forecaster: a language
    model's run is a RunDirError that points to ``dlforge lm``."""
    if check_run(Path(path)).get("task") == FINETUNE_TASK:
        raise RunDirError(f"{path}: is a fine-tuned pretrained language model; {command} does "
                          "not apply to it. Use dlforge lm chat / generate / eval, or dlforge "
                          "serve")
    clf = load(path, device)
    if isinstance(clf, Seq2Seq):
        raise RunDirError(f"{path}: is a sequence-to-sequence run; {command} does not apply to "
                          "it. Use dlforge predict / evaluate / serve")
    if isinstance(clf, LanguageModel):
        raise RunDirError(f"{path}: is a language model; {command} does not apply to it. Use "
                          "dlforge lm generate / dlforge lm eval")
    return clf  # type: ignore[return-value]

