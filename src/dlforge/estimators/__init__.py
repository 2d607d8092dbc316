"""The Python front door: scikit-learn estimators over the run schema, one file per kind of data.

- :class:`TextClassifier` (``text``): texts → labels (Transformer, CNN, RNN or a local Hugging
  Face encoder);
- :class:`ImageClassifier` (``image``): images → labels (CNN);
- :class:`AudioClassifier` (``audio``): audio clips → labels (CNN or CRNN on log-mel
  spectrograms);
- :class:`SequenceModel` (``sequence``): numeric sequences → labels (LSTM/GRU, 1-D CNN,
  Transformer);
- :class:`Forecaster` (``forecast``): a series → its next ``horizon`` steps;
- :class:`TabularClassifier` / :class:`TabularRegressor` (``tabular``): a table → labels /
  numbers (MLP), with text columns too if named (mixed inputs);
- :class:`LanguageModel` (``language``): a GPT trained on any text;
- :class:`Seq2Seq` (``seq2seq``): text → text (an encoder-decoder Transformer, or a pretrained
  T5 / BART / Marian folder fine-tuned).

``base`` is what they share (:class:`~dlforge.estimators.base.DeepModel`), ``select`` is
``model="auto"`` and cross-validation, ``persist``/``load`` write and read run directories,
``files`` trains, evaluates and predicts from files (the CLI's operations), ``steps`` is the
front door of tuning, auditing and explaining. Constructor arguments are stored untouched
(scikit-learn's contract); ``fit`` turns them into a :class:`~dlforge.config.RunConfig`.
"""

from dlforge.estimators.audio import AudioClassifier
from dlforge.estimators.base import DeepModel
from dlforge.estimators.files import cross_validate
from dlforge.estimators.forecast import Forecaster
from dlforge.estimators.image import ImageClassifier
from dlforge.estimators.language import LanguageModel
from dlforge.estimators.load import load
from dlforge.estimators.pretrained_lm import PretrainedLM
from dlforge.estimators.seq2seq import Seq2Seq
from dlforge.estimators.sequence import SequenceModel
from dlforge.estimators.steps import audit, explain, tune
from dlforge.estimators.tabular import TabularClassifier, TabularRegressor
from dlforge.estimators.text import TextClassifier

__all__ = ["AudioClassifier", "DeepModel", "Forecaster", "ImageClassifier", "LanguageModel",
           "PretrainedLM", "Seq2Seq", "SequenceModel", "TabularClassifier", "TabularRegressor",
           "TextClassifier", "audit", "cross_validate", "explain", "load", "tune"]
