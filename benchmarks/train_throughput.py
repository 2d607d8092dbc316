"""Training throughput of dlforge's Transformer classifier on the tweets task, against baselines.

Every contender trains the same shape (1 layer, d_model 512, 4 heads, FFN 2048) on the same tokens,
in this one process, for the same epochs: dlforge's Trainer (default precision, and fp32), a
hand-written PyTorch loop over the identical model and batches (fp32, bf16), and Hugging Face
BertForSequenceClassification + transformers.Trainer (padded to 128; dynamic padding with length
grouping in fp32 and bf16). samples/s counts training-loop time only; with 2+ epochs the first
epoch (warm-up, compilation) is left out. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlforge.config import (
    CleanConfig,
    RunConfig,
    TextInput,
    TrainConfig,
    TransformerConfig,
    validate_config,
)
from dlforge.data.clean import clean_frame
from dlforge.data.datasets import trump_tweets
from dlforge.data.features import LabelEncoder, TextTokenizer
from dlforge.data.inputs import TextFeature
from dlforge.data.loader import FeatureDataset, make_loader
from dlforge.data.split import stratified_split
from dlforge.models.registry import build_model
from dlforge.train.device import autocast, resolve_device
from dlforge.train.metrics import classification_metrics, probabilities
from dlforge.train.trainer import (
    Trainer,
    make_optimizer,
    make_scheduler,
    predict_logits,
    to_device,
)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SEED, VOCAB, MAX_LEN, BATCH, LR = 0, 10_000, 128, 64, 5e-4
D_MODEL, HEADS, LAYERS, FFN, DROPOUT = 512, 4, 1, 2048, 0.1
RESULTS = Path(__file__).resolve().parent / "results" / "train_throughput.json"


# ------------------------------------------------------------------------------------ data
@dataclass
class Data:  # token ids per tweet, 0/1 targets
    tok: TextTokenizer
    train_ids: list[np.ndarray]
    train_y: np.ndarray
    val_ids: list[np.ndarray]
    val_y: np.ndarray
    classes: list[Any]


def prepare(smoke: bool) -> Data:
    """dlforge's own pipeline: clean, encode labels, stratified 90/10 split, BPE on train."""
    df, _ = clean_frame(trump_tweets(), "text", "source", CleanConfig())
    labels = LabelEncoder.fit(df["source"].tolist(), "binary")
    y = labels.encode(df["source"].tolist())
    train_idx, val_idx = stratified_split(y, 0.1, SEED)
    if smoke:  # 600 training tweets, 200 validation tweets
        rng = np.random.default_rng(SEED)
        train_idx = np.sort(rng.choice(train_idx, 600, replace=False))
        val_idx = np.sort(rng.choice(val_idx, 200, replace=False))
    texts = df["text"].tolist()
    tok = TextTokenizer.train([texts[i] for i in train_idx], "bpe", VOCAB, MAX_LEN, True, 2)
    ids = tok.encode(texts)
    return Data(tok, [ids[i] for i in train_idx], y[train_idx],
                [ids[i] for i in val_idx], y[val_idx], labels.classes)


# ---------------------------------------------------------------------------------- memory
def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _rss() -> int:
    try:
        return _status_bytes("VmRSS")
    except (OSError, KeyError):  # not Linux: psutil, if installed
        return __import__("psutil").Process().memory_info().rss


class PeakRSS:
    """Peak resident-memory growth over a block, in MB. Resets the kernel's high-water mark
    (VmHWM, via /proc/self/clear_refs) where allowed, else samples RSS every 50 ms."""

    def __enter__(self) -> PeakRSS:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)  # hand freed heap back, so growth shows again
        self.base, self.peak, self._stop = _rss(), 0, threading.Event()
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM" if _status_bytes("VmHWM") <= self.base * 1.05 else "sampled"
        except (OSError, KeyError):
            self.method = "sampled"
        if self.method == "sampled":
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        if self.method == "VmHWM":
            self.peak = _status_bytes("VmHWM")
        else:
            self._stop.set()
            self._thread.join()
        self.mb = max(0, self.peak - self.base) / 2**20


# ------------------------------------------------------------------------------ contenders
@dataclass
class Result:
    precision: str
    epoch_seconds: list[float]
    n_train: int
    accuracy: float
    extra: dict[str, Any]
    peak_mb: float = 0.0

    @property
    def samples_per_s(self) -> float:
        steady = self.epoch_seconds[1:] or self.epoch_seconds  # epoch 1 warms up
        return self.n_train * len(steady) / sum(steady)


def model_config() -> RunConfig:
    return validate_config({"inputs": [{"name": "text", "max_length": MAX_LEN}],
                            "output": {"name": "label"},
                            "model": TransformerConfig(d_model=D_MODEL, heads=HEADS,
                                                       layers=LAYERS, ffn_dim=FFN,
                                                       dropout=DROPOUT).model_dump()})


