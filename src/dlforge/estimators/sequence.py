"""``SequenceModel``: numeric sequences (sensor traces, ECGs, price paths) → labels with an
LSTM/GRU, a 1-D CNN or a Transformer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
from sklearn.base import ClassifierMixin

from dlforge.data.frames import as_list, sequence_list
from dlforge.errors import DataError
from dlforge.estimators.base import DeepModel, table_init
from dlforge.train.callbacks import Callback

__all__ = ["SequenceModel"]


# --------------------------------------------------------------------------------- sequences
class SequenceModel(ClassifierMixin, DeepModel):
    """Classify numeric sequences (sensor traces, ECGs, price paths) with an LSTM/GRU, a 1-D
    CNN or a Transformer.

    ``X`` is a list of sequences, each (T,) or (T, F) (lengths may differ), or an array
    (N, T) / (N, T, F). Channels are standardised on the training split; sequences are padded
    per batch and the padding is masked.

    >>> clf = SequenceModel(model="rnn", cell="lstm", epochs=20)
    >>> clf.fit(traces, labels)  # doctest: +SKIP
    """

    KIND = "sequence"
    __init__ = table_init("sequence")

    def _base_config(self) -> dict[str, Any]:
        return {"inputs": [{"name": "sequence", "type": "sequence"}],
                "output": {"name": "label"}, "model": {"name": "rnn"}}

    def fit(self, X: Any, y: Any, *, epochs: int | None = None, batch_size: int | None = None,
            validation_split: float | None = None, callbacks: Sequence[Callback] = ()
            ) -> SequenceModel:
        """Train on sequences ``X`` and labels ``y``."""
        cfg = self._fit_overrides(epochs, batch_size, validation_split)
        seqs, labels = sequence_list(X), as_list(y, "y")
        if len(seqs) != len(labels):
            raise DataError(f"X has {len(seqs)} sequences but y has {len(labels)} labels")
        df = pd.DataFrame({cfg.inputs[0].name: pd.Series(seqs, dtype=object),
                           cfg.output.name: labels})
        return self._fit_frame(df, cfg, source="X", callbacks=callbacks)

    def _columns(self, X: Any) -> pd.DataFrame:
        return pd.DataFrame({self.config_.inputs[0].name: pd.Series(sequence_list(X),
                                                                    dtype=object)})

