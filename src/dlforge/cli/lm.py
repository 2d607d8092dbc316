"""``dlforge lm``: train a GPT on text, generate from it, score it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dlforge.cli._common import Commands, privacy_flags
from dlforge.cli._common import examples as _examples
from dlforge.estimators.language import LanguageModel

__all__ = ["COMMANDS"]

COMMANDS = Commands()  # the dlforge lm group


@COMMANDS(epilog=_examples(
    "dlforge lm train --text shakespeare.txt --out runs/shakespeare",
    "dlforge lm train --text a.txt --text b.txt --tokenizer bpe --vocab-size 4000",
    "dlforge lm train --text reviews.csv --column review --max-steps 500",
    "dlforge lm train --text shakespeare.txt --out runs/shakespeare --resume",
    "dlforge lm train --text notes.txt --dp-epsilon 8 --out runs/private-lm",
))
def train(
    text: Annotated[list[Path], typer.Option(
        help="A UTF-8 text file (repeat for several), or a table with --column.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/lm"),
    column: Annotated[str | None, typer.Option(help="The text column of a table.")] = None,
    tokenizer: Annotated[str, typer.Option(help="char or bpe.")] = "char",
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 2000,
    n_layer: Annotated[int, typer.Option(help="Transformer blocks.")] = 4,
    n_head: Annotated[int, typer.Option(help="Attention heads.")] = 4,
    d_model: Annotated[int, typer.Option(help="Width.")] = 128,
    block_size: Annotated[int, typer.Option(help="Context window in tokens.")] = 64,
    dropout: Annotated[float, typer.Option(help="Dropout probability.")] = 0.0,
    batch_size: Annotated[int, typer.Option(help="Blocks per micro-batch.")] = 12,
    accumulate: Annotated[int, typer.Option(help="Micro-batches per step.")] = 1,
    max_steps: Annotated[int, typer.Option(help="Optimizer steps.")] = 2000,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-3,
    min_lr: Annotated[float, typer.Option(help="Learning rate at the last step.")] = 1e-4,
    warmup_steps: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 100,
    eval_interval: Annotated[int, typer.Option(help="Steps between loss estimates.")] = 250,
    eval_iters: Annotated[int, typer.Option(help="Batches per loss estimate.")] = 20,
    precision: Annotated[str, typer.Option(help="auto (bf16 where supported), fp32, bf16.")
                         ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, mps.")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help=(
        "torch.compile the model (needs a C++ compiler on the CPU): +20-30% tokens/s in bf16 "
        "on a CPU, slower in fp32 there (benchmarks/lm_train.py).")),
    ] = False,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    dp_epsilon: Annotated[float | None, typer.Option(
        help="Differentially private training (DP-SGD over disjoint windows of the corpus): "
             "the privacy budget ε to spend.")] = None,
    dp_delta: Annotated[float | None, typer.Option(
        help="DP-SGD: δ (default 1e-5; keep it below 1 / records).")] = None,
    dp_max_grad_norm: Annotated[float | None, typer.Option(
        help="DP-SGD: each record's gradient is clipped to this norm (default 1.0).")] = None,
    dp_accountant: Annotated[str | None, typer.Option(
        help="DP-SGD: the privacy accountant, rdp (default), prv or gdp.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted run into --out (same settings).")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace a run that exists at --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a GPT on a corpus; the best weights by val loss are saved as a run directory."""
    privacy = privacy_flags(dp_epsilon, dp_delta, dp_max_grad_norm, dp_accountant)
    lm = LanguageModel(tokenizer=tokenizer, vocab_size=vocab_size, n_layer=n_layer,
                       n_head=n_head, d_model=d_model, block_size=block_size, dropout=dropout,
                       batch_size=batch_size, accumulate=accumulate, max_steps=max_steps, lr=lr,
                       min_lr=min_lr, warmup_steps=warmup_steps, eval_interval=eval_interval,
                       eval_iters=eval_iters, precision=precision, device=device,
                       compile=compile, seed=seed, column=column, privacy=privacy,
                       verbose=0 if quiet else 1)
    try:
        lm.fit(text, out=out, resume=resume, overwrite=overwrite)
    except KeyboardInterrupt:
        typer.echo(f"error: interrupted; continue from the last evaluation with: dlforge lm "
                   f"train --text ... --out {out} --resume (same settings)", err=True)
        raise typer.Exit(130) from None
    m = lm.metrics_
    typer.echo(f"wrote {out}: val loss {m['val_loss']:.4f} (perplexity {m['val_perplexity']:.2f},"
               f" {m['val_bits_per_char']:.3f} bits/char) at step {m['best_step']} of "
               f"{m['steps']}; {m['parameters']:,} parameters, {m['tokens_per_second']:,.0f} "
               f"tokens/s ({m['precision']})")
    if lm.privacy_:
        p = lm.privacy_
        typer.echo(f"differential privacy: ε = {p['epsilon']:.2f} at δ = {p['delta']:g} spent "
                   f"over {p['steps']} steps (noise multiplier {p['noise_multiplier']:.3f}, "
                   f"{p['records']:,} records of {lm.config_.block_size + 1} tokens)")
    typer.echo(f"sample: dlforge lm generate {out} --prompt \"...\"")


