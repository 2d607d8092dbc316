"""``AudioClassifier``: audio clips (a folder of class sub-folders, file paths, waveforms) →
labels, with the residual CNN on the log-mel spectrogram or a CRNN."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.base import ClassifierMixin

from dlforge.data.frames import as_list, audio_folder_frame
from dlforge.errors import DataError
from dlforge.estimators.base import DeepModel, table_init
from dlforge.train.callbacks import Callback

__all__ = ["AudioClassifier"]


class AudioClassifier(ClassifierMixin, DeepModel):
    """Classify audio clips (spoken words, sounds): each clip is read as mono, resampled to
    ``sample_rate``, centred in a window of ``clip_seconds`` and turned into a log-mel
    spectrogram standardised per mel band on the training split; ``model="cnn"`` (the image
    CNN on the spectrogram, the default) or ``model="crnn"`` (convolutions, then a GRU over
    the frames) classifies it. ``augment`` (training only): ``shift`` seconds, ``noise``,
    SpecAugment ``time_mask`` frames and ``freq_mask`` mel bands.

    ``X`` is a folder of class sub-folders (then ``y`` is None: the folder names are the
    labels), a list of audio file paths (WAV, FLAC, OGG, MP3), file bytes, waveforms at
    ``sample_rate`` or ``(waveform, rate)`` pairs, or an array (N, samples).

    >>> clf = AudioClassifier(model="crnn", augment={"time_mask": 10, "freq_mask": 5})
    >>> clf.fit("speech/train")  # doctest: +SKIP
    """

    KIND = "audio"
    __init__ = table_init("audio")

    def _base_config(self) -> dict[str, Any]:
        return {"inputs": [{"name": "audio", "type": "audio"}], "output": {"name": "label"},
                "model": {"name": "cnn"}}

    def fit(self, X: Any, y: Any = None, *, epochs: int | None = None,
            batch_size: int | None = None, validation_split: float | None = None,
            callbacks: Sequence[Callback] = ()) -> AudioClassifier:
        """Train on clips ``X`` and labels ``y`` (None when ``X`` is a folder of classes)."""
        cfg = self._fit_overrides(epochs, batch_size, validation_split)
        if isinstance(X, str | os.PathLike) and Path(X).is_dir():
            if y is not None:
                raise DataError(f"{X}: y must be None when X is a folder of class sub-folders "
                                "(the folder names are the labels)")
            return self._fit_frame(audio_folder_frame(X, cfg), cfg, source=str(X),
                                   callbacks=callbacks)
        if y is None:
            raise DataError("y: labels are required unless X is a folder of class sub-folders")
        clips, labels = self._clips(X), as_list(y, "y")
        if len(clips) != len(labels):
            raise DataError(f"X has {len(clips)} clips but y has {len(labels)} labels")
        df = pd.DataFrame({cfg.inputs[0].name: pd.Series(clips, dtype=object),
                           cfg.output.name: labels})
        return self._fit_frame(df, cfg, source="X", callbacks=callbacks)

    @staticmethod
    def _clips(X: Any) -> list[Any]:
        from dlforge.data.audio import audio_list

        return audio_list(X)

    def _columns(self, X: Any) -> pd.DataFrame:
        return pd.DataFrame({self.config_.inputs[0].name: pd.Series(self._clips(X),
                                                                    dtype=object)})
