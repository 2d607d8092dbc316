"""``Seq2Seq``: text in, text out (translation, question answering, transliteration, ...).

>>> s2s = Seq2Seq().fit(sources, targets)             # or .fit("pairs.csv") with source=/target=
>>> s2s.predict(["how are you"])                     # beam search of 4 by default
>>> s2s.evaluate(test_sources, test_targets)         # BLEU, chrF, exact match, copy baseline

``model="transformer"`` (the default) trains the encoder-decoder Transformer of
:mod:`dlforge.models.seq2seq` from scratch with a byte-level BPE vocabulary fitted on the
training split; ``model="path/to/folder"`` fine-tunes a local pretrained encoder-decoder (T5,
BART, Marian: :mod:`dlforge.estimators.seq2seq_pretrained`). A seq2seq run directory::

    runs/g2p/
      dlforge.json        manifest (task: seq2seq, estimator: Seq2Seq, model: transformer)
      config.yaml         the Seq2SeqConfig, every default filled in
      model.safetensors   the best weights by validation loss
      model.json          the EncoderDecoderConfig (vocabularies, lengths, sizes)
      tokenizer.json      the shared BPE vocabulary (or source_ and target_tokenizer.json)
      pretrained/         instead of the three above for a pretrained model: its folder
      metrics.json        validation (and test) BLEU, chrF, exact match; the copy baseline's
      data.json           pairs, splits, dropped rows, longest source and target in tokens
      history.csv         epoch, train_loss, val_loss, lr, seconds
"""

from __future__ import annotations

import inspect
import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors.torch import load_file
from sklearn.base import BaseEstimator

from dlforge.config.seq2seq import (
    Seq2SeqConfig,
    dump_seq2seq_config,
    load_seq2seq_config,
    seq2seq_config,
)
from dlforge.data.pairs import BOS, EOS, PAD, PairTokenizer, check_pairs, read_pairs, split_pairs
from dlforge.errors import ConfigError, DataError, MissingExtraError, NotFittedError, RunDirError
from dlforge.models.seq2seq import (
    Decoding,
    DecodingState,
    EncoderDecoder,
    EncoderDecoderConfig,
    beam_decode,
    greedy_decode,
)
from dlforge.run import (
    SEQ2SEQ_TASK,
    check_out,
    check_run,
    history_csv,
    new_run_dir,
    read_history,
    save_weights,
    seal_run,
    to_json,
)
from dlforge.train.device import resolve_device, resolve_precision
from dlforge.train.seq2seq import (
    PairBatch,
    auto_epochs,
    collate,
    text_metrics,
    train_seq2seq,
)

__all__ = ["Seq2Seq", "TransformerBackend"]

PREDICT_BATCH = 64