@COMMANDS(epilog=_examples(
    "dlforge lm generate runs/shakespeare --prompt \"ROMEO:\" --max-new-tokens 300",
    "dlforge lm generate runs/shakespeare --prompt \"To be\" --temperature 0 --stop \"\\n\\n\"",
    "dlforge lm generate runs/shakespeare --prompt \"ROMEO:\" --prompt \"JULIET:\" --seed 1",
))
def generate(
    run_dir: Annotated[Path, typer.Argument(help="A language model's run directory.")],
    prompt: Annotated[list[str], typer.Option(
        help="The text to continue; repeat for several, decoded together.")],
    max_new_tokens: Annotated[int, typer.Option(
        help="Tokens to generate; past the context window the context slides.")] = 200,
    temperature: Annotated[float, typer.Option(help="0 is greedy.")] = 0.8,
    top_k: Annotated[int | None, typer.Option(help="Sample from the k likeliest.")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.")] = None,
    repetition_penalty: Annotated[float, typer.Option(help="> 1 discourages repeats.")] = 1.0,
    stop: Annotated[str | None, typer.Option(
        help="End before this string (\\n and \\t are a newline and a tab).")] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text.")] = None,
) -> None:
    """Continue a prompt, printing the text as it is generated; several prompts are decoded
    together (continuous batching) and printed one after another, each under a header."""
    lm = LanguageModel.load(run_dir)
    if stop is not None:
        stop = stop.replace("\\n", "\n").replace("\\t", "\t")
    sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                    top_p=top_p, repetition_penalty=repetition_penalty, stop=stop, seed=seed)
    if len(prompt) > 1:
        for i, (p, text) in enumerate(zip(prompt, lm.generate_many(prompt, **sampling),
                                          strict=True)):
            typer.echo(f"{'' if i == 0 else chr(10)}--- prompt {i + 1} of {len(prompt)}")
            typer.echo(p + text)
        return
    stream = lm.generate_stream(prompt[0], **sampling)
    typer.echo(prompt[0], nl=False)
    for piece in stream:
        typer.echo(piece, nl=False)
    typer.echo()


@COMMANDS(name="eval", epilog=_examples(
    "dlforge lm eval runs/shakespeare --text heldout.txt",
    "dlforge lm eval runs/shakespeare --text heldout.txt --json",
))
def evaluate(
    run_dir: Annotated[Path, typer.Argument(help="A language model's run directory.")],
    text: Annotated[list[Path], typer.Option(help="Held-out text file(s).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Loss, perplexity and bits per character on held-out text."""
    m = LanguageModel.load(run_dir).evaluate(text)
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    typer.echo(f"loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}, "
               f"bits per char {m['bits_per_char']:.4f} ({m['tokens']:,} tokens, "
               f"{m['characters']:,} characters)")
