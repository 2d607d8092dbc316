"""The parameter table: every hyperparameter once, with the config key it sets.

One row per name. From this table come the estimators' keyword arguments (``TextClassifier(
d_model=256)``), the ``dlforge train`` flags (``--d-model 256``), the short names of a ``tune:``
search space (``d_model: {int: [64, 512]}``) and the table in docs/parameters.md. Adding a
hyperparameter is one row here (and its field in the schema, if it is new).

A path may name an input by its kind rather than its position: ``<text>``, ``<image>``,
``<audio>`` and ``<sequence>`` stand for that input of the run (``inputs.0`` for a text classifier),
``<series>`` for the forecast section of a forecasting run or else its sequence input, and
``<text|sequence>`` for the first of those the run has (:func:`resolve_path`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlforge.errors import ConfigError

__all__ = ["ESTIMATOR_KINDS", "PARAMS", "TUNE_ALIASES", "Param", "estimator_params", "flag_params",
           "param", "resolve_path"]

# The estimator families that take keyword arguments from the table (dlforge.estimators).
ESTIMATOR_KINDS = ("text", "image", "sequence", "tabular", "forecast", "audio")
_ALL = frozenset(ESTIMATOR_KINDS)
_SEQ = frozenset({"text", "sequence", "forecast"})  # families that read a sequence of steps


@dataclass(frozen=True)
class Param:
    """One hyperparameter.

    ``name``: the keyword argument (and the flag, ``--name-with-dashes``, unless ``flag`` says
    otherwise); ``path``: the config key it sets; ``type``: its Python type, as written in a
    signature; ``help``: one line; ``estimators``: the estimator kinds that take it as a
    keyword argument; ``flag``: the ``dlforge train`` flag, or None for none; ``parse``: how
    the flag's text becomes the value (``plain``, ``ints`` for 32,64, ``size`` for 32x32,
    ``names`` for a,b, ``switch`` for a flag without a value); ``tune``: a short name in
    ``tune:`` search spaces."""

    name: str
    path: str
    type: str
    help: str
    estimators: frozenset[str] = frozenset()
    flag: str | None = None
    parse: str = "plain"
    tune: bool = False

    @property
    def dest(self) -> str:
        """The flag's Python name (``output_type`` for ``--output-type``)."""
        return (self.flag or self.name).replace("-", "_")


def _p(name: str, path: str, type: str, help: str, estimators: frozenset[str] = frozenset(),
       flag: bool | str = False, parse: str = "plain", tune: bool = False) -> Param:
    return Param(name, path, type, help, frozenset(estimators),
                 (name.replace("_", "-") if flag is True else flag or None), parse, tune)


