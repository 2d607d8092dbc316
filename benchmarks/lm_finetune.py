"""Fine-tuning a pretrained causal LM on the CPU: dlforge's ``finetune`` against the plain
script a user writes (PEFT ``get_peft_model`` + transformers ``Trainer``), in the same
process, on the same model, data, LoRA settings, batch size, max length, learning rate and
schedule, number of steps, seed and precision.

The model is SmolLM2-135M's shape (LLaMA, hidden 576, 9 heads, 3 key/value heads,
intermediate 1536, vocabulary 49,152, tied embeddings) with --layers decoder layers and
random weights: speed depends on the shape, not the weights. With an imported SmolLM2 folder
(``--base``, default ``models/smollm2`` or ``/tmp/lm/smol`` where present) its config and
tokenizer (with its chat template) are used; otherwise tiny_causal_lm's tokenizer with the
same 49,152-row output layer. The vocabulary is where computing logits only at supervised
positions pays.

The data are ``dlforge.data.datasets.dataset_questions()`` (~2,300 real chats about R data
sets, loss on the assistant turn), shuffled by seed: --val of them held out, the rest trained
on. Both sides train on identical tokens: the baseline takes its ids and labels from
``dlforge.lm.sft.encode``, pads them with ``DataCollatorForSeq2Seq`` (labels padded with -100)
and lets the model's forward compute the loss from ``labels``.

Rows: ``dlforge-lora`` (LoRA r 16, alpha 32 on q_proj and v_proj; length-bucketed padded
batches), ``-packed`` (``packing=True``: rows of up to --max-length tokens, so a step sees ~3x
the tokens), ``-gc`` (``gradient_checkpointing=True``), ``dlforge-full`` (every weight, lr
--full-lr); ``trainer-lora`` / ``trainer-full`` the plain script (random batches, as
``Trainer`` samples by default) and ``trainer-lora-grouped`` the same with
``train_sampling_strategy="group_by_length"`` (the Trainer's own length grouping). Both sides:
AdamW (fused), warm-up over 5% of the steps then cosine to a tenth of the rate, grad clip 1,
no weight decay, LoRA dropout 0.05. Ratios are taken against the Trainer row of the same
kind (LoRA or full) with default sampling.

Measured per run:
- tokens/s: non-padding input tokens of the training steps, over the training loop's wall
  time (dlforge: its ``seconds``, evaluation excluded; Trainer: on_train_begin ->
  on_train_end). dlforge's own metrics.json counts padded tokens; that figure is shown apart.
- peak RSS growth over the run (model load and training; for dlforge also its own validation
  before and after, and saving the run), in MB.
- validation loss after training: mean cross-entropy per supervised token of the held-out
  chats, computed after the memory is measured by one function here for both (full logits
  from the model's forward; dlforge's adapter merged into its base).

    .venv/bin/python benchmarks/lm_finetune.py                       # 2 repeats x 10 steps
    .venv/bin/python benchmarks/lm_finetune.py --steps 20 --repeats 3 --layers 30
    .venv/bin/python benchmarks/lm_finetune.py --only dlforge-lora,trainer-lora --steps 4
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dlforge.config.lm import FinetuneConfig
from dlforge.data.datasets import dataset_questions
from dlforge.lm.finetune import finetune, load_finetuned
from dlforge.lm.hf import load_model, load_tokenizer
from dlforge.lm.sft import IGNORE, Encoded, batches, encode, read_examples
from dlforge.train.device import resolve_precision

SMOL = {"hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "intermediate_size": 1536, "vocab_size": 49152,
        "tie_word_embeddings": True, "max_position_embeddings": 8192, "head_dim": 64,
        "rope_theta": 100000.0, "rms_norm_eps": 1e-5}
TARGETS = ["q_proj", "v_proj"]
# key: (side, lora, packing, gradient checkpointing, baseline the ratio is taken against)
ROWS = {
    "dlforge-lora": ("dlforge", True, False, False, "trainer-lora"),
    "trainer-lora": ("trainer", True, False, False, None),
    "dlforge-lora-packed": ("dlforge", True, True, False, "trainer-lora"),
    "dlforge-lora-gc": ("dlforge", True, False, True, "trainer-lora"),
    "trainer-lora-grouped": ("trainer", True, False, False, None),
    "dlforge-full": ("dlforge", False, False, False, "trainer-full"),
    "trainer-full": ("trainer", False, False, False, None),
}
DEFAULT = ("dlforge-lora,trainer-lora,trainer-lora-grouped,dlforge-lora-packed,dlforge-lora-gc,"
           "dlforge-full,trainer-full")


# ------------------------------------------------------------------------------- the model
def build_base(folder: Path, layers: int, source: Path | None) -> Path:
    """A random LLaMA of SmolLM2-135M's shape with ``layers`` layers, saved with a tokenizer."""
    import transformers

    if source is not None:
        config = transformers.LlamaConfig.from_pretrained(str(source))
        config.num_hidden_layers = layers
        tok = transformers.AutoTokenizer.from_pretrained(str(source))
    else:
        from dlforge.testing import tiny_causal_lm

        tiny_causal_lm(folder, "llama")
        tok = transformers.AutoTokenizer.from_pretrained(str(folder))
        config = transformers.LlamaConfig(**{**SMOL, "num_hidden_layers": layers},
                                          eos_token_id=tok.eos_token_id,
                                          pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def write_data(folder: Path, n_val: int, seed: int) -> tuple[Path, Path]:
    rows = dataset_questions()
    order = np.random.default_rng(seed).permutation(len(rows))
    paths = folder / "train.jsonl", folder / "val.jsonl"
    for path, idx in zip(paths, (order[n_val:], order[:n_val]), strict=True):
        path.write_text("".join(json.dumps(rows[i]) + "\n" for i in idx), encoding="utf-8")
    return paths


# ---------------------------------------------------------------------------------- memory
def _rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class PeakRSS:
    """Peak resident-memory growth over a block (MB), sampled every 20 ms after handing freed
    heap back to the system (so that what an earlier run freed does not hide this one's)."""

    def __enter__(self) -> PeakRSS:
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).malloc_trim(0)
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.mb = max(0, self.peak - self.base) / 2**20