def build(data: Data) -> torch.nn.Module:
    return build_model(model_config(), {"text": {"vocab_size": data.tok.vocab_size,
                                                 "max_length": MAX_LEN}}, 1)


def text_loader(ids: list[np.ndarray], y: np.ndarray | None, batch: int,
                shuffle: bool) -> torch.utils.data.DataLoader:
    """dlforge's batches of one text column: length-bucketed, padded per batch."""
    feats = {"text": TextFeature(TextInput(name="text", max_length=MAX_LEN))}
    return make_loader(FeatureDataset(feats, {"text": ids}, y), batch, shuffle, SEED)


def run_dlforge(data: Data, epochs: int, precision: str, compile: bool = False) -> Result:
    torch.manual_seed(SEED)
    net = build(data)
    # Every setting given (the data-size recipe would choose the ones left unset).
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, lr=LR, weight_decay=0.01, warmup=0.1,
                      precision=precision, patience=0, seed=SEED, compile=compile)

    def metric_fn(targets: np.ndarray, logits: np.ndarray) -> dict[str, Any]:
        return classification_metrics("binary", targets, probabilities("binary", logits),
                                      data.classes, full=False)

    trainer = Trainer(net, "binary", cfg, metric_fn, "accuracy", verbose=0)
    train = text_loader(data.train_ids, data.train_y, BATCH, True)
    val = text_loader(data.val_ids, None, max(BATCH, 256), False)
    history = trainer.fit(train, val, data.val_y)
    # Last epoch's weights, like the other contenders (fit() itself restores the best epoch).
    return Result(trainer.precision, [r["seconds"] for r in history], len(data.train_ids),
                  history[-1]["val_accuracy"], {"history_samples_per_s":
                                                [r["samples_per_s"] for r in history]})


def run_handwritten(data: Data, epochs: int, precision: str) -> Result:
    """Plain PyTorch: the same model, batches, AdamW + schedule and grad clip; nothing else."""
    device = resolve_device("auto")
    torch.manual_seed(SEED)
    model = build(data).to(device)
    train = text_loader(data.train_ids, data.train_y, BATCH, True)
    cfg = TrainConfig(epochs=epochs, batch_size=BATCH, lr=LR)
    opt = make_optimizer(model, cfg)  # torch.optim.AdamW, decay on matrices only
    sched = make_scheduler(opt, cfg, epochs * len(train))  # LambdaLR: warm-up, cosine
    torch.manual_seed(SEED)  # the dropout stream dlforge's Trainer.fit starts from
    seconds = []
    for epoch in range(1, epochs + 1):
        train.batch_sampler.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        for batch in train:
            with autocast(device, precision):
                logits = model(to_device(batch["inputs"], device))
            loss = F.binary_cross_entropy_with_logits(logits.float()[:, 0],
                                                      batch["labels"].to(device).float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
        seconds.append(time.perf_counter() - t0)
    val = text_loader(data.val_ids, None, 256, False)
    logits = predict_logits(model, val, device, precision)
    acc = float(((logits[:, 0] > 0).astype(np.int64) == data.val_y).mean())
    return Result(precision, seconds, len(data.train_ids), acc, {})


class DictDataset(torch.utils.data.Dataset):
    """{"input_ids", "attention_mask", "labels"} per row, lists prepared once (as HF datasets
    would hold them); ``pad_to`` pads every row to that length."""

    def __init__(self, ids: list[np.ndarray], y: np.ndarray, pad_to: int | None = None):
        self.rows = []
        for x, label in zip(ids, y, strict=True):
            pad = (pad_to - len(x)) if pad_to else 0
            self.rows.append({"input_ids": x.tolist() + [0] * pad,
                              "attention_mask": [1] * len(x) + [0] * pad, "labels": int(label)})

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


@torch.no_grad()
def hf_accuracy(model: nn.Module, ids: list[np.ndarray], y: np.ndarray) -> float:
    """Validation accuracy of a BertForSequenceClassification, in the data's own order."""
    model.eval()
    device = next(model.parameters()).device
    preds = []
    for i in range(0, len(ids), 256):
        chunk = ids[i:i + 256]
        width = max(len(x) for x in chunk)
        input_ids = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, x in enumerate(chunk):
            input_ids[r, :len(x)] = torch.from_numpy(x)
        logits = model(input_ids=input_ids.to(device),
                       attention_mask=(input_ids != 0).long().to(device)).logits
        preds.append(logits.argmax(-1).cpu().numpy())
    return float((np.concatenate(preds) == y).mean())


def run_hf(data: Data, epochs: int, variant: str) -> Result:
    import transformers
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        PreTrainedTokenizerFast,
        TrainerCallback,
        TrainingArguments,
        default_data_collator,
    )

    class EpochTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.seconds.append(time.perf_counter() - self.t0)

    transformers.logging.set_verbosity_error()
    transformers.set_seed(SEED)
    padded, bf16 = variant.startswith("hf-padded"), variant.endswith("bf16")
    model = BertForSequenceClassification(BertConfig(
        vocab_size=data.tok.vocab_size, hidden_size=D_MODEL, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, intermediate_size=FFN, max_position_embeddings=MAX_LEN,
        hidden_dropout_prob=DROPOUT, attention_probs_dropout_prob=0.0, num_labels=2,
        pad_token_id=0))
    params = inspect.signature(TrainingArguments).parameters
    kw: dict[str, Any] = {}
    if not padded:  # length grouping: transformers 5.x name first, 4.x name as fall-back
        kw.update({"train_sampling_strategy": "group_by_length"}
                  if "train_sampling_strategy" in params else {"group_by_length": True})
    # Same optimisation as dlforge: decay 0.01, 10% warm-up, cosine (so accuracy compares).
    kw.update({"warmup_ratio": 0.1} if "warmup_ratio" in params else {"warmup_steps": 0.1})
    kw["eval_strategy" if "eval_strategy" in params else "evaluation_strategy"] = "no"
    if padded:
        collator = default_data_collator
    else:
        hf_tok = PreTrainedTokenizerFast(tokenizer_object=data.tok.tokenizer, pad_token="[PAD]")
        collator = DataCollatorWithPadding(hf_tok)
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, report_to="none", save_strategy="no", logging_strategy="no",
            per_device_train_batch_size=BATCH, per_device_eval_batch_size=256,
            num_train_epochs=epochs, learning_rate=LR, weight_decay=0.01,
            lr_scheduler_type="cosine", max_grad_norm=1.0, dataloader_num_workers=0, seed=SEED,
            disable_tqdm=True, bf16=bf16, use_cpu=not torch.cuda.is_available(), **kw)
        pad_to = MAX_LEN if padded else None
        trainer = transformers.Trainer(
            model=model, args=args, data_collator=collator, callbacks=[timer],
            train_dataset=DictDataset(data.train_ids, data.train_y, pad_to))
        trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # no metric dicts
        metrics = trainer.train().metrics
    # Not trainer.predict: with group_by_length, transformers 5.x also length-groups the
    # *evaluation* sampler, so predictions come back shuffled against the labels.
    acc = hf_accuracy(model, data.val_ids, data.val_y)
    return Result("bf16" if bf16 else "fp32", timer.seconds, len(data.train_ids), acc,
                  {"hf_train_samples_per_second": metrics["train_samples_per_second"],
                   "training_args": sorted(kw)})


