"""``dlforge estimate``: how much data, time and compute a model needs (docs/estimate.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dlforge.cli._common import Commands
from dlforge.cli._common import examples as _examples
from dlforge.errors import ConfigError
from dlforge.estimate import estimate as run_estimate
from dlforge.estimate.report import finetune_tables, tables

__all__ = ["COMMANDS"]

COMMANDS = Commands()


# ----------------------------------------------------------------------------------- estimate
@COMMANDS(epilog=_examples(
    "dlforge estimate gpt2-small",
    "dlforge estimate llama2-70b --tokens 2e12 --hardware h100 --devices 2048 --zero 3 "
    "--checkpointing",
    "dlforge estimate --layers 24 --d-model 2048 --heads 16 --kv-heads 4 --ffn-kind swiglu "
    "--ffn 5632 --vocab 32000 --context 4096 --untied --json",
    "dlforge estimate runs/tweets --hardware this-machine",
    "dlforge estimate --measure run.yaml",
    "dlforge estimate --lm-finetune models/smollm2 --data chats.jsonl",
    "dlforge estimate --lm-finetune models/smollm2 --data chats.jsonl --full "
    "--gradient-checkpointing --batch-size 4 --max-length 1024 --steps 3",
))
def estimate(
    source: Annotated[str | None, typer.Argument(
        help="A preset name (gpt2-small ... llama2-70b), a run config YAML or a run "
             "directory.")] = None,
    layers: Annotated[int | None, typer.Option(help="Transformer layers.")] = None,
    d_model: Annotated[int | None, typer.Option(help="Model width.")] = None,
    heads: Annotated[int | None, typer.Option(help="Attention heads.")] = None,
    kv_heads: Annotated[int | None, typer.Option(
        help="Key/value heads (grouped-query attention; default: heads).")] = None,
    ffn: Annotated[int | None, typer.Option(help="Feed-forward width (default 4 x d_model).")
                   ] = None,
    ffn_kind: Annotated[str | None, typer.Option(help="gelu or swiglu.")] = None,
    vocab: Annotated[int | None, typer.Option(help="Vocabulary size.")] = None,
    context: Annotated[int | None, typer.Option(help="Context length (tokens).")] = None,
    untied: Annotated[bool, typer.Option(
        "--untied", help="A separate output head (LLaMA); default tied (GPT-2).")] = False,
    seq_len: Annotated[int | None, typer.Option(
        help="Tokens per sequence for FLOPs and activations (default: context).")] = None,
    batch_size: Annotated[int | None, typer.Option(
        help="Micro-batch per device for activation memory.")] = None,
    tokens: Annotated[float | None, typer.Option(
        help="Training tokens (default: 20 per parameter; runs: rows x epochs).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (runs only).")] = None,
    budget: Annotated[float | None, typer.Option(
        help="A compute budget in FLOPs: the compute-optimal model size and tokens for it.")
                      ] = None,
    hardware: Annotated[str | None, typer.Option(
        help="h100, h200, a100-80gb, a100-40gb, l4, t4 or this-machine (default h100; "
             "this-machine for --lm-finetune).")] = None,
    devices: Annotated[int, typer.Option(help="Number of devices.")] = 1,
    mfu: Annotated[float, typer.Option(help="Assumed model-FLOPs utilisation, in (0, 1].")
                   ] = 0.4,
    price: Annotated[float | None, typer.Option(help="USD per device-hour.")] = None,
    precision: Annotated[str | None, typer.Option(help="bf16 or fp32.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw, adamw-mixed or sgd.")] = None,
    zero: Annotated[int, typer.Option(
        help="ZeRO stage 0-3 (3 = FSDP full shard) over --devices.")] = 0,
    checkpointing: Annotated[bool, typer.Option(
        "--checkpointing", "--gradient-checkpointing", help="Activation checkpointing.")
                             ] = False,
    inference_batch: Annotated[int, typer.Option(help="Sequences in the KV cache.")] = 1,
    measure: Annotated[str | None, typer.Option(
        help="A run config: time a few real training steps here and predict the run.")
                       ] = None,
    steps: Annotated[int | None, typer.Option(
        help="Steps timed by --measure (default 10); with --lm-finetune, real fine-tune steps "
             "timed here (default none: this machine's matmul peak x --mfu).")] = None,
    lm_finetune: Annotated[Path | None, typer.Option(
        "--lm-finetune", help="A pretrained causal LM folder: what fine-tuning it costs "
                              "(memory, FLOPs, time per epoch here).")] = None,
    data: Annotated[Path | None, typer.Option(
        help="--lm-finetune: the fine-tuning data (as dlforge lm finetune --data).")] = None,
    lora: Annotated[bool | None, typer.Option(
        "--lora/--full", help="--lm-finetune: LoRA adapters (default) or every weight.")
                    ] = None,
    lora_r: Annotated[int | None, typer.Option(help="--lm-finetune: LoRA rank (16).")] = None,
    target_modules: Annotated[str | None, typer.Option(
        help="--lm-finetune: LoRA's modules: auto, all-linear or names, comma-separated.")
                              ] = None,
    max_length: Annotated[int | None, typer.Option(
        help="--lm-finetune: tokens per example (default 512 or the context).")] = None,
    packing: Annotated[bool, typer.Option(
        "--packing", help="--lm-finetune: pack examples into rows.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How much data, time and compute: parameters, FLOPs, training and inference memory,
    time and cost on a hardware catalogue, and the Chinchilla data answer; or, with
    --lm-finetune, what fine-tuning a pretrained language model costs (docs/estimate.md)."""
    tuning = dict(data=data, lora=lora, lora_r=lora_r, target_modules=target_modules,
                  max_length=max_length, packing=packing or None)
    if lm_finetune is not None:
        other = dict(source=source, layers=layers, d_model=d_model, heads=heads,
                     kv_heads=kv_heads, ffn=ffn, ffn_kind=ffn_kind, vocab=vocab,
                     context=context, untied=untied or None, seq_len=seq_len, tokens=tokens,
                     budget=budget, measure=measure, optimizer=optimizer, zero=zero or None,
                     devices=devices if devices != 1 else None)
        given = [k for k, v in other.items() if v is not None]
        if given:
            raise ConfigError(f"--lm-finetune: {', '.join(_flag(k) for k in given)} do not "
                              "apply to a fine-tune estimate (its sizes come from the model "
                              "folder, its tokens from --data)")
        settings = {"lora": lora, "lora_r": lora_r, "target_modules": target_modules,
                    "max_length": max_length, "packing": packing,
                    "gradient_checkpointing": checkpointing, "batch_size": batch_size,
                    "epochs": epochs, "precision": precision}
        report = _finetune(lm_finetune, data, {k: v for k, v in settings.items()
                                                if v is not None}, hardware or "this-machine",
                           mfu, price, steps or 0)
        if as_json:
            typer.echo(json.dumps(report, indent=2, default=str))
            return
        console = Console()
        for part in finetune_tables(report):
            console.print(part, soft_wrap=True)
        return
    given = [k for k, v in tuning.items() if v is not None]
    if given:
        raise ConfigError(f"{', '.join(_flag(k) for k in given)} describe a fine-tune: give "
                          "--lm-finetune MODEL_FOLDER")
    hardware = hardware or "h100"
    steps = 10 if steps is None else steps
    report = run_estimate(
        source, layers=layers, d_model=d_model, heads=heads, kv_heads=kv_heads, ffn=ffn,
        ffn_kind=ffn_kind, vocab=vocab, context=context, untied=True if untied else None,
        seq_len=seq_len, batch_size=batch_size, tokens=tokens, epochs=epochs,
        hardware=hardware, devices=devices, mfu=mfu, price=price, precision=precision,
        optimizer=optimizer, zero=zero, checkpointing=checkpointing,
        inference_batch=inference_batch, measure=measure, measure_steps=steps, budget=budget)
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    console = Console()
    for part in tables(report):
        console.print(part, soft_wrap=True)



def _flag(name: str) -> str:
    return "SOURCE" if name == "source" else "--" + name.replace("_", "-")


def _finetune(model: Path, data: Path | None, settings: dict[str, Any], hardware: str,
              mfu: float, price: float | None, steps: int) -> dict[str, Any]:
    """The fine-tune estimate, its data planned as dlforge lm finetune will batch it."""
    from dlforge.config.lm import finetune_config
    from dlforge.estimate import estimate_finetune

    cfg = finetune_config(settings, "dlforge estimate --lm-finetune")
    plan = _finetune_plan(Path(model), Path(data), cfg) if data is not None else None
    return estimate_finetune(model, cfg, plan, hardware=hardware, mfu=mfu, price=price,
                             steps=steps)


def _finetune_plan(model: Path, data: Path, cfg: Any) -> Any:
    """One epoch of ``data`` as dlforge.lm.finetune forms it: the same validation split, the
    model's tokenizer and chat template, cutting at --max-length, and the first epoch's
    batches (length-bucketed or packed), as shapes."""
    import numpy as np

    from dlforge.estimate import Batch, DataPlan
    from dlforge.lm.hf import check_folder, load_tokenizer
    from dlforge.lm.sft import IGNORE, batches, encode, read_examples

    config = check_folder(model)
    context = config.get("max_position_embeddings") or config.get("n_positions") or 512
    length = cfg.max_length or min(512, context)
    tok = load_tokenizer(model)
    examples = read_examples(data)
    train, val = examples, []
    if cfg.val_split > 0 and len(examples) >= 2:  # dlforge.lm.finetune's split
        order = np.random.default_rng(cfg.seed).permutation(len(examples))
        held = set(order[:max(1, round(cfg.val_split * len(examples)))].tolist())
        train = [e for i, e in enumerate(examples) if i not in held]
        val = [e for i, e in enumerate(examples) if i in held]
    train_enc, cut = encode(train, tok, length, cfg.completion_only, str(data))
    val_enc = encode(val, tok, length, cfg.completion_only, str(data))[0] if val else []
    pad = tok.pad_token_id

    def shapes(encoded: list[Any], packing: bool, rng: Any) -> list[Batch]:
        out = []
        for b in batches(encoded, cfg.batch_size, length, packing, pad, rng):
            rows, width = b["input_ids"].shape
            real = int(b["real"].sum())  # tokens, padding left out
            out.append(Batch(rows, width, real, int((b["labels"] != IGNORE).sum()),
                             "attention_mask" not in b or real < rows * width))
        return out

    return DataPlan(shapes(train_enc, cfg.packing, np.random.default_rng(cfg.seed)),
                    shapes(val_enc, False, None), sequences=len(train_enc),
                    val_sequences=len(val_enc), source=str(data), examples_cut=cut)