# -------------------------------------------------------------------------------- the runs
@dataclass
class Run:
    tokens: int  # non-padding input tokens trained on
    seconds: float
    mb: float = 0.0
    val_loss: float = float("nan")
    own: dict = field(default_factory=dict)  # dlforge's own metrics.json figures

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds


@torch.no_grad()
def val_loss(model, val: list[Encoded], pad: int, precision: str, bs: int = 8) -> float:
    """Mean cross-entropy per supervised token of ``val`` (the same function for both sides):
    right-padded batches through the model's forward, full logits, shifted here."""
    model.eval()
    total, n = 0.0, 0
    for s in range(0, len(val), bs):
        chunk = val[s: s + bs]
        T = max(len(e.ids) for e in chunk)
        ids = torch.full((len(chunk), T), pad, dtype=torch.long)
        labels = torch.full((len(chunk), T), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(chunk), T), dtype=torch.long)
        for b, e in enumerate(chunk):
            ids[b, : len(e.ids)] = torch.tensor(e.ids)
            labels[b, : len(e.ids)] = torch.tensor(e.labels)
            mask[b, : len(e.ids)] = 1
        with torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"):
            logits = model(input_ids=ids, attention_mask=mask).logits
        target = labels[:, 1:]
        total += float(F.cross_entropy(logits[:, :-1].float().flatten(0, 1), target.flatten(),
                                       ignore_index=IGNORE, reduction="sum"))
        n += int((target != IGNORE).sum())
    return total / n


def dlforge_tokens(train: list[Encoded], a: argparse.Namespace, packing: bool) -> int:
    """Non-padding tokens of the first --steps batches finetune() trains on: its batches,
    rebuilt with its generator, padded with -1 so that padding can be told apart."""
    rng, out, tokens = np.random.default_rng(a.seed), [], 0
    while len(out) < a.steps:
        out += batches(train, a.batch_size, a.max_length, packing, -1, rng)
    for b in out[: a.steps]:
        tokens += int((b["input_ids"] >= 0).sum())
    return tokens


