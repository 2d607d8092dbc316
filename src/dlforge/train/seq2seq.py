"""Sequence-to-sequence training and scoring.

Training is teacher forcing: the decoder reads the target shifted right behind its start
token and is scored on every next token, with label smoothing (cross-entropy against
(1 - ε) on the true token and ε spread over the vocabulary). AdamW (β₂ 0.98, as the paper),
linear warm-up then cosine decay to a tenth, gradients clipped; pairs shuffled each epoch and
batched by length (sorted within groups of 50 batches, so little padding, still random). After
every epoch the validation loss (plain cross-entropy, no smoothing) is measured; the best
epoch's weights are kept and training stops after ``patience`` epochs without a better one.
The model is any module behind ``forward(batch) -> logits``: the Transformer of
:mod:`dlforge.models.seq2seq`, or a pretrained Hugging Face encoder-decoder.

Scoring (:func:`text_metrics`): sacreBLEU's BLEU and chrF on the detokenised texts, with their
signatures (which say exactly how they were computed), and exact match (after stripping
surrounding white space: the measure for QA-style targets). :func:`copy_baseline` is the same
for the sources themselves, copied: a model has learned something when it beats that.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dlforge._extras import require
from dlforge.train.device import autocast
from dlforge.train.trainer import adamw

__all__ = ["PairBatch", "Seq2SeqTrainResult", "auto_epochs", "batches", "copy_baseline",
           "text_metrics", "train_seq2seq", "validation_loss"]

IGNORE = -100  # label positions that are padding
SEQ2SEQ_FEATURE = "BLEU and chrF (sacrebleu)"
TARGET_STEPS = 2000  # epochs=None: about this many optimizer steps


@dataclass
class PairBatch:
    src: torch.Tensor  # (B, S) source ids
    src_mask: torch.Tensor  # (B, S) True on real tokens
    tgt_in: torch.Tensor  # (B, T) decoder inputs: start token + target
    labels: torch.Tensor  # (B, T) target + end token; IGNORE on padding

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(t.to(device, non_blocking=True) for t in
                           (self.src, self.src_mask, self.tgt_in, self.labels)))

    @property
    def tokens(self) -> int:
        return int(self.src_mask.sum()) + int((self.labels != IGNORE).sum())


def _pad(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, :len(r)] = torch.as_tensor(r, dtype=torch.long)
    return out


def collate(src: Sequence[Sequence[int]], tgt_in: Sequence[Sequence[int]],
            labels: Sequence[Sequence[int]], pad: int) -> PairBatch:
    s = _pad(src, pad)
    mask = _pad([[1] * len(r) for r in src], 0).bool()
    return PairBatch(s, mask, _pad(tgt_in, pad), _pad(labels, IGNORE))


def batches(rows: tuple[list[list[int]], list[list[int]], list[list[int]]], batch_size: int,
            pad: int, rng: np.random.Generator | None = None) -> list[PairBatch]:
    """``rows`` = (sources, decoder inputs, labels) as token lists → padded batches. With
    ``rng``: shuffled, then sorted by length within groups of 50 batches, batches shuffled."""
    src, tgt_in, labels = rows
    n = len(src)
    order = np.arange(n) if rng is None else rng.permutation(n)
    if rng is not None:
        group = 50 * batch_size
        length = np.array([len(src[i]) + len(labels[i]) for i in range(n)])
        order = np.concatenate([chunk[np.argsort(length[chunk], kind="stable")]
                                for chunk in np.array_split(order, max(1, -(-n // group)))])
    out = [collate([src[i] for i in idx], [tgt_in[i] for i in idx], [labels[i] for i in idx],
                   pad) for idx in (order[i:i + batch_size] for i in range(0, n, batch_size))]
    if rng is not None:
        out = [out[i] for i in rng.permutation(len(out))]
    return out


def auto_epochs(n_train: int, batch_size: int) -> int:
    """About TARGET_STEPS optimizer steps, between 5 and 100 epochs."""
    per_epoch = max(1, -(-n_train // batch_size))
    return int(min(100, max(5, round(TARGET_STEPS / per_epoch))))


@dataclass
class Seq2SeqTrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    epochs_run: int = 0
    seconds: float = 0.0
    tokens_per_second: float = 0.0


def _loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           ignore_index=IGNORE, label_smoothing=smoothing)


@torch.no_grad()
def validation_loss(forward: Callable[[PairBatch], torch.Tensor], model: torch.nn.Module,
                    val: list[PairBatch], device: torch.device, precision: str) -> float:
    """Mean cross-entropy per target token (no smoothing) over ``val``."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for b in val:
        b = b.to(device)
        with autocast(device, precision):
            logits = forward(b)
        n = int((b.labels != IGNORE).sum())
        total += float(_loss(logits, b.labels, 0.0)) * n
        count += n
    model.train(was)
    return total / max(count, 1)


