"""``ImageClassifier``: images (a folder of class sub-folders, arrays, paths) → labels with a
residual CNN."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.base import ClassifierMixin

from dlforge.data.frames import as_list, image_folder_frame, image_list
from dlforge.errors import DataError
from dlforge.estimators.base import DeepModel, table_init
from dlforge.train.callbacks import Callback

__all__ = ["ImageClassifier"]


class ImageClassifier(ClassifierMixin, DeepModel):
    """Classify images with a residual CNN (conv → batch-norm → ReLU blocks, global average
    pooling).

    ``X`` is a folder of class sub-folders (then ``y`` is None: the folder names are the
    labels), a NumPy array (N, H, W) or (N, H, W, C), or a list of image paths or arrays.

    >>> from sklearn.datasets import load_digits
    >>> d = load_digits()
    >>> clf = ImageClassifier(channels=[32, 64], epochs=20)
    >>> clf.fit(d.images, d.target)  # doctest: +SKIP
    """

    KIND = "image"
    __init__ = table_init("image")

    def _base_config(self) -> dict[str, Any]:
        return {"inputs": [{"name": "image", "type": "image"}], "output": {"name": "label"},
                "model": {"name": "cnn"}}

    def fit(self, X: Any, y: Any = None, *, epochs: int | None = None,
            batch_size: int | None = None, validation_split: float | None = None,
            callbacks: Sequence[Callback] = ()) -> ImageClassifier:
        """Train on images ``X`` and labels ``y`` (None when ``X`` is a folder of classes)."""
        cfg = self._fit_overrides(epochs, batch_size, validation_split)
        image = cfg.inputs[0].name
        if isinstance(X, str | os.PathLike) and Path(X).is_dir():
            if y is not None:
                raise DataError(f"{X}: y must be None when X is a folder of class sub-folders "
                                "(the folder names are the labels)")
            df = image_folder_frame(X, cfg)
            return self._fit_frame(df, cfg, source=str(X), callbacks=callbacks)
        if y is None:
            raise DataError("y: labels are required unless X is a folder of class sub-folders")
        images, labels = image_list(X), as_list(y, "y")
        if len(images) != len(labels):
            raise DataError(f"X has {len(images)} images but y has {len(labels)} labels")
        df = pd.DataFrame({image: pd.Series(images, dtype=object), cfg.output.name: labels})
        return self._fit_frame(df, cfg, source="X", callbacks=callbacks)

    def _columns(self, X: Any) -> pd.DataFrame:
        return pd.DataFrame({self.config_.inputs[0].name: pd.Series(image_list(X),
                                                                    dtype=object)})