class TransformerBackend:
    """The from-scratch Transformer with its vocabularies: what :class:`Seq2Seq` asks of a
    model (the pretrained backend answers the same calls)."""

    kind = "transformer"

    def __init__(self, model: EncoderDecoder, src_tok: PairTokenizer, tgt_tok: PairTokenizer,
                 shared: bool):
        self.model, self.src_tok, self.tgt_tok, self.shared = model, src_tok, tgt_tok, shared
        self.pad = PAD
        self.max_source = model.config.max_source
        self.max_new_tokens = model.config.max_target  # the longest target and its [EOS]

    @classmethod
    def build(cls, cfg: Seq2SeqConfig, sources: list[str], targets: list[str],
              train_idx: Any, say: Any) -> tuple[TransformerBackend, dict[str, Any]]:
        """Vocabularies fitted on the training pairs; lengths checked; the model built."""
        train_src = [sources[i] for i in train_idx]
        train_tgt = [targets[i] for i in train_idx]
        if cfg.shared_vocab:
            src_tok = tgt_tok = PairTokenizer.train(train_src + train_tgt, cfg.vocab_size)
        else:
            src_tok = PairTokenizer.train(train_src, cfg.vocab_size)
            tgt_tok = PairTokenizer.train(train_tgt, cfg.vocab_size)
        src_len = [len(r) for r in src_tok.encode(sources)]
        tgt_len = [len(r) for r in tgt_tok.encode(targets)]
        max_src = _limit(cfg.max_length, src_len, "max_length", "source", sources)
        max_tgt = _limit(cfg.max_target_length, tgt_len, "max_target_length", "target",
                         targets)
        mcfg = EncoderDecoderConfig(
            source_vocab=src_tok.vocab_size, target_vocab=tgt_tok.vocab_size,
            max_source=max_src, max_target=max_tgt + 1, d_model=cfg.d_model, layers=cfg.layers,
            heads=cfg.heads, ffn_dim=cfg.ffn_dim or 4 * cfg.d_model, dropout=cfg.dropout,
            positions=cfg.positions, tie_embeddings=cfg.tie_embeddings,
            shared_embeddings=cfg.shared_vocab)
        torch.manual_seed(cfg.seed)
        backend = cls(EncoderDecoder(mcfg), src_tok, tgt_tok, cfg.shared_vocab)
        say(f"vocabulary: {src_tok.vocab_size} BPE tokens" + (
            " (shared)" if cfg.shared_vocab else f" source, {tgt_tok.vocab_size} target")
            + f"; longest source {max(src_len)} tokens, target {max(tgt_len)}; model "
            f"{backend.model.num_params():,} parameters")
        report = {"vocab_size": {"source": src_tok.vocab_size, "target": tgt_tok.vocab_size},
                  "shared_vocab": cfg.shared_vocab,
                  "longest": {"source": max(src_len), "target": max(tgt_len)},
                  "max_length": max_src, "max_target_length": max_tgt}
        return backend, report

    # ---------------------------------------------------------------- what Seq2Seq asks
    def encode_sources(self, texts: list[str]) -> list[list[int]]:
        return self.src_tok.encode(texts)

    def training_rows(self, sources: list[str], targets: list[str]
                      ) -> tuple[list[list[int]], list[list[int]], list[list[int]]]:
        """(sources, decoder inputs [BOS] + target, labels target + [EOS]) as token lists."""
        tgt = self.tgt_tok.encode(targets)
        return self.encode_sources(sources), [[BOS, *t] for t in tgt], [[*t, EOS] for t in tgt]

    def forward(self, b: PairBatch) -> torch.Tensor:
        return self.model(b.src, b.src_mask, b.tgt_in)

    @torch.inference_mode()
    def generate(self, src: torch.Tensor, src_mask: torch.Tensor, beam_size: int,
                 length_penalty: float, max_new_tokens: int, use_cache: bool,
                 decoding: Callable[..., DecodingState] | None = None) -> list[str]:
        """Greedy (``beam_size`` 1) or beam search, detokenised. ``decoding``: a function
        (src, src_mask, beams) → the decoding state to search over instead of the model's own
        :class:`~dlforge.models.seq2seq.Decoding` (the ONNX backend's graphs)."""
        if decoding is None:
            state: DecodingState = Decoding(self.model, src, src_mask, beam_size, use_cache)
        else:
            state = decoding(src, src_mask, beam_size)
        B = src.shape[0]
        if beam_size == 1:
            ids = greedy_decode(state, B, max_new_tokens, src.device)
        else:
            ids = beam_decode(state, B, beam_size, max_new_tokens, length_penalty, src.device)
        return self.tgt_tok.decode(ids)

    def parameters(self) -> int:
        return self.model.num_params()

    def save(self, folder: Path) -> None:
        save_weights(self.model, folder)
        (folder / "model.json").write_text(to_json(self.model.config.to_dict()),
                                           encoding="utf-8")
        if self.shared:
            self.src_tok.save(folder / "tokenizer.json")
        else:
            self.src_tok.save(folder / "source_tokenizer.json")
            self.tgt_tok.save(folder / "target_tokenizer.json")

    @classmethod
    def load(cls, folder: Path, device: torch.device) -> TransformerBackend:
        mcfg = EncoderDecoderConfig(**json.loads((folder / "model.json").read_text(
            encoding="utf-8")))
        model = EncoderDecoder(mcfg)
        model.load_state_dict(load_file(folder / "model.safetensors"))
        if (folder / "tokenizer.json").is_file():
            src_tok = tgt_tok = PairTokenizer.load(folder / "tokenizer.json")
        else:
            src_tok = PairTokenizer.load(folder / "source_tokenizer.json")
            tgt_tok = PairTokenizer.load(folder / "target_tokenizer.json")
        return cls(model.to(device).eval(), src_tok, tgt_tok, src_tok is tgt_tok)