CONTENDERS: dict[str, tuple[str, Callable[[Data, int], Result]]] = {  # key: (row, run)
    "dlforge": ("dlforge (default precision)", lambda d, e: run_dlforge(d, e, "auto")),
    "dlforge-fp32": ("dlforge fp32", lambda d, e: run_dlforge(d, e, "fp32")),
    "hand-fp32": ("hand-written loop, fp32", lambda d, e: run_handwritten(d, e, "fp32")),
    "hand-bf16": ("hand-written loop, bf16", lambda d, e: run_handwritten(d, e, "bf16")),
    "hf-padded": ("HF padded to max_length", lambda d, e: run_hf(d, e, "hf-padded")),
    "hf-padded-bf16": ("HF padded to max_length, bf16",
                       lambda d, e: run_hf(d, e, "hf-padded-bf16")),
    "hf-fp32": ("HF fastest fp32", lambda d, e: run_hf(d, e, "hf-fp32")),
    "hf-bf16": ("HF fastest bf16", lambda d, e: run_hf(d, e, "hf-bf16")),
    "dlforge-compile": ("dlforge + torch.compile", lambda d, e: run_dlforge(d, e, "bf16", True)),
}


# --------------------------------------------------------------------------------- report
def summarise(runs: dict[str, list[Result]]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, rs in runs.items():
        out[key] = {"label": CONTENDERS[key][0], "precision": rs[0].precision,
                    "samples_per_s": statistics.median(r.samples_per_s for r in rs),
                    "accuracy": statistics.median(r.accuracy for r in rs),
                    "peak_mb": statistics.median(r.peak_mb for r in rs)}
    for row in out.values():
        for ref in ("hf-fp32", "hf-bf16"):
            row[f"x_{ref}"] = (row["samples_per_s"] / out[ref]["samples_per_s"]
                               if ref in out else None)
    return out


def checks(s: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    def ratio(a: str, b: str) -> float | None:
        return s[a]["samples_per_s"] / s[b]["samples_per_s"] if a in s and b in s else None

    default_prec = s["dlforge"]["precision"] if "dlforge" in s else "bf16"
    acc_diff = (abs(s["dlforge"]["accuracy"] - s["dlforge-fp32"]["accuracy"])
                if "dlforge" in s and "dlforge-fp32" in s and default_prec == "bf16" else None)
    rows = [
        (f"ours(default)/hand-written({default_prec})", ratio("dlforge", f"hand-{default_prec}"),
         ">=", 0.95),
        ("ours(fp32)/hand-written(fp32)", ratio("dlforge-fp32", "hand-fp32"), ">=", 0.95),
        ("ours(default)/HF-fastest-fp32", ratio("dlforge", "hf-fp32"), ">=", 2.0),
        ("ours(default)/HF-fastest-bf16", ratio("dlforge", "hf-bf16"), ">=", 1.0),
        ("|acc bf16 - acc fp32| (dlforge)", acc_diff, "<=", 0.005),
    ]
    out = []
    for name, value, op, target in rows:
        ok = None if value is None else (value >= target if op == ">=" else value <= target)
        out.append({"check": name, "value": value, "target": f"{op} {target}",
                    "status": "SKIP" if ok is None else ("PASS" if ok else "FAIL")})
    return out


def print_report(s: dict[str, dict[str, Any]], cks: list[dict[str, Any]]) -> None:
    def fmt(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)

    head = (f"{'contender':<28} {'precision':>9} {'samples/s':>10} {'x HF fp32':>10} "
            f"{'x HF bf16':>10} {'val acc':>8} {'peak MB':>8}")
    print("\n" + head + "\n" + "-" * len(head))
    for row in s.values():
        print(f"{row['label']:<28} {row['precision']:>9} {row['samples_per_s']:>10.1f} "
              f"{fmt(row['x_hf-fp32'], '.2f'):>10} {fmt(row['x_hf-bf16'], '.2f'):>10} "
              f"{row['accuracy']:>8.4f} {row['peak_mb']:>8.0f}")
    print("\nTargets")
    for c in cks:
        print(f"  {c['check']:<40} {fmt(c['value'], '.3f'):>7}  {c['target']:<8} {c['status']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--smoke", action="store_true", help="600 training tweets, 1 epoch")
    ap.add_argument("--only", help="comma-separated subset of: " + ", ".join(CONTENDERS))
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0))
                    if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    ap.add_argument("--compile", action="store_true", help="add dlforge-compile")
    args = ap.parse_args()
    keys = [k for k in CONTENDERS if k != "dlforge-compile" or args.compile]
    if args.only:
        wanted = [k.strip() for k in args.only.split(",") if k.strip()]
        unknown = sorted(set(wanted) - set(CONTENDERS))
        if unknown:
            ap.error(f"unknown contender(s) {', '.join(unknown)}; choose from "
                     + ", ".join(CONTENDERS))
        keys = [k for k in CONTENDERS if k in wanted]
    epochs = 1 if args.smoke else args.epochs
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)

    data = prepare(args.smoke)
    print(f"tweets: {len(data.train_ids)} train, {len(data.val_ids)} validation; vocabulary "
          f"{data.tok.vocab_size}; {epochs} epoch(s) x {args.repeats} repeat(s); "
          f"{torch.get_num_threads()} threads; torch {torch.__version__}", flush=True)
    runs: dict[str, list[Result]] = {k: [] for k in keys}
    for rep in range(args.repeats):  # A/B/A/B: every contender once per repeat
        for key in keys:
            with PeakRSS() as mem:
                res = CONTENDERS[key][1](data, epochs)
            res.peak_mb = mem.mb
            res.extra["memory_method"] = mem.method
            runs[key].append(res)
            print(f"[{rep + 1}/{args.repeats}] {CONTENDERS[key][0]:<28} {res.samples_per_s:8.1f} "
                  f"samples/s  acc {res.accuracy:.4f}  peak +{mem.mb:.0f} MB", flush=True)
            gc.collect()

    summary = summarise(runs)
    cks = checks(summary)
    print_report(summary, cks)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "settings": {**vars(args), "epochs": epochs, "n_train": len(data.train_ids),
                     "n_val": len(data.val_ids), "vocab_size": data.tok.vocab_size,
                     "threads": torch.get_num_threads(), "torch": torch.__version__,
                     "transformers": getattr(sys.modules.get("transformers"), "__version__", None),
                     "machine": platform.machine(), "cpu_count": os.cpu_count()},
        "summary": summary, "checks": cks,
        "runs": {k: [{**asdict(r), "samples_per_s": r.samples_per_s} for r in rs]
                 for k, rs in runs.items()},
    }, indent=2))
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