def run_dlforge(base: Path, data: tuple[Path, Path], tmp: Path, a: argparse.Namespace,
                lora: bool, packing: bool, gc_: bool, train: list[Encoded]
                ) -> tuple[Run, Path]:
    cfg = FinetuneConfig(lora=lora, lora_r=16, lora_alpha=32, target_modules=TARGETS,
                         epochs=1000, max_steps=a.steps, lr=a.lr if lora else a.full_lr,
                         batch_size=a.batch_size, max_length=a.max_length, packing=packing,
                         gradient_checkpointing=gc_, precision=a.precision, seed=a.seed)
    out = tmp / f"run-{time.monotonic_ns()}"
    m = finetune(base, data[0], out, cfg, val_data=data[1], verbose=0)
    own = {"tps_padded": m["tokens_per_second"], "val_after": m["val_after"]["loss"],
           "val_before": m["val_before"]["loss"]}
    return Run(dlforge_tokens(train, a, packing), m["seconds"], own=own), out


def run_trainer(base: Path, tmp: Path, a: argparse.Namespace, lora: bool, grouped: bool,
                train: list[Encoded], tok) -> tuple[Run, torch.nn.Module]:
    """The plain script: PEFT + Trainer, padding collator, labels masked to assistant turns."""
    import transformers
    from peft import LoraConfig, get_peft_model

    precision = resolve_precision(a.precision, torch.device("cpu"))
    model = load_model(base)
    torch.manual_seed(a.seed)
    if lora:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, LoraConfig(
                r=16, lora_alpha=32, lora_dropout=0.05, target_modules=TARGETS,
                task_type="CAUSAL_LM", bias="none"))
    rows = [{"input_ids": e.ids, "attention_mask": [1] * len(e.ids), "labels": e.labels}
            for e in train]
    counted: list[int] = []
    pad_collate = transformers.DataCollatorForSeq2Seq(tok, padding=True,
                                                      label_pad_token_id=IGNORE)

    def collate(features):  # the collator, counting each batch's non-padding tokens
        batch = pad_collate(features)
        counted.append(int(batch["attention_mask"].sum()))
        return batch

    clock: dict[str, float] = {}

    class Clock(transformers.TrainerCallback):
        def on_train_begin(self, *args, **kw):
            clock["t0"] = time.perf_counter()

        def on_train_end(self, *args, **kw):
            clock["t1"] = time.perf_counter()

    targs = transformers.TrainingArguments(
        output_dir=str(tmp / "trainer"), per_device_train_batch_size=a.batch_size,
        max_steps=a.steps, learning_rate=a.lr if lora else a.full_lr,
        # dlforge's schedule: warm-up over 5% of the steps, cosine to a tenth of the rate
        lr_scheduler_type="cosine_with_min_lr", lr_scheduler_kwargs={"min_lr_rate": 0.1},
        warmup_steps=int(0.05 * a.steps), weight_decay=0.0, max_grad_norm=1.0,
        logging_steps=a.steps, report_to=[], save_strategy="no", use_cpu=True,
        dataloader_num_workers=0, seed=a.seed, bf16=precision == "bf16", disable_tqdm=True,
        train_sampling_strategy="group_by_length" if grouped else "random")
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=rows,
                                   data_collator=collate, callbacks=[Clock()])
    trainer.remove_callback(transformers.PrinterCallback)  # its log lines, not the logging
    trainer.train()
    return Run(sum(counted[: a.steps]), clock["t1"] - clock["t0"]), trainer.model


