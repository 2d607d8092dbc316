"""``TextClassifier``: the Python front door, a scikit-learn estimator over the run schema.

Constructor arguments are stored untouched (scikit-learn's contract); ``fit`` turns them into a
:class:`~dlforge.config.RunConfig`, then runs the pipeline: clean → split → tokenize → train →
score. Arguments left as ``None`` take the config's defaults (or those of ``config``, if given).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin

from dlforge.config import (
    RunConfig,
    apply_overrides,
    config_to_dict,
    dump_config,
    validate_config,
)
from dlforge.data.augment import TokenAugmenter
from dlforge.data.clean import clean_frame, clean_text
from dlforge.data.features import MASK, LabelEncoder, TextTokenizer
from dlforge.data.loader import make_loader
from dlforge.data.split import stratified_split
from dlforge.errors import ConfigError, DataError, NotFittedError
from dlforge.models.registry import build_model
from dlforge.train.callbacks import Callback
from dlforge.train.metrics import (
    baseline_metrics,
    classification_metrics,
    majority_label,
    predict_indices,
    probabilities,
)
from dlforge.train.trainer import Trainer, loss_fn, predict_logits

__all__ = ["PARAM_PATHS", "TextClassifier", "encode_labels"]

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
    "epochs": "train.epochs",
    "batch_size": "train.batch_size",
    "lr": "train.lr",
    "weight_decay": "train.weight_decay",
    "warmup": "train.warmup",
    "patience": "train.patience",
    "monitor": "train.monitor",
    "precision": "train.precision",
    "device": "train.device",
    "seed": "train.seed",
    "validation_split": "data.validation_split",
    "output": "output.type",
}


class TextClassifier(ClassifierMixin, BaseEstimator):
    """Classify texts with a Transformer, CNN or RNN.

    >>> clf = TextClassifier(model="transformer", vocab_size=10_000, d_model=512, heads=4)
    >>> clf.fit(texts, labels, epochs=5, batch_size=64, validation_split=0.1)  # doctest: +SKIP
    >>> clf.predict(["an example"])  # doctest: +SKIP

    Labels may be strings or ints (binary or multi-class) or lists of labels (multi-label).
    """

    def __init__(self, model: str | None = None, *, vocab_size: int | None = None,
                 max_length: int | None = None, tokenizer: str | None = None,
                 lowercase: bool | None = None, augment: dict[str, float] | None = None,
                 d_model: int | None = None,
                 heads: int | None = None, layers: int | None = None,
                 ffn_dim: int | None = None, dropout: float | None = None,
                 kernel_sizes: list[int] | None = None, filters: int | None = None,
                 cell: str | None = None, hidden: int | None = None,
                 bidirectional: bool | None = None, epochs: int | None = None,
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

    # ------------------------------------------------------------------ config
    def resolve_config(self, **overrides: Any) -> RunConfig:
        """The RunConfig these arguments (and ``overrides``, by argument name) describe."""
        base = (config_to_dict(self.config) if self.config is not None
                else {"inputs": [{"name": "text"}], "output": {"name": "label"}})
        params = {k: getattr(self, k) for k in PARAM_PATHS}
        params.update(overrides)
        unknown = sorted(set(params) - set(PARAM_PATHS))
        if unknown:
            raise ConfigError(f"unknown argument(s) {', '.join(unknown)}; valid ones are: "
                              f"{', '.join(PARAM_PATHS)}")
        dotted = {PARAM_PATHS[k]: v for k, v in params.items() if v is not None}
        if "train.seed" in dotted:
            dotted["data.seed"] = dotted["train.seed"]
        return validate_config(apply_overrides(base, dotted), source="TextClassifier")

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any, *, epochs: int | None = None, batch_size: int | None = None,
            validation_split: float | None = None, callbacks: Sequence[Callback] = ()
            ) -> TextClassifier:
        """Train on texts ``X`` and labels ``y`` (lists, NumPy arrays or pandas Series)."""
        overrides = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size,
                                       "validation_split": validation_split}.items()
                     if v is not None}
        cfg = self.resolve_config(**overrides)
        texts, labels = _as_list(X, "X"), _as_list(y, "y")
        if len(texts) != len(labels):
            raise DataError(f"X has {len(texts)} texts but y has {len(labels)} labels")
        df = pd.DataFrame({cfg.text.name: texts, cfg.output.name: labels})
        return self._fit_frame(df, cfg, source="X", callbacks=callbacks)

    def _fit_frame(self, df: pd.DataFrame, cfg: RunConfig, source: str,
                   workdir: Path | None = None, resume: bool = False,
                   callbacks: Sequence[Callback] = (),
                   log: Callable[[str], None] | None = None) -> TextClassifier:
        log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        say = log if self.verbose else (lambda s: None)
        text_col, label_col = cfg.text.name, cfg.output.name
        torch.manual_seed(cfg.train.seed)
        df, cleaning = clean_frame(df, text_col, label_col, cfg.data.clean, source=source)
        say("cleaning: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in cleaning.items()))

        # Labels, then the splits (test first, then validation from the rest).
        saved = workdir / "labels.json" if resume and workdir is not None else None
        labels, y, strata = encode_labels(df, cfg, source,
                                          saved if saved and saved.exists() else None)
        idx = np.arange(len(df))
        test_idx = np.array([], dtype=np.int64)
        if cfg.data.test_split > 0:
            keep, held = stratified_split(strata, cfg.data.test_split, cfg.data.seed)
            idx, test_idx = keep, held
        tr, va = stratified_split(strata[idx], cfg.data.validation_split, cfg.data.seed)
        train_idx, val_idx = idx[tr], idx[va]
        if len(train_idx) < 2:
            raise DataError(f"{source}: only {len(df)} usable rows; too few to train on")
        texts = df[text_col].tolist()

        # Tokenizer: trained on the training split only.
        if resume and workdir is not None and (workdir / "tokenizer.json").exists():
            tok = TextTokenizer.load(workdir / "tokenizer.json", cfg.text.max_length)
        else:
            tok = TextTokenizer.train([texts[i] for i in train_idx], cfg.text.tokenizer,
                                      cfg.text.vocab_size, cfg.text.max_length,
                                      cfg.text.lowercase, cfg.text.min_frequency)
        ids = tok.encode(texts)
        say(f"data: {len(train_idx)} train, {len(val_idx)} validation, {len(test_idx)} test rows;"
            f" {labels.kind} labels {labels.classes[:10]}; vocabulary {tok.vocab_size}")
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
            dump_config(cfg, workdir / "config.yaml")
            tok.save(workdir / "tokenizer.json")
            labels.save(workdir / "labels.json")

        def subset(rows: np.ndarray) -> list[np.ndarray]:
            return [ids[i] for i in rows]

        bs, seed, bucket = cfg.train.batch_size, cfg.train.seed, cfg.train.bucket_by_length
        aug = cfg.text.augment
        augmenter = TokenAugmenter(aug.delete, aug.swap, aug.mask,
                                   mask_id=tok.tokenizer.token_to_id(MASK), seed=seed)
        train_loader = make_loader(subset(train_idx), y[train_idx], bs, True, seed, bucket,
                                   augment=augmenter if augmenter.active else None)
        val_loader = make_loader(subset(val_idx), None, max(bs, 256), False, seed, bucket)

        net = build_model(cfg.model, tok.vocab_size, cfg.text.max_length, labels.n_outputs)
        monitor = cfg.train.monitor
        if monitor == "auto":
            monitor = "macro_f1" if labels.kind == "multilabel" else "accuracy"

        def metric_fn(targets: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
            return classification_metrics(labels.kind, targets,
                                          probabilities(labels.kind, logits), labels.classes,
                                          full=False)

        trainer = Trainer(net, labels.kind, cfg.train, metric_fn, monitor, callbacks,
                          checkpoint_dir=workdir / "checkpoints" if workdir else None,
                          verbose=self.verbose, log=log)
        say(f"model: {cfg.model.name}, {sum(p.numel() for p in net.parameters()):,} parameters;"
            f" device {trainer.device}, precision {trainer.precision}")
        history = trainer.fit(train_loader, val_loader, y[val_idx], resume=resume)

        # The fitted state (scikit-learn style: attributes ending in _).
        self.config_ = cfg
        self.labels_ = labels
        self.classes_ = _label_array(labels.classes)
        self.tokenizer_ = tok
        self.model_ = trainer.model.eval()
        self.device_ = trainer.device
        self.precision_ = trainer.precision
        self.history_ = history
        self.best_epoch_ = trainer.state["best_epoch"]
        y_train = y[train_idx]
        self.baseline_ = majority_label(labels.kind, y_train, len(labels.classes))
        report = {"validation": self._score_split(ids, y, val_idx)}
        if len(test_idx):
            report["test"] = self._score_split(ids, y, test_idx)
        self.metrics_ = {
            "task": f"{labels.kind} text classification",
            "monitor": monitor,
            "best_epoch": self.best_epoch_,
            "epochs_run": len(history),
            **report,
        }
        self.data_report_ = {
            "source": source,
            "cleaning": cleaning,
            "splits": {"train": len(train_idx), "validation": len(val_idx),
                       "test": len(test_idx)},
            "class_counts_train": _class_counts(labels, y_train),
            "baseline_majority": self.baseline_.tolist(),
        }
        return self

    def _score_split(self, ids: list[np.ndarray], y: np.ndarray,
                     rows: np.ndarray) -> dict[str, Any]:
        logits = self._logits_from_ids([ids[i] for i in rows])
        out = self._metrics(logits, y[rows])
        return out

    def _metrics(self, logits: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        kind, classes = self.labels_.kind, self.labels_.classes
        loss = float(loss_fn(kind, torch.from_numpy(logits), torch.from_numpy(np.asarray(y))))
        out = {"loss": loss, **classification_metrics(kind, y, probabilities(kind, logits),
                                                      classes)}
        out["baseline"] = baseline_metrics(kind, self.baseline_, y, classes)
        return out

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("this TextClassifier is not fitted yet; call fit() first "
                                 "or load a run with dlforge.load(path)")

    def _logits_from_ids(self, ids: list[np.ndarray]) -> np.ndarray:
        if not ids:
            return np.zeros((0, self.labels_.n_outputs), dtype=np.float32)
        loader = make_loader(ids, None, max(self.config_.train.batch_size, 256), False)
        return predict_logits(self.model_, loader, self.device_, self.precision_)

    def _logits(self, X: Any) -> np.ndarray:
        self._check_fitted()
        clean = self.config_.data.clean
        texts = [clean_text(t, clean) for t in _as_list(X, "X")]
        return self._logits_from_ids(self.tokenizer_.encode(texts))

    def predict_proba(self, X: Any) -> np.ndarray:
        """(N, 2) for binary, (N, C) for multi-class (rows sum to 1) and multi-label."""
        logits = self._logits(X)  # checks that the estimator is fitted
        return probabilities(self.labels_.kind, logits)

    def predict(self, X: Any) -> np.ndarray | list[list[Any]]:
        return self.decode(self.predict_proba(X))

    def decode(self, proba: np.ndarray) -> np.ndarray | list[list[Any]]:
        """The labels ``predict`` gives for probabilities from ``predict_proba`` (so one
        forward pass can serve both)."""
        self._check_fitted()
        decoded = self.labels_.decode(predict_indices(self.labels_.kind, proba))
        if self.labels_.kind == "multilabel":
            return decoded
        return _label_array(decoded)

    def evaluate(self, X: Any, y: Any) -> dict[str, Any]:
        """Loss, accuracy, macro-F1, ROC-AUC (binary), per-class scores, confusion matrix and
        the majority-class baseline on the given data."""
        self._check_fitted()
        labels = _as_list(y, "y")
        texts = _as_list(X, "X")
        if len(texts) != len(labels):
            raise DataError(f"X has {len(texts)} texts but y has {len(labels)} labels")
        target = self.labels_.encode(labels, self.config_.output.separator, source="y")
        return self._metrics(self._logits(texts), target)

    def save(self, path: str | Path) -> Path:
        """Write a run directory (atomically); ``dlforge.load(path)`` gives this model back."""
        from dlforge.run import save_run

        self._check_fitted()
        return save_run(self, Path(path))

    def __sklearn_tags__(self):  # noqa: ANN204 - scikit-learn's own type
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags


# ---------------------------------------------------------------------------------- helpers
def encode_labels(df: pd.DataFrame, cfg: RunConfig, source: str, saved: Path | None = None
                  ) -> tuple[LabelEncoder, np.ndarray, np.ndarray]:
    """Fit the label map on ``df`` (or load a ``saved`` one) and encode the label column.
    Returns (labels, targets, strata), strata being what stratified splits stratify on."""
    col = cfg.output.name
    labels = (LabelEncoder.load(saved) if saved is not None else
              LabelEncoder.fit(df[col].tolist(), cfg.output.type, cfg.output.separator,
                               source=f"{source}: {col}"))
    y = labels.encode(df[col].tolist(), cfg.output.separator, source=source)
    return labels, y, (y.argmax(axis=1) if labels.kind == "multilabel" else y)


def _as_list(values: Any, name: str) -> list[Any]:
    if isinstance(values, str):
        raise DataError(f"{name}: expected a sequence of values, got a single string")
    if isinstance(values, pd.DataFrame):
        if values.shape[1] != 1:
            raise DataError(f"{name}: expected one column, got a DataFrame with "
                            f"{values.shape[1]} columns")
        values = values.iloc[:, 0]
    if isinstance(values, pd.Series):
        return values.tolist()
    if isinstance(values, np.ndarray):
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        return list(values) if values.ndim != 1 else values.tolist()
    try:
        return list(values)
    except TypeError:
        raise DataError(f"{name}: expected a list, NumPy array or pandas Series, got "
                        f"{type(values).__name__}") from None


def _label_array(values: list[Any]) -> np.ndarray:
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool) for v in values):
        return arr.astype(np.int64)
    return arr


def _class_counts(labels: LabelEncoder, y: np.ndarray) -> dict[str, int]:
    counts = (np.asarray(y).sum(axis=0) if labels.kind == "multilabel"
              else np.bincount(y, minlength=len(labels.classes)))
    return {str(c): int(n) for c, n in zip(labels.classes, counts, strict=True)}