PARAMS: tuple[Param, ...] = (
    # -------------------------------------------------------------------- data and output
    _p("data", "data.path", "str",
       "CSV, TSV, JSONL or Parquet file; or a folder of class sub-folders of images or "
       "audio clips.",
       flag=True),
    _p("label", "output.name", "str", "The label (output) column.", flag=True),
    _p("output", "output.type", "str",
       "auto, binary, category, multilabel or numeric (regression).",
       {"text", "sequence"}, flag="output-type"),
    _p("threshold", "output.threshold", "str",
       "Binary: the probability from which a row is the second class; auto: chosen on the "
       "validation split for the monitored metric.",
       {"text", "image", "sequence", "tabular", "audio"},
       flag=True),
    _p("validation_split", "data.validation_split", "float",
       "Fraction of the rows held out for validation (early stopping, model choice).", _ALL,
       flag=True),
    _p("test_split", "data.test_split", "float", "Held-out test fraction.", {"forecast"},
       flag=True),
    _p("pii", "data.clean.pii", "bool",
       "Scrub e-mails, phone numbers, card numbers, IP addresses and URLs from text inputs "
       "(typed placeholders such as <EMAIL>).", flag=True, parse="switch"),
    # ------------------------------------------------------------------------------ inputs
    _p("vocab_size", "<text>.vocab_size", "int", "Tokenizer vocabulary size.", {"text"},
       flag=True),
    _p("max_length", "<text|sequence>.max_length", "int",
       "Tokens kept per text (steps per sequence).", {"text", "sequence"}, flag=True),
    _p("tokenizer", "<text>.tokenizer", "str", "bpe or wordpiece.", {"text"}, flag=True),
    _p("lowercase", "<text>.lowercase", "bool", "Lowercase texts before tokenizing.", {"text"}),
    _p("image_size", "<image>.size", "tuple[int, int]",
       "Resize every image to HxW (needed when sizes differ).", {"image"}, flag=True,
       parse="size"),
    _p("color", "<image>.color", "str", "Images: auto, gray or rgb.", {"image"}, flag=True),
    _p("sample_rate", "<audio>.sample_rate", "int",
       "Audio: every clip is resampled to this rate (Hz).", {"audio"}, flag=True),
    _p("clip_seconds", "<audio>.seconds", "float",
       "Audio: the window length; longer clips are cropped around their centre, shorter ones "
       "padded with silence.", {"audio"}, flag=True),
    _p("n_mels", "<audio>.n_mels", "int", "Audio: mel bands of the log-mel spectrogram.",
       {"audio"}, flag=True),
    _p("n_fft", "<audio>.n_fft", "int", "Audio: STFT window, in samples.", {"audio"}),
    _p("hop_length", "<audio>.hop_length", "int", "Audio: samples between STFT frames.",
       {"audio"}),
    _p("augment", "<text|image|audio|series>.augment", "dict[str, float]",
       "Training-split augmentation of the main input, e.g. {'delete': 0.1, 'mask': 0.1}.",
       {"text", "image", "sequence", "forecast", "audio"}),
    _p("augment_delete", "<text>.augment.delete", "float",
       "Training only: drop each token with this probability.", flag=True),
    _p("augment_swap", "<text>.augment.swap", "float",
       "Training only: swap this rate x length random token pairs.", flag=True),
    _p("augment_mask", "<text>.augment.mask", "float",
       "Training only: replace each token by [MASK] with this probability.", flag=True),
    _p("augment_crop", "<image>.augment.crop", "int",
       "Training only: pad by N pixels and crop back at a random offset.", flag=True),
    _p("augment_flip", "<image>.augment.flip", "float",
       "Training only: horizontal flip with this probability.", flag=True),
    _p("augment_rotate", "<image>.augment.rotate", "float",
       "Training only: rotate by up to this many degrees.", flag=True),
    _p("augment_noise", "<image|audio>.augment.noise", "float",
       "Training only: add Gaussian noise of this std (audio: white noise of up to this "
       "fraction of the clip's RMS).", flag=True),
    _p("augment_shift", "<audio>.augment.shift", "float",
       "Training only, audio: shift each clip by up to this many seconds.", flag=True),
    _p("augment_time_mask", "<audio>.augment.time_mask", "int",
       "Training only, audio: SpecAugment time masks of up to N frames.", flag=True),
    _p("augment_freq_mask", "<audio>.augment.freq_mask", "int",
       "Training only, audio: SpecAugment frequency masks of up to N mel bands.", flag=True),
    _p("augment_jitter", "<series>.augment.jitter", "float",
       "Training only, sequences: Gaussian noise of this std.", flag=True),
    _p("augment_scaling", "<series>.augment.scaling", "float",
       "Training only, sequences: scale by N(1, s^2).", flag=True),
    _p("augment_slice", "<series>.augment.slice", "float",
       "Training only, sequences: crop up to this fraction, stretch back.", flag=True),
    # --------------------------------------------------------------------------- forecast
    _p("time", "forecast.time", "str", "Forecasting: the time column (sorted, no duplicates).",
       flag=True),
    _p("window", "forecast.window", "int", "Forecasting: past steps seen.", {"forecast"},
       flag=True),
    _p("horizon", "forecast.horizon", "int", "Forecasting: steps ahead.", {"forecast"},
       flag=True),
    _p("season", "forecast.season", "int",
       "Forecasting: season length for the seasonal-naive baseline.", {"forecast"}, flag=True),
    # ------------------------------------------------------------------------------ model
    _p("model", "model.name", "str",
       "transformer, cnn, rnn, mlp, crnn (audio), or a local Hugging Face model folder.",
       _ALL, flag=True,
       tune=True),
    _p("d_model", "model.d_model", "int", "Model width.", _SEQ, flag=True, tune=True),
    _p("heads", "model.heads", "int", "Attention heads (transformer).", _SEQ, flag=True,
       tune=True),
    _p("layers", "model.layers", "int", "Blocks (transformer); recurrent layers (rnn, crnn).",
       _SEQ | {"audio"}, flag=True, tune=True),
    _p("ffn_dim", "model.ffn_dim", "int", "Transformer feed-forward width (default 4 x d_model).",
       {"text"}),
    _p("kernel_sizes", "model.kernel_sizes", "list[int]", "1-D CNN kernel widths.", _SEQ),
    _p("filters", "model.filters", "int", "1-D CNN filters per kernel width.", _SEQ, tune=True),
    _p("cell", "model.cell", "str", "RNN cell: gru or lstm.", _SEQ | {"audio"}, tune=True),
    _p("hidden", "model.hidden", "int | list[int]",
       "MLP layer widths, e.g. 128,64 (the RNN's or CRNN's hidden size: one number).",
       {"text", "sequence", "tabular", "forecast", "audio"}, flag=True, parse="ints",
       tune=True),
    _p("bidirectional", "model.bidirectional", "bool", "RNN, CRNN: read both ways.",
       {"text", "sequence", "audio"}),
    _p("channels", "model.channels", "list[int]",
       "CNN stage widths for images and audio (crnn too), e.g. 32,64,128.",
       {"image", "audio"}, flag=True, parse="ints"),
    _p("blocks", "model.blocks", "int", "Images, audio: conv blocks per CNN stage.",
       {"image", "audio"}),
    _p("residual", "model.residual", "bool",
       "Images, audio: residual connection around each conv block.", {"image", "audio"}),
    _p("head_hidden", "model.head_hidden", "list[int]",
       "Hidden layers of the head on top of the encoders, e.g. 64 (mixed inputs).", flag=True,
       parse="ints"),
    _p("dropout", "model.dropout", "float", "Dropout probability.", _ALL, flag=True, tune=True),
    _p("freeze", "model.freeze", "bool", "Pretrained model: train the head only.", {"text"},
       flag=True, parse="switch"),
    _p("freeze_layers", "model.freeze_layers", "int",
       "Pretrained model: freeze the embeddings and the first K layers.", {"text"}, flag=True),
    _p("pooling", "model.pooling", "str", "Pretrained model: cls or mean pooling.", {"text"}),
    _p("head_lr", "model.head_lr", "float",
       "Pretrained model: learning rate of the new head (default: --lr).", {"text"},
       flag=True),
    _p("layer_decay", "model.layer_decay", "float",
       "Pretrained model: layer-wise learning-rate decay, each layer's rate this factor of the "
       "one above (default 0.9; 1: off).", {"text"}, flag=True),
    _p("reinit_layers", "model.reinit_layers", "int",
       "Pretrained model: re-initialise the top K layers before fine-tuning.", {"text"},
       flag=True),
    _p("folds", "model.cv", "int",
       "Model selection (--model auto): cross-validation folds (default 3).", flag=True),
    _p("halving", "model.halving", "bool",
       "Model selection (--model auto): stop the weakest networks after one fold "
       "(successive halving; false: every candidate on every fold)."),
    _p("families", "model.families", "list[str]",
       "Model selection (--model auto): the candidates, e.g. cnn,rnn.", flag=True,
       parse="names"),
    _p("ensemble", "model.ensemble", "bool",
       "Model selection (--model auto): also score the average of the two best candidates "
       "on the same folds and keep it when it wins on the mean and on most folds (default "
       "false: one family).", {"text", "image", "sequence", "tabular", "audio"}, flag=True,
       parse="switch"),
    _p("auto_pretrained", "model.pretrained", "list[str]",
       "Model selection (--model auto): local pretrained encoder folders that are candidates "
       "too (a text input), e.g. models/minilm.", {"text", "tabular"}, flag=True,
       parse="names"),
    _p("members", "model.members", "list[str]",
       "--model ensemble: the families trained and averaged, e.g. cnn,rnn.",
       {"text", "image", "sequence", "tabular", "audio"}, flag=True, parse="names"),
    # ------------------------------------------------------------------------------ train
    _p("epochs", "train.epochs", "int", "Training epochs (unset: chosen from the data size).",
       _ALL, flag=True, tune=True),
    _p("batch_size", "train.batch_size", "int", "Rows per batch (global under --nproc; unset: "
       "chosen from the data size).", _ALL, flag=True, tune=True),
    _p("lr", "train.lr", "float", "Peak learning rate (unset: chosen for the family).", _ALL,
       flag=True, tune=True),
    _p("weight_decay", "train.weight_decay", "float", "AdamW weight decay (unset: 0.01).",
       _ALL, flag=True, tune=True),
    _p("warmup", "train.warmup", "float", "Fraction of all steps spent warming up (unset: "
       "chosen for the family).", _ALL, flag=True, tune=True),
    _p("patience", "train.patience", "int", "Early-stopping patience; 0: every epoch (unset: "
       "chosen from the epochs).", _ALL, flag=True),
    _p("restarts", "train.restarts", "int", "Train from this many seeds and keep the best on "
       "validation (unset: 3 for a pretrained model on under 1,000 rows, else 1).", _ALL,
       flag=True),
    _p("monitor", "train.monitor", "str",
       "The validation metric early stopping watches (auto: accuracy, rmse or mae).", _ALL),
    _p("baseline_weight", "train.baseline_weight", "str",
       "The strong simple baseline's share (0 to 1) of the predictions, averaged with the "
       "network's (forecasting: the seasonal-naive forecast's); auto: chosen on the validation "
       "split (0, 0.25, 0.5, 0.75 or 1; forecasting: 0); 0: the network alone.",
       {"text", "tabular", "forecast"}, flag=True),
    _p("label_smoothing", "train.label_smoothing", "float",
       "Label smoothing of the training loss, the share of each target's probability spread "
       "over the classes (0 to <1; 0: off; unset: 0.1 for a binary or multi-class network "
       "trained from scratch, else 0; Seq2Seq's seq2seq.label_smoothing: 0.1 over the "
       "vocabulary).",
       {"text", "image", "sequence", "tabular", "audio"}, flag=True, tune=True),
    _p("class_weight", "train.class_weight", "str",
       "auto, none or balanced: each class weighs n / (classes x its count) in the loss; auto: "
       "balanced when the monitored metric is macro_f1.",
       {"text", "image", "sequence", "tabular", "audio"}, flag=True),
    _p("accumulate", "train.accumulate", "int",
       "Micro-batches per optimizer step (gradient accumulation).", flag=True),
    _p("precision", "train.precision", "str", "auto, fp32 or bf16.", _ALL, flag=True),
    _p("device", "train.device", "str", "auto, cpu, cuda, cuda:N or mps.", _ALL, flag=True),
    _p("seed", "train.seed", "int", "Random seed (also of the data splits).", _ALL, flag=True),
    _p("cv", "train.cv", "int", "Also score by K-fold cross-validation (mean ± std).",
       flag=True),
    # ---------------------------------------------------------------------------- privacy
    _p("dp_epsilon", "privacy.target_epsilon", "float",
       "Differentially private training (DP-SGD): the privacy budget ε to spend.", flag=True),
    _p("dp_delta", "privacy.target_delta", "float",
       "DP-SGD: δ (default 1e-5; keep it below 1 / training rows).", flag=True),
    _p("dp_max_grad_norm", "privacy.max_grad_norm", "float",
       "DP-SGD: each row's gradient is clipped to this norm (default 1.0).", flag=True),
    _p("dp_accountant", "privacy.accountant", "str",
       "DP-SGD: the privacy accountant, rdp (default), prv or gdp.", flag=True),
    # --------------------------------------------------------------------------- tracking
    # Its flag, --track (dlforge train and tune), is written by hand: it adds backends to a
    # config file's tracking: section instead of replacing it.
    _p("track", "tracking", "str | list[str] | dict",
       "Experiment tracking: mlflow, tensorboard or both, e.g. ['mlflow', 'tensorboard'] "
       "(--track mlflow,tensorboard); settings as tracking: {mlflow: {uri, experiment}, "
       "tensorboard: {log_dir}}.", _ALL),
    # -------------------------------------------------------------- sequence to sequence
    # Seq2Seq's own settings (dlforge.config.seq2seq); with --source/--target, dlforge train
    # also takes the shared rows whose names are Seq2SeqConfig fields (--epochs, --d-model...).
    _p("beam_size", "seq2seq.beam_size", "int",
       "Seq2Seq: beams searched when generating; 1: greedy.", flag=True),
    _p("length_penalty", "seq2seq.length_penalty", "float",
       "Seq2Seq: a hypothesis scores log p / length^this (above 0 favours longer ones).",
       flag=True),
    _p("max_new_tokens", "seq2seq.max_new_tokens", "int",
       "Seq2Seq: the most tokens generated (unset: the longest target the model takes).",
       flag=True),
    _p("max_target_length", "seq2seq.max_target_length", "int",
       "Seq2Seq: target tokens the decoder takes (unset: the data's longest plus a quarter; "
       "--max-length is the source's).", flag=True),
    _p("positions", "seq2seq.positions", "str",
       "Seq2Seq Transformer: sinusoidal or learned positions.", flag=True),
    _p("shared_vocab", "seq2seq.shared_vocab", "bool",
       "Seq2Seq Transformer: one BPE vocabulary (and embedding) for sources and targets; "
       "false: one each."),
    _p("tie_embeddings", "seq2seq.tie_embeddings", "bool",
       "Seq2Seq Transformer: the output layer is the target embedding's matrix."),
)