# ------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=10, help="optimizer steps per run")
    ap.add_argument("--layers", type=int, default=4, help="decoder layers (SmolLM2: 30)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each row, interleaved")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-4, help="LoRA learning rate")
    ap.add_argument("--full-lr", type=float, default=2e-5, help="full fine-tune learning rate")
    ap.add_argument("--val", type=int, default=32, help="held-out chats")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--base", type=Path, default=None,
                    help="an imported SmolLM2 folder for its config and tokenizer")
    ap.add_argument("--only", default=DEFAULT, help=f"rows, of: {', '.join(ROWS)}")
    a = ap.parse_args()
    keys = [k.strip() for k in a.only.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ROWS]
    if unknown:
        ap.error(f"--only: unknown {', '.join(unknown)}; rows are: {', '.join(ROWS)}")
    torch.set_num_threads(a.threads)
    import transformers

    transformers.logging.set_verbosity_error()
    source = a.base or next((p for p in (Path("models/smollm2"), Path("/tmp/lm/smol"))
                             if (p / "config.json").is_file()), None)
    precision = resolve_precision(a.precision, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = build_base(tmp / "base", a.layers, source)
        data = write_data(tmp, a.val, a.seed)
        tok = load_tokenizer(base)
        pad = tok.pad_token_id
        train, _ = encode(read_examples(data[0]), tok, a.max_length, True, str(data[0]))
        val, _ = encode(read_examples(data[1]), tok, a.max_length, True, str(data[1]))
        n_tok = sum(len(e.ids) for e in train)
        sup = sum(e.supervised for e in train)
        print(f"base: random LLaMA, {a.layers} layers, SmolLM2-135M shape, tokenizer of "
              f"{source or 'tiny_causal_lm'}; {len(train):,} training chats "
              f"({n_tok / len(train):.0f} tokens each, {sup / n_tok:.0%} supervised), "
              f"{len(val)} held out; {a.steps} "
              f"steps of batch {a.batch_size}, {precision}, {a.threads} thread(s)")
        results: dict[str, list[Run]] = {k: [] for k in keys}
        for r in range(a.repeats):  # A B C ..., then ... C B A: each row first in turn
            for key in (keys if r % 2 == 0 else keys[::-1]):
                side, lora, packing, gc_, _ = ROWS[key]
                with PeakRSS() as mem:  # training (and dlforge's own evaluation, saving)
                    if side == "dlforge":
                        run, out = run_dlforge(base, data, tmp, a, lora, packing, gc_, train)
                    else:
                        run, model = run_trainer(base, tmp, a, lora, key.endswith("grouped"),
                                                 train, tok)
                run.mb = mem.mb
                if side == "dlforge":  # the adapter merged into its base, in memory
                    model = load_finetuned(out, verify=False)[0]
                run.val_loss = val_loss(model, val, pad, precision)
                del model
                results[key].append(run)
                print(f"  repeat {r + 1} {key:22s} {run.tps:8,.0f} tokens/s  {run.seconds:6.1f}"
                      f" s  peak +{run.mb:,.0f} MB  val loss {run.val_loss:.4f}"
                      + (f"  (its own: {run.own['tps_padded']:,.0f} tokens/s with padding, "
                         f"val {run.own['val_before']:.4f} -> {run.own['val_after']:.4f})"
                         if run.own else ""), flush=True)
                if torch.get_num_threads() != a.threads:
                    print(f"  warning: {key} changed the thread count to "
                          f"{torch.get_num_threads()}; set back to {a.threads}")
                    torch.set_num_threads(a.threads)

    med = {k: statistics.median(r.tps for r in v) for k, v in results.items()}
    print(f"\n| row | tokens/s (median of {a.repeats}) | each run | vs Trainer | "
          "peak RSS growth (MB) | val loss | seconds |")
    print("|---|---|---|---|---|---|---|")
    for key, runs in results.items():
        ref = ROWS[key][4]
        ratio = f"{med[key] / med[ref]:.2f}x" if ref in med else ""
        each = ", ".join(f"{r.tps:,.0f}" for r in runs)
        print(f"| {key} | {med[key]:,.0f} | {each} | {ratio} | "
              f"{statistics.median(r.mb for r in runs):,.0f} | "
              f"{statistics.median(r.val_loss for r in runs):.4f} | "
              f"{statistics.median(r.seconds for r in runs):.1f} |")


if __name__ == "__main__":
    main()
