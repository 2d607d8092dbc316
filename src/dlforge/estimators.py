"""The Python front door: scikit-learn estimators over the run schema, one per kind of data.

- :class:`TextClassifier`: texts → labels (Transformer, CNN or RNN);
- :class:`ImageClassifier`: images (a folder of class sub-folders, arrays, paths) → labels (CNN);
- :class:`SequenceModel`: numeric sequences → labels (LSTM/GRU, 1-D CNN or Transformer);
- :class:`dlforge.forecast.Forecaster`: a series → its next ``horizon`` steps;
- :class:`TabularClassifier` / :class:`TabularRegressor` (in :mod:`dlforge.tabular`): a table →
  labels / numbers (MLP), with text columns too if named (mixed inputs).

Constructor arguments are stored untouched (scikit-learn's contract); ``fit`` turns them into a
:class:`~dlforge.config.RunConfig` and runs the pipeline of :class:`dlforge.base.DeepModel`.
Arguments left as ``None`` take the config's defaults (or those of ``config``, if given).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin

from dlforge.base import TRAIN_PARAMS, DeepModel, as_list, encode_labels, label_array
from dlforge.config import RunConfig
from dlforge.data.features import TextTokenizer
from dlforge.errors import DataError
from dlforge.tabular import TabularClassifier, TabularRegressor, infer_inputs
from dlforge.train.callbacks import Callback

__all__ = ["PARAM_PATHS", "ImageClassifier", "SequenceModel", "TabularClassifier",
           "TabularRegressor", "TextClassifier", "encode_labels", "infer_inputs", "label_array"]


# Estimator argument -> the config key it sets. The one mapping between the two front doors.
PARAM_PATHS: dict[str, str] = {
    "model": "model.name",
    "vocab_size": "inputs.0.vocab_size",
    "max_length": "inputs.0.max_length",
    "tokenizer": "inputs.0.tokenizer",
    "lowercase": "inputs.0.lowercase",
    "augment": "inputs.0.augment",
    "d_model": "model.d_model",
    "heads": "model.heads",
    "layers": "model.layers",
    "ffn_dim": "model.ffn_dim",
    "dropout": "model.dropout",
    "kernel_sizes": "model.kernel_sizes",
    "filters": "model.filters",
    "cell": "model.cell",
    "hidden": "model.hidden",
    "bidirectional": "model.bidirectional",
    "freeze": "model.freeze",
    "freeze_layers": "model.freeze_layers",
    "pooling": "model.pooling",
    "head_lr": "model.head_lr",
    **TRAIN_PARAMS,
    "output": "output.type",
}


class TextClassifier(ClassifierMixin, DeepModel):
    """Classify texts with a Transformer, CNN or RNN, or fine-tune a local Hugging Face
    encoder (``model="path/to/folder"``; ``freeze``, ``freeze_layers``, ``head_lr``).

    >>> clf = TextClassifier(model="transformer", vocab_size=10_000, d_model=512, heads=4)
    >>> clf.fit(texts, labels, epochs=5, batch_size=64, validation_split=0.1)  # doctest: +SKIP
    >>> clf.predict(["an example"])  # doctest: +SKIP
    >>> bert = TextClassifier(model="models/bert-base", freeze_layers=8, lr=2e-5, head_lr=1e-3)

    Labels may be strings or ints (binary or multi-class) or lists of labels (multi-label).
    """

    PARAM_PATHS: ClassVar[dict[str, str]] = PARAM_PATHS

    def __init__(self, model: str | None = None, *, vocab_size: int | None = None,
                 max_length: int | None = None, tokenizer: str | None = None,
                 lowercase: bool | None = None, augment: dict[str, float] | None = None,
                 d_model: int | None = None,
                 heads: int | None = None, layers: int | None = None,
                 ffn_dim: int | None = None, dropout: float | None = None,
                 kernel_sizes: list[int] | None = None, filters: int | None = None,
                 cell: str | None = None, hidden: int | None = None,
                 bidirectional: bool | None = None, freeze: bool | None = None,
                 freeze_layers: int | None = None, pooling: str | None = None,
                 head_lr: float | None = None, epochs: int | None = None,
                 batch_size: int | None = None, lr: float | None = None,
                 weight_decay: float | None = None, warmup: float | None = None,
                 patience: int | None = None, monitor: str | None = None,
                 precision: str | None = None, device: str | None = None,
                 seed: int | None = None, validation_split: float | None = None,
                 output: str | None = None, config: RunConfig | None = None, verbose: int = 1):
        self.model = model
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.tokenizer = tokenizer
        self.lowercase = lowercase
        self.augment = augment
        self.d_model = d_model
        self.heads = heads
        self.layers = layers
        self.ffn_dim = ffn_dim
        self.dropout = dropout
        self.kernel_sizes = kernel_sizes
        self.filters = filters
        self.cell = cell
        self.hidden = hidden
        self.bidirectional = bidirectional
        self.freeze = freeze
        self.freeze_layers = freeze_layers
        self.pooling = pooling
        self.head_lr = head_lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.patience = patience
        self.monitor = monitor
        self.precision = precision
        self.device = device
        self.seed = seed
        self.validation_split = validation_split
        self.output = output
        self.config = config
        self.verbose = verbose

    def _base_config(self) -> dict[str, Any]:
        return {"inputs": [{"name": "text"}], "output": {"name": "label"}}

    def fit(self, X: Any, y: Any, *, epochs: int | None = None, batch_size: int | None = None,
            validation_split: float | None = None, callbacks: Sequence[Callback] = ()
            ) -> TextClassifier:
        """Train on texts ``X`` and labels ``y`` (lists, NumPy arrays or pandas Series)."""
        cfg = self._fit_overrides(epochs, batch_size, validation_split)
        texts, labels = as_list(X, "X"), as_list(y, "y")
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

    PARAM_PATHS: ClassVar[dict[str, str]] = {
        "model": "model.name",
        "channels": "model.channels",
        "blocks": "model.blocks",
        "residual": "model.residual",
        "dropout": "model.dropout",
        "image_size": "inputs.0.size",
        "color": "inputs.0.color",
        "augment": "inputs.0.augment",
        **TRAIN_PARAMS,
    }

    def __init__(self, model: str | None = None, *, channels: list[int] | None = None,
                 blocks: int | None = None, residual: bool | None = None,
                 dropout: float | None = None, image_size: tuple[int, int] | None = None,
                 color: str | None = None, augment: dict[str, float] | None = None,
                 epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, weight_decay: float | None = None,
                 warmup: float | None = None, patience: int | None = None,
                 monitor: str | None = None, precision: str | None = None,
                 device: str | None = None, seed: int | None = None,
                 validation_split: float | None = None, config: RunConfig | None = None,
                 verbose: int = 1):
        self.model = model
        self.channels = channels
        self.blocks = blocks
        self.residual = residual
        self.dropout = dropout
        self.image_size = image_size
        self.color = color
        self.augment = augment
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.patience = patience
        self.monitor = monitor
        self.precision = precision
        self.device = device
        self.seed = seed
        self.validation_split = validation_split
        self.config = config
        self.verbose = verbose

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


def image_folder_frame(root: str | os.PathLike[str], cfg: RunConfig) -> pd.DataFrame:
    """A folder of class sub-folders as a frame: the image column holds each image's array
    (loaded once here), the output column its class folder's name."""
    from dlforge.data.images import load_image_folder

    inp = cfg.inputs[0]
    size = tuple(inp.size) if inp.size else None
    images, labels, _ = load_image_folder(Path(root), size=size, channels=inp.color)
    return pd.DataFrame({inp.name: pd.Series(list(images), dtype=object),
                         cfg.output.name: labels})