_BY_NAME = {p.name: p for p in PARAMS}
# Short names for the keys people tune most; any other key by its dotted path (train.lr).
TUNE_ALIASES: dict[str, str] = {p.name: p.path for p in PARAMS if p.tune}


def param(name: str) -> Param:
    """The row of ``name``."""
    return _BY_NAME[name]


def estimator_params(kind: str) -> tuple[Param, ...]:
    """The keyword arguments of the estimator ``kind`` (one of ESTIMATOR_KINDS), in table
    order."""
    return tuple(p for p in PARAMS if kind in p.estimators)


def flag_params() -> tuple[Param, ...]:
    """The rows with a ``dlforge train`` flag."""
    return tuple(p for p in PARAMS if p.flag)


def _slots(inputs: list[dict[str, Any]], forecast: bool) -> dict[str, str]:
    where: dict[str, str] = {}
    for i, inp in enumerate(inputs):
        where.setdefault(str(inp.get("type", "text")), f"inputs.{i}")
    series = "forecast" if forecast else where.get("sequence")
    if series:
        where["series"] = series
    return where


def resolve_path(path: str, inputs: list[dict[str, Any]], forecast: bool = False,
                 name: str | None = None) -> str:
    """``path`` with its ``<kind>`` slot replaced by the run's input of that kind (its index
    in ``inputs``), ``<series>`` by the forecast section or the sequence input. A run without
    such an input is a ConfigError naming ``name`` (the argument or flag that was given)."""
    if not path.startswith("<"):
        return path
    slot, rest = path[1:].split(">", 1)
    where = _slots(inputs, forecast)
    for kind in slot.split("|"):
        if kind in where:
            return where[kind] + rest
    first = slot.split("|")[0]
    what = "sequence or forecast" if first == "series" else " or ".join(slot.split("|"))
    raise ConfigError(f"{name or path}: this run has no {what} input")