def _limit(given: int | None, lengths: list[int], key: str, side: str,
           texts: list[str]) -> int:
    """The longest ``side`` the model takes: ``given``, which every pair must fit (else a
    DataError naming the first that does not), or the data's longest plus a quarter."""
    longest = max(lengths)
    if given is None:
        return longest + max(2, longest // 4)
    if longest > given:
        i = lengths.index(longest)
        raise DataError(f"pair {i}: its {side} is {longest} tokens, longer than {key}={given} "
                        f"({texts[i][:40]!r}...); raise {key} (--{key.replace('_', '-')}) or "
                        "leave it unset to take the data's longest")
    return given


def _signature() -> inspect.Signature:
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                default=None)]
    params += [inspect.Parameter(name, kw, default=None) for name in Seq2SeqConfig.model_fields
               if name != "model"]
    params.append(inspect.Parameter("verbose", kw, default=1))
    return inspect.Signature(params)


class Seq2Seq(BaseEstimator):
    """Sequence to sequence, scikit-learn style (see the module docstring). Every keyword is a
    setting of :class:`~dlforge.config.seq2seq.Seq2SeqConfig`; None takes its default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        try:
            bound = _SIGNATURE.bind(self, *args, **kwargs)
        except TypeError as err:  # a misspelt argument: say which ones there are
            raise TypeError(f"Seq2Seq: {err}; valid arguments are: "
                            f"{', '.join(list(_SIGNATURE.parameters)[1:])}") from None
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            setattr(self, name, value)

    def _config(self, **overrides: Any) -> Seq2SeqConfig:
        given = {k: v for k, v in self.get_params().items() if v is not None and k != "verbose"}
        given.update({k: v for k, v in overrides.items() if v is not None})
        return seq2seq_config(given)

    def _say(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ training
    def fit(self, X: Any, y: Any = None, *, out: str | Path | None = None,
            overwrite: bool = False) -> Seq2Seq:
        """Train on pairs: ``X`` the sources and ``y`` the targets (lists of strings), or ``X``
        a table (a file or a DataFrame) with the ``source`` and ``target`` columns. With
        ``out`` the run directory is written there."""
        cfg = self._config()
        if out is not None:
            check_out(Path(out), overwrite)
        if isinstance(X, str | Path) and y is None:
            sources, targets, dropped = read_pairs(X, cfg.source, cfg.target)
            cfg = cfg.model_copy(update={"data": str(X)})
            where = str(X)
        elif isinstance(X, pd.DataFrame) and y is None:
            for col in (cfg.source, cfg.target):
                if col not in X.columns:
                    raise DataError(f"fit: column {col!r} not found; columns are: "
                                    f"{', '.join(map(str, X.columns))}. Set source=/target=")
            sources, targets, dropped = check_pairs(X[cfg.source].tolist(),
                                                    X[cfg.target].tolist(), "fit")
            where = "fit"
        else:
            if y is None:
                raise DataError("fit: give the targets too: fit(sources, targets), or a table "
                                "with the source and target columns")
            sources, targets, dropped = check_pairs(X, y, "fit")
            where = "fit"
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        train_idx, val_idx, test_idx = split_pairs(len(sources), cfg.validation_split,
                                                   cfg.test_split, cfg.seed)
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        if cfg.model == "transformer":
            backend, report = TransformerBackend.build(cfg, sources, targets, train_idx,
                                                       self._say)
        else:
            from dlforge.estimators.seq2seq_pretrained import PretrainedBackend

            backend, report = PretrainedBackend.build(cfg, sources, targets, self._say)
        backend.model.to(device)
        # The resolved lengths, so that config.yaml says what the model takes.
        cfg = cfg.model_copy(update={"max_length": report["max_length"],
                                     "max_target_length": report["max_target_length"]})

        def rows(idx: Any) -> tuple[list, list, list]:
            return backend.training_rows([sources[i] for i in idx], [targets[i] for i in idx])

        epochs = cfg.epochs or auto_epochs(len(train_idx), cfg.batch_size)
        self._say(f"data: {len(sources):,} pairs from {where} (train {len(train_idx):,}, "
                  f"validation {len(val_idx):,}, test {len(test_idx):,}); {epochs} epochs")
        res = train_seq2seq(
            backend.forward, backend.model, rows(train_idx), rows(val_idx), epochs=epochs,
            batch_size=cfg.batch_size, lr=cfg.learning_rate(), warmup=cfg.warmup,
            weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip,
            label_smoothing=cfg.label_smoothing, patience=cfg.patience, pad=backend.pad,
            seed=cfg.seed, device=device, precision=precision, verbose=self.verbose)
        backend.model.load_state_dict(res.best_state)
        backend.model.eval()
        self.config_, self.backend_, self.device_, self.precision_ = cfg, backend, device, precision
        self.history_ = res.history
        self.data_report_ = {"source": where, "pairs": len(sources), "dropped": dropped,
                             "splits": {"train": len(train_idx), "validation": len(val_idx),
                                        "test": len(test_idx)}, **report}
        self.metrics_ = {
            "task": SEQ2SEQ_TASK, "model": backend.kind, "best_epoch": res.best_epoch,
            "epochs_run": res.epochs_run, "val_loss": res.best_val_loss if len(val_idx) else None,
            "val_perplexity": math.exp(min(res.best_val_loss, 50)) if len(val_idx) else None,
            "parameters": backend.parameters(), "tokens_per_second": res.tokens_per_second,
            "seconds": res.seconds, "device": str(device), "precision": precision,
            "decoding": {"beam_size": cfg.beam_size, "length_penalty": cfg.length_penalty}}
        for name, idx in (("validation", val_idx), ("test", test_idx)):
            if len(idx):
                self.metrics_[name] = self._scores([sources[i] for i in idx],
                                                   [targets[i] for i in idx])
                m, c = self.metrics_[name].get("model", {}), self.metrics_[name].get(
                    "copy_baseline", {})
                self._say(f"{name}: " + ", ".join(
                    f"{k} {m[k]:.2f} (copy {c[k]:.2f})" for k in ("bleu", "chrf", "exact_match")
                    if k in m))
        if out is not None:
            self.save(out)
        return self

    def _scores(self, sources: list[str], targets: list[str]) -> dict[str, Any]:
        """The model's scores beside the copy baseline's; exact match alone (and a note) when
        sacrebleu is not installed, so that training never needs it."""
        hyps = self.predict(sources)
        try:
            return {"model": text_metrics(hyps, targets),
                    "copy_baseline": text_metrics(sources, targets)}
        except MissingExtraError as err:
            def exact(h: list[str]) -> float:
                return round(100 * sum(a.strip() == b.strip() for a, b in
                                       zip(h, targets, strict=True)) / len(targets), 4)

            return {"model": {"exact_match": exact(hyps), "rows": len(targets)},
                    "copy_baseline": {"exact_match": exact(sources), "rows": len(targets)},
                    "note": str(err)}

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> None:
        if not hasattr(self, "backend_"):
            raise NotFittedError("Seq2Seq: not fitted yet; call fit(sources, targets) or "
                                 "dlforge.load(run_dir) first")

    def predict(self, X: Any, *, beam_size: int | None = None,
                length_penalty: float | None = None, max_new_tokens: int | None = None,
                use_cache: bool = True, decoding: Callable[..., DecodingState] | None = None
                ) -> list[str]:
        """The generated text of each source (a list of strings). ``beam_size`` 1 is greedy;
        the defaults are the run's (``beam_size``, ``length_penalty``, ``max_new_tokens``).
        A source longer than the model takes is a DataError with both numbers. ``decoding``
        (a from-scratch Transformer only): a function (src, src_mask, beams) → the decoding
        state to search over instead of the model (``dlforge serve --backend onnx`` passes
        :class:`~dlforge.serve.export_seq2seq.OnnxDecoding` over the exported graphs)."""
        self._check_fitted()
        cfg, b = self.config_, self.backend_
        beam = cfg.beam_size if beam_size is None else beam_size
        if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
            raise ConfigError(f"beam_size: expected a whole number of at least 1 (1: greedy), "
                              f"got {beam!r}")
        penalty = cfg.length_penalty if length_penalty is None else length_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, int | float) or \
                not math.isfinite(penalty):
            raise ConfigError(f"length_penalty: expected a number, got {penalty!r}")
        cap = b.max_new_tokens
        new = max_new_tokens or cfg.max_new_tokens or cap
        if isinstance(new, bool) or not isinstance(new, int) or not 1 <= new <= cap:
            raise ConfigError(f"max_new_tokens: expected a whole number from 1 to {cap} (the "
                              f"longest target this model takes), got {new!r}")
        texts = _source_list(X)
        ids = b.encode_sources(texts)
        for i, row in enumerate(ids):
            if not row:
                raise DataError(f"sources[{i}]: empty; give text to transform")
            if len(row) > b.max_source:
                raise DataError(f"sources[{i}]: {len(row)} tokens, longer than the "
                                f"{b.max_source} this model takes (max_length); shorten it or "
                                "split it, or train with a larger --max-length")
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[str] = [""] * len(ids)
        b.model.eval()
        for start in range(0, len(order), PREDICT_BATCH):
            chunk = order[start:start + PREDICT_BATCH]
            batch = collate([ids[i] for i in chunk], [[b.pad]] * len(chunk),  # sources only
                            [[b.pad]] * len(chunk), b.pad).to(self.device_)
            texts_out = b.generate(batch.src, batch.src_mask, beam, float(penalty), new,
                                   use_cache, decoding)
            for i, t in zip(chunk, texts_out, strict=True):
                out[i] = t
        return out

    def evaluate(self, X: Any, y: Any = None) -> dict[str, Any]:
        """BLEU, chrF (sacreBLEU, with their signatures) and exact match of the predictions
        of ``X`` against ``y`` (or of a table's source and target columns), and of the copy
        baseline (the sources themselves) beside them."""
        self._check_fitted()
        cfg = self.config_
        if isinstance(X, str | Path) and y is None:
            sources, targets, _ = read_pairs(X, cfg.source, cfg.target)
        elif isinstance(X, pd.DataFrame) and y is None:
            sources, targets, _ = check_pairs(X[cfg.source].tolist(), X[cfg.target].tolist(),
                                              "evaluate")
        else:
            sources, targets, _ = check_pairs(X, y, "evaluate")
        hyps = self.predict(sources)
        return {"model": text_metrics(hyps, targets),
                "copy_baseline": text_metrics(sources, targets), "rows": len(targets)}

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the run directory (see the module docstring), atomically."""
        self._check_fitted()
        path = Path(path)
        tmp = new_run_dir(path)
        try:
            dump_seq2seq_config(self.config_, tmp / "config.yaml")
            self.backend_.save(tmp)
            (tmp / "metrics.json").write_text(to_json(self.metrics_), encoding="utf-8")
            (tmp / "data.json").write_text(to_json(self.data_report_), encoding="utf-8")
            (tmp / "history.csv").write_text(history_csv(self.history_), encoding="utf-8")
            seal_run(tmp, path, SEQ2SEQ_TASK, type(self).__name__, self.backend_.kind)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | None = None) -> Seq2Seq:
        """The run at ``path`` (checked against its manifest), ready to predict."""
        manifest = check_run(Path(path))
        if manifest.get("task") != SEQ2SEQ_TASK:
            raise RunDirError(f"{path}: a {manifest.get('task')} run, not a sequence-to-"
                              "sequence run")
        return cls._restore(Path(path), device)

    @classmethod
    def _restore(cls, path: Path, device: str | None = None) -> Seq2Seq:
        cfg = load_seq2seq_config(path / "config.yaml")
        s2s = cls(**{k: v for k, v in cfg.model_dump().items()}, verbose=0)
        dev = resolve_device(device or cfg.device)
        if (path / "pretrained").is_dir():
            from dlforge.estimators.seq2seq_pretrained import PretrainedBackend

            s2s.backend_ = PretrainedBackend.load(path / "pretrained", cfg, dev)
        else:
            s2s.backend_ = TransformerBackend.load(path, dev)
        s2s.config_, s2s.device_ = cfg, dev
        s2s.precision_ = resolve_precision(cfg.precision, dev)
        s2s.metrics_ = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        s2s.data_report_ = json.loads((path / "data.json").read_text(encoding="utf-8"))
        s2s.history_ = read_history(path / "history.csv")
        return s2s


_SIGNATURE = _signature()
Seq2Seq.__init__.__signature__ = _SIGNATURE  # type: ignore[attr-defined]


def _source_list(X: Any) -> list[str]:
    if isinstance(X, str):
        raise DataError("sources: expected a list of strings, got one string; wrap it in a "
                        "list: predict([text])")
    try:
        texts = list(X)
    except TypeError:
        raise DataError(f"sources: expected a list of strings, got {type(X).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise DataError(f"sources[{i}]: expected a string, got {type(t).__name__} ({t!r})")
    return texts