def image_list(X: Any) -> list[Any]:
    """Images as a list: rows of an array, paths, arrays, or the image files of a folder."""
    from dlforge.data.images import IMAGE_EXTENSIONS

    if isinstance(X, str | os.PathLike):
        p = Path(X)
        if not p.is_dir():
            raise DataError(f"{p}: expected a folder of images, an array or a list of images")
        files = sorted(f for f in p.iterdir()
                       if f.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{p}: no image files in the folder")
        return [str(f) for f in files]
    if isinstance(X, np.ndarray):
        if X.ndim not in (3, 4):
            raise DataError(f"X: expected an image array of shape (N, H, W) or (N, H, W, C), "
                            f"got shape {X.shape}")
        return list(X)
    if isinstance(X, pd.Series):
        return X.tolist()
    try:
        return list(X)
    except TypeError:
        raise DataError(f"X: expected images (a folder, array or list), got "
                        f"{type(X).__name__}") from None


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

    PARAM_PATHS: ClassVar[dict[str, str]] = {
        "model": "model.name",
        "cell": "model.cell",
        "hidden": "model.hidden",
        "layers": "model.layers",
        "bidirectional": "model.bidirectional",
        "d_model": "model.d_model",
        "heads": "model.heads",
        "filters": "model.filters",
        "kernel_sizes": "model.kernel_sizes",
        "dropout": "model.dropout",
        "max_length": "inputs.0.max_length",
        "augment": "inputs.0.augment",
        **TRAIN_PARAMS,
        "output": "output.type",
    }

    def __init__(self, model: str | None = None, *, cell: str | None = None,
                 hidden: int | None = None, layers: int | None = None,
                 bidirectional: bool | None = None, d_model: int | None = None,
                 heads: int | None = None, filters: int | None = None,
                 kernel_sizes: list[int] | None = None, dropout: float | None = None,
                 max_length: int | None = None, augment: dict[str, float] | None = None,
                 epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, weight_decay: float | None = None,
                 warmup: float | None = None, patience: int | None = None,
                 monitor: str | None = None, precision: str | None = None,
                 device: str | None = None, seed: int | None = None,
                 validation_split: float | None = None, output: str | None = None,
                 config: RunConfig | None = None, verbose: int = 1):
        self.model = model
        self.cell = cell
        self.hidden = hidden
        self.layers = layers
        self.bidirectional = bidirectional
        self.d_model = d_model
        self.heads = heads
        self.filters = filters
        self.kernel_sizes = kernel_sizes
        self.dropout = dropout
        self.max_length = max_length
        self.augment = augment
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.patience = patience
        self.monitor = monitor
        self.precision = precision
        self.device = device
        self.seed = seed
        self.validation_split = validation_split
        self.output = output
        self.config = config
        self.verbose = verbose

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


def sequence_list(X: Any) -> list[Any]:
    if isinstance(X, np.ndarray):
        if X.ndim not in (2, 3):
            raise DataError(f"X: expected sequences: an array (N, T) or (N, T, F), or a list, "
                            f"got shape {X.shape}")
        return list(X)
    return as_list(X, "X")
