"""``TextClassifier``: texts → labels with a Transformer, CNN or RNN, or a fine-tuned local
Hugging Face encoder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sklearn.base import ClassifierMixin

from dlforge.data.features import TextTokenizer
from dlforge.data.frames import as_list
from dlforge.errors import DataError
from dlforge.estimators.base import DeepModel, table_init
from dlforge.estimators.validate import class_labels, target_values
from dlforge.train.callbacks import Callback

__all__ = ["TextClassifier"]


class TextClassifier(ClassifierMixin, DeepModel):
    """Classify texts with a Transformer, CNN or RNN, or fine-tune a local Hugging Face
    encoder (``model="path/to/folder"``; ``freeze``, ``freeze_layers``, ``head_lr``).

    >>> clf = TextClassifier(model="transformer", vocab_size=10_000, d_model=512, heads=4)
    >>> clf.fit(texts, labels, epochs=5, batch_size=64, validation_split=0.1)  # doctest: +SKIP
    >>> clf.predict(["an example"])  # doctest: +SKIP
    >>> bert = TextClassifier(model="models/bert-base", freeze_layers=8, lr=2e-5, head_lr=1e-3)

    Labels may be strings or ints (binary or multi-class) or lists of labels (multi-label).
    """

    KIND = "text"
    __init__ = table_init("text")

    def _base_config(self) -> dict[str, Any]:
        return {"inputs": [{"name": "text"}], "output": {"name": "label"}}

    def fit(self, X: Any, y: Any, *, epochs: int | None = None, batch_size: int | None = None,
            validation_split: float | None = None, callbacks: Sequence[Callback] = ()
            ) -> TextClassifier:
        """Train on texts ``X`` and labels ``y`` (lists, NumPy arrays or pandas Series)."""
        cfg = self._fit_overrides(epochs, batch_size, validation_split)
        texts = as_list(X, "X")
        labels = class_labels(target_values(y, type(self).__name__),
                              "TabularRegressor(text=...) on a DataFrame of texts")
        if len(texts) != len(labels):
            raise DataError(f"X has {len(texts)} texts but y has {len(labels)} labels")
        df = pd.DataFrame({cfg.text.name: texts, cfg.output.name: labels})
        return self._fit_frame(df, cfg, source="X", callbacks=callbacks)

    def _columns(self, X: Any) -> pd.DataFrame:
        return pd.DataFrame({self.config_.text.name: as_list(X, "X")})

    @property
    def tokenizer_(self) -> TextTokenizer:
        """The fitted tokenizer of the text input."""
        self._check_fitted()
        return self.features_[self.config_.text.name].tokenizer

    def __sklearn_tags__(self):  # noqa: ANN204 - scikit-learn's own type
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags


