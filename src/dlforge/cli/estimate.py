"""``dlforge estimate``: how much data, time and compute a model needs (docs/estimate.md)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from dlforge.cli._common import Commands
from dlforge.cli._common import examples as _examples
from dlforge.estimate import estimate as run_estimate
from dlforge.estimate.report import tables

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
    hardware: Annotated[str, typer.Option(
        help="h100, h200, a100-80gb, a100-40gb, l4, t4 or this-machine.")] = "h100",
    devices: Annotated[int, typer.Option(help="Number of devices.")] = 1,
    mfu: Annotated[float, typer.Option(help="Assumed model-FLOPs utilisation, in (0, 1].")
                   ] = 0.4,
    price: Annotated[float | None, typer.Option(help="USD per device-hour.")] = None,
    precision: Annotated[str | None, typer.Option(help="bf16 or fp32.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adamw, adamw-mixed or sgd.")] = None,
    zero: Annotated[int, typer.Option(
        help="ZeRO stage 0-3 (3 = FSDP full shard) over --devices.")] = 0,
    checkpointing: Annotated[bool, typer.Option(
        "--checkpointing", help="Activation checkpointing.")] = False,
    inference_batch: Annotated[int, typer.Option(help="Sequences in the KV cache.")] = 1,
    measure: Annotated[str | None, typer.Option(
        help="A run config: time a few real training steps here and predict the run.")
                       ] = None,
    steps: Annotated[int, typer.Option(help="Steps timed by --measure.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """How much data, time and compute: parameters, FLOPs, training and inference memory,
    time and cost on a hardware catalogue, and the Chinchilla data answer (docs/estimate.md)."""
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