def train_seq2seq(forward: Callable[[PairBatch], torch.Tensor], model: torch.nn.Module,
                  train_rows: tuple[list, list, list], val_rows: tuple[list, list, list],
                  *, epochs: int, batch_size: int, lr: float, warmup: float,
                  weight_decay: float, grad_clip: float, label_smoothing: float,
                  patience: int, pad: int, seed: int, device: torch.device, precision: str,
                  verbose: int = 1) -> Seq2SeqTrainResult:
    """Train ``model`` (on ``device``) for up to ``epochs``; see the module docstring."""
    rng = np.random.default_rng(seed)
    val = batches(val_rows, max(batch_size, 64), pad) if val_rows[0] else []
    per_epoch = -(-len(train_rows[0]) // batch_size)
    total = max(1, epochs * per_epoch)
    warm = int(warmup * total)
    opt = adamw([(list(model.parameters()), lr)], weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < warm:
            return lr * (step + 1) / (warm + 1)
        progress = (step - warm) / max(1, total - warm)
        return lr * (0.1 + 0.45 * (1.0 + math.cos(math.pi * progress)))

    res = Seq2SeqTrainResult()
    step, since_best, tokens, busy = 0, 0, 0, 0.0
    t_start = time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        loss_sum, n_batches = 0.0, 0
        for b in batches(train_rows, batch_size, pad, rng):
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            b = b.to(device)
            with autocast(device, precision):
                logits = forward(b)
            loss = _loss(logits, b.labels, label_smoothing)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach())
            n_batches += 1
            tokens += b.tokens
            step += 1
        busy += time.perf_counter() - t0
        train_loss = loss_sum / max(n_batches, 1)
        val_loss = (validation_loss(forward, model, val, device, precision) if val
                    else train_loss)
        res.history.append({"epoch": epoch, "train_loss": round(train_loss, 6),
                            "val_loss": round(val_loss, 6) if val else None,
                            "lr": lr_at(step - 1), "seconds": round(time.perf_counter() - t0, 3)})
        better = val_loss < res.best_val_loss
        if better:
            res.best_val_loss, res.best_epoch, since_best = val_loss, epoch, 0
            res.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        if verbose:
            print(f"epoch {epoch}/{epochs}: train loss {train_loss:.3f}"
                  + (f", val loss {val_loss:.3f}" if val else "")
                  + f", {tokens / max(busy, 1e-9):,.0f} tokens/s" + (" *" if better else ""),
                  file=sys.stderr, flush=True)
        res.epochs_run = epoch
        if val and patience and since_best >= patience:
            if verbose:
                print(f"early stop: no better validation loss for {patience} epochs; keeping "
                      f"epoch {res.best_epoch}", file=sys.stderr, flush=True)
            break
    if not res.best_state:  # no finite validation loss at all: keep the last weights
        res.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    res.seconds = time.perf_counter() - t_start
    res.tokens_per_second = tokens / max(busy, 1e-9)
    return res


# ----------------------------------------------------------------------------- metrics
def text_metrics(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Corpus BLEU and chrF (sacreBLEU, with each signature) and exact match, in [0, 100]."""
    sacrebleu = require("sacrebleu", "seq2seq", SEQ2SEQ_FEATURE)
    hyps, refs = list(hypotheses), [list(references)]
    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b, c = bleu.corpus_score(hyps, refs), chrf.corpus_score(hyps, refs)
    exact = float(np.mean([h.strip() == r.strip() for h, r in
                           zip(hyps, references, strict=True)])) if hyps else 0.0
    return {"bleu": round(b.score, 4), "chrf": round(c.score, 4),
            "exact_match": round(100 * exact, 4), "rows": len(hyps),
            "signature": {"bleu": str(bleu.get_signature()),
                          "chrf": str(chrf.get_signature())}}


def copy_baseline(sources: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """:func:`text_metrics` of the sources copied unchanged as the predictions."""
    return text_metrics(sources, references)
