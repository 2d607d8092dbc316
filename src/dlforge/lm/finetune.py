"""Fine-tune a pretrained causal LM (a local Hugging Face folder) on chats, prompt/completion
pairs or plain text, with LoRA (PEFT) or every weight, and save it as a run directory.

A fine-tune's run directory::

    runs/support/
      dlforge.json      manifest (task: causal_lm, estimator: PretrainedLM)
      config.yaml       the FinetuneConfig, every default filled in
      base.json         the base folder (absolute path), its weights' SHA-256, architecture
      adapter/          LoRA: adapter_config.json + adapter_model.safetensors (PEFT's format)
      model/            full fine-tune: config.json + model.safetensors
      tokenizer/        the tokenizer with the chat template used in training (serving uses it)
      metrics.json      validation loss / perplexity / token accuracy before and after, ...
      history.csv       step, train loss, learning rate, tokens/s

The loss is computed on supervised positions only: the decoder's hidden states are gathered
where a label exists before the output layer, so a batch whose prompts are long never builds
the full (tokens x vocabulary) logits.
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dlforge._extras import require
from dlforge.config.lm import FinetuneConfig, dump_lm_config
from dlforge.errors import ConfigError, DataError, RunDirError
from dlforge.lm.hf import (
    LLM_FEATURE,
    check_folder,
    folder_digest,
    folder_into_place,
    load_model,
    load_tokenizer,
)
from dlforge.lm.sft import (
    IGNORE,
    Encoded,
    batches,
    count_batches,
    describe,
    encode,
    read_examples,
)
from dlforge.run import (
    FINETUNE_TASK,
    check_out,
    check_run,
    history_csv,
    new_run_dir,
    partial_dir,
    seal_run,
    to_json,
)
from dlforge.train.device import autocast, resolve_device, resolve_precision
from dlforge.train.distributed import setup_distributed
from dlforge.train.trainer import adamw

__all__ = ["FINETUNE_TASK", "evaluate", "finetune", "load_finetuned", "merge", "target_modules"]



CHECKPOINT_SECONDS = 60.0  # the least time between two saved checkpoints (see finetune)


def _say(verbose: int) -> Any:
    return (lambda msg: print(msg, file=sys.stderr, flush=True)) if verbose else (
        lambda msg: None)


def _parts(model: Any) -> tuple[Any, Any]:
    """The decoder (hidden states) and the output layer of a causal LM, PEFT-wrapped or not."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.get_decoder(), inner.get_output_embeddings()


def _model_logits(model: Any, logits: torch.Tensor) -> torch.Tensor:
    """What the model's own forward does to the output layer's result, for the architectures
    that do something (Gemma 2/3's final soft-capping, Cohere's and Granite's scaling), so
    the loss is the one the model is served with."""
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    cap = getattr(cfg, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    scale = getattr(cfg, "logit_scale", None)
    if isinstance(scale, (int, float)) and scale != 1:
        logits = logits * scale
    div = getattr(cfg, "logits_scaling", None)
    if isinstance(div, (int, float)) and div != 1:
        logits = logits / div
    return logits


def supervised_loss(model: Any, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int,
                                                                          int]:
    """Summed cross-entropy over the supervised positions of ``batch`` (labels already the next
    token), the number of those positions and how many the model ranks first."""
    decoder, head = _parts(model)
    kw = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask") if k in batch}
    hidden = decoder(**kw, use_cache=False).last_hidden_state
    labels = batch["labels"]
    where = labels != IGNORE
    logits = _model_logits(model, head(hidden[where]).float())
    target = labels[where]
    loss = F.cross_entropy(logits, target, reduction="sum")
    correct = int((logits.argmax(-1) == target).sum())
    return loss, int(where.sum()), correct


@torch.no_grad()
def evaluate(model: Any, encoded: Sequence[Encoded], pad_id: int, device: torch.device,
             precision: str, batch_size: int = 8, max_length: int = 512) -> dict[str, float]:
    """Mean loss per supervised token, its perplexity and the share of supervised tokens the
    model ranks first (token accuracy)."""
    was = model.training
    model.eval()
    total = n = right = 0
    for batch in batches(encoded, batch_size, max_length, packing=False, pad_id=pad_id):
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            loss, k, c = supervised_loss(model, batch)
        total, n, right = total + float(loss), n + k, right + c
    model.train(was)
    mean = total / max(1, n)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)),
            "token_accuracy": right / max(1, n), "tokens": n}


def target_modules(model: Any, wanted: str | list[str]) -> str | list[str]:
    """``auto``: PEFT's choice for the architecture (attention query and value projections of
    LLaMA, Qwen2, ...), else every linear layer. A list is checked: names that match no
    module are an error listing the linear layers that exist."""
    if wanted == "auto":
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model.config.model_type)
        return list(known) if known else "all-linear"
    if wanted == "all-linear":
        return wanted
    names = [wanted] if isinstance(wanted, str) else list(wanted)
    names = [x.strip() for part in names for x in part.split(",") if x.strip()]
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                     if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"})
    missing = [x for x in names if not any(n == x or n.endswith("." + x)
                                           for n, _ in model.named_modules())]
    if missing:
        raise ConfigError(f"--target-modules: {', '.join(missing)} matches no module of this "
                          f"model; its linear layers are: {', '.join(leaves)} (or auto, "
                          "all-linear)")
    return names


def _split(examples: list[dict[str, Any]], share: float, seed: int
           ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if share <= 0 or len(examples) < 2:
        return examples, []
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(examples))
    k = max(1, round(share * len(examples)))
    val = set(order[:k].tolist())
    return ([e for i, e in enumerate(examples) if i not in val],
            [e for i, e in enumerate(examples) if i in val])


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine to a tenth of the rate at the last step."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))


def finetune(base: str | Path, data: str | Path, out: str | Path,
             cfg: FinetuneConfig | None = None, val_data: str | Path | None = None,
             chat_template: str | Path | None = None, overwrite: bool = False,
             resume: bool = False, verbose: int = 1) -> dict[str, Any]:
    """Fine-tune the causal LM in folder ``base`` on ``data`` and save the run at ``out``;
    returns its metrics. See the module docstring for what is written.

    Every tenth of the steps (at most once a minute) and on Ctrl-C, the trained weights,
    AdamW's moments, the random states and the position in the data are saved beside ``out``
    (``.OUT.partial/``);
    ``resume=True`` continues from there to the same weights an uninterrupted run reaches."""
    cfg = cfg or FinetuneConfig()
    if cfg.lora:
        require("peft", "llm", LLM_FEATURE)
    say = _say(verbose)
    base, out = Path(base).resolve(), Path(out)
    config = check_folder(base)
    if not resume:
        check_out(out, overwrite)
    context = config.get("max_position_embeddings") or config.get("n_positions")
    if cfg.max_length is None:
        cfg = cfg.model_copy(update={"max_length": min(512, context or 512)})
    elif context and cfg.max_length > context:
        raise ConfigError(f"--max-length {cfg.max_length} is above the model's context of "
                          f"{context} tokens")
    tok = load_tokenizer(base)
    if chat_template is not None:
        path = Path(chat_template)
        if not path.is_file():
            raise DataError(f"{path}: no such file (--chat-template: a Jinja template)")
        tok.chat_template = path.read_text(encoding="utf-8")
    examples = read_examples(Path(data))
    if val_data is not None:
        train_ex, val_ex = examples, read_examples(Path(val_data))
    else:
        train_ex, val_ex = _split(examples, cfg.val_split, cfg.seed)
    train_enc, cut = encode(train_ex, tok, cfg.max_length, cfg.completion_only, str(data))
    val_enc, _ = encode(val_ex, tok, cfg.max_length, cfg.completion_only,
                        str(val_data or data)) if val_ex else ([], 0)
    share, shown = describe(train_enc, tok)
    if share == 0:
        raise DataError(f"{data}: no token is supervised (every completion / assistant turn is "
                        "empty or cut off by --max-length); nothing to learn")
    n_tokens = sum(len(e.ids) for e in train_enc)
    say(f"data: {len(train_enc):,} training sequences ({n_tokens:,} tokens, "
        f"{share:.0%} supervised), {len(val_enc):,} validation"
        + (f"; {cut} examples longer than --max-length {cfg.max_length} were cut" if cut
           else ""))
    say("first example, supervised part in ⟦ ⟧:\n  " + shown.replace("\n", "\n  "))

    torch.manual_seed(cfg.seed)
    # Under torchrun: each process takes its share of every batch's rows; the gradients are
    # summed over the processes (each weighed by the global number of supervised tokens), so
    # a step is the step one process takes on the whole batch. Only rank 0 writes files.
    rank, world, device = setup_distributed(resolve_device(cfg.device))
    if world > 1:
        say = _say(verbose if rank == 0 else 0)
    precision = resolve_precision(cfg.precision, device)
    model = load_model(base).to(device)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        targets = target_modules(model, cfg.target_modules)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                          lora_dropout=cfg.lora_dropout, target_modules=targets,
                          task_type="CAUSAL_LM", bias="none")
        with warnings.catch_warnings():  # PEFT calls a transformers API deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, lora)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
        if cfg.lora:
            model.enable_input_require_grads()
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    n_all = sum(p.numel() for p in model.parameters())
    how = f"LoRA r={cfg.lora_r}" if cfg.lora else "full"
    say(f"model: {base.name}, {n_all:,} parameters, {n_train:,} trained "
        f"({how}); {device.type}, {precision}")

    pad = tok.pad_token_id
    resuming = resume and (partial_dir(out) / "checkpoint" / "state.json").is_file()
    before = None if resuming else evaluate(model, val_enc, pad, device, precision, cfg.batch_size,
                      cfg.max_length) if val_enc else None
    if resuming:
        before = json.loads((partial_dir(out) / "checkpoint" / "state.json").read_text(
            encoding="utf-8"))["progress"]["before"]
    elif before:
        say(f"validation before: loss {before['loss']:.4f}, perplexity "
            f"{before['perplexity']:.2f}, token accuracy {before['token_accuracy']:.3f}")
    lr = cfg.learning_rate()
    opt = adamw([(params, lr)], cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    per_epoch = math.ceil(count_batches(train_enc, cfg.batch_size, cfg.max_length,
                                        cfg.packing) / cfg.accumulate)
    total = min(cfg.max_steps or per_epoch * cfg.epochs, per_epoch * cfg.epochs)
    warm = int(cfg.warmup * total)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    ckpt = partial_dir(out) / "checkpoint"
    identity = {"config": cfg.model_dump(mode="json"), "base": str(base),
                "data": str(Path(data).resolve()),
                "val_data": str(Path(val_data).resolve()) if val_data else None}
    progress: dict[str, Any] = {"step": 0, "epoch": 0, "index": 0, "seen": 0, "history": [],
                                "before": before, "seconds": 0.0}
    if resume and (ckpt / "state.json").is_file():
        progress = _load_checkpoint(ckpt, identity, trained, opt, rng)
        say(f"resuming from step {progress['step']} of {total}")
    elif resume:
        say(f"no interrupted run to resume at {partial_dir(out)}; starting afresh")
    step, seen, history = progress["step"], progress["seen"], progress["history"]
    t0 = time.perf_counter() - progress["seconds"]
    model.train()
    epoch, index = progress["epoch"], progress["index"]
    saved_at = time.perf_counter()
    try:
        while epoch < cfg.epochs and step < total:
            start_state = rng.bit_generator.state  # where this epoch's shuffle starts
            epoch_batches = batches(train_enc, cfg.batch_size, cfg.max_length, cfg.packing,
                                    pad, rng)
            while index < len(epoch_batches) and step < total:
                group = epoch_batches[index: index + cfg.accumulate]
                n_sup = sum(int((b["labels"] != IGNORE).sum()) for b in group)
                loss_sum = 0.0
                for b in group:
                    b = {k: v[rank::world].to(device) for k, v in b.items()} if world > 1 \
                        else {k: v.to(device) for k, v in b.items()}
                    if not len(b["input_ids"]):  # fewer rows than processes
                        continue
                    with autocast(device, precision):
                        loss, _, _ = supervised_loss(model, b)
                    (loss / max(1, n_sup)).backward()
                    loss_sum += float(loss.detach())
                if world > 1:
                    loss_sum = _sum_gradients(params, loss_sum, device)
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                for g in opt.param_groups:
                    g["lr"] = lr * _lr_factor(step, total, warm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                step, index = step + 1, index + len(group)
                seen += sum(int(b["real"].sum()) for b in group)  # padding not counted
                elapsed = time.perf_counter() - t0
                row = {"step": step, "epoch": epoch + 1, "train_loss": loss_sum / max(1, n_sup),
                       "lr": opt.param_groups[0]["lr"], "tokens_per_second": seen / elapsed}
                history.append(row)
                progress.update(step=step, epoch=epoch, index=index, seen=seen,
                                seconds=elapsed, epoch_rng=start_state)
                if step % max(1, total // 10) == 0 or step == total:
                    say(f"step {step}/{total}: train loss {row['train_loss']:.4f}, "
                        f"{row['tokens_per_second']:,.0f} tokens/s")
                    # not more often than every CHECKPOINT_SECONDS: a full fine-tune's
                    # weights and moments are gigabytes (Ctrl-C always saves)
                    if (step < total and rank == 0
                            and time.perf_counter() - saved_at >= CHECKPOINT_SECONDS):
                        _save_checkpoint(ckpt, identity, progress, trained, opt)
                        saved_at = time.perf_counter()
            epoch, index = epoch + 1, 0
    except KeyboardInterrupt:
        if step > 0 and rank == 0:
            _save_checkpoint(ckpt, identity, progress, trained, opt)
        raise
    seconds = time.perf_counter() - t0
    if world > 1 and rank != 0:  # rank 0 evaluates and writes the run; the others are done
        dist.barrier()
        return {"steps": step, "rank": rank}
    shutil.rmtree(partial_dir(out), ignore_errors=True)
    model.eval()
    after = evaluate(model, val_enc, pad, device, precision, cfg.batch_size,
                     cfg.max_length) if val_enc else None
    if after:
        say(f"validation after:  loss {after['loss']:.4f}, perplexity "
            f"{after['perplexity']:.2f}, token accuracy {after['token_accuracy']:.3f}")

    metrics = {"steps": step, "epochs": cfg.epochs, "seconds": seconds,
               "tokens_per_second": seen / max(seconds, 1e-9), "train_sequences": len(
                   train_enc), "val_sequences": len(val_enc), "supervised_share": share,
               "examples_cut": cut, "parameters": n_all, "trained_parameters": n_train,
               "precision": precision, "device": device.type,
               "val_before": before, "val_after": after}
    tmp = new_run_dir(out)
    try:
        dump_lm_config(cfg, tmp / "config.yaml")
        (tmp / "base.json").write_text(to_json({
            "path": str(base), "sha256": folder_digest(base),
            "architecture": (config.get("architectures") or [config.get("model_type")])[0],
            "model_type": config.get("model_type"), "context": context}), encoding="utf-8")
        if cfg.lora:
            model.save_pretrained(str(tmp / "adapter"), safe_serialization=True)
            _drop_base_path(tmp / "adapter")
        else:
            model.save_pretrained(str(tmp / "model"), safe_serialization=True)
        tok.save_pretrained(str(tmp / "tokenizer"))
        (tmp / "metrics.json").write_text(to_json(metrics), encoding="utf-8")
        (tmp / "history.csv").write_text(history_csv(history), encoding="utf-8")
        seal_run(tmp, out, FINETUNE_TASK, "PretrainedLM",
                 "lora" if cfg.lora else "full")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if world > 1:
            dist.barrier()
    return metrics


def _sum_gradients(params: list[torch.nn.Parameter], loss_sum: float, device: torch.device
                   ) -> float:
    """Sum the gradients (and the summed loss) over the torchrun processes, in one flat
    all-reduce."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads] + [
        torch.tensor([loss_sum], device=device)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    at = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[at: at + n].view_as(g).to(g.dtype)
        at += n
    return float(flat[-1])


def _save_checkpoint(d: Path, identity: dict[str, Any], progress: dict[str, Any],
                     trained: dict[str, torch.Tensor], opt: torch.optim.Optimizer) -> None:
    """The trained weights, AdamW's moments and the torch RNG (safetensors, never pickle) and
    ``state.json`` (settings, position, history), which is written last: it names a complete
    set."""
    d.mkdir(parents=True, exist_ok=True)
    _save(d / "weights.safetensors", {n: p.detach() for n, p in trained.items()})
    sd = opt.state_dict()
    tensors = {f"{i}.{name}": t for i, st in sd["state"].items() for name, t in st.items()}
    tensors["rng.torch"] = torch.get_rng_state()
    _save(d / "optimizer.safetensors", tensors)
    state = {"identity": identity, "progress": progress, "param_groups": sd["param_groups"]}
    tmp = d / ".state.json.tmp"
    tmp.write_text(to_json(state), encoding="utf-8")
    tmp.replace(d / "state.json")


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def _load_checkpoint(d: Path, identity: dict[str, Any], trained: dict[str, torch.Tensor],
                     opt: torch.optim.Optimizer, rng: np.random.Generator) -> dict[str, Any]:
    state = json.loads((d / "state.json").read_text(encoding="utf-8"))
    saved = state["identity"]
    changed = [k for k in identity if saved.get(k) != identity[k]]
    if changed:
        what = changed[0]
        if what == "config":
            diff = [k for k in identity["config"]
                    if saved["config"].get(k) != identity["config"][k]]
            what = ", ".join(diff)
        raise ConfigError(f"--resume: the interrupted run at {d.parent} used other settings "
                          f"({what}); resume with the same ones, or start afresh with "
                          "--overwrite")
    weights = load_file(str(d / "weights.safetensors"))
    with torch.no_grad():
        for name, p in trained.items():
            p.copy_(weights[name])
    tensors = load_file(str(d / "optimizer.safetensors"))
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if not key.startswith("rng."):
            i, name = key.split(".", 1)
            opt_state.setdefault(int(i), {})[name] = t
    opt.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    progress = state["progress"]
    rng.bit_generator.state = progress["epoch_rng"]
    return progress


def _drop_base_path(adapter: Path) -> None:
    """PEFT writes the base model's path into adapter_config.json; base.json is the one place
    dlforge keeps it (with the digest), so the adapter folder does not depend on the machine."""
    f = adapter / "adapter_config.json"
    cfg = json.loads(f.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = None
    f.write_text(json.dumps(cfg, indent=2), encoding="utf-8")


def load_finetuned(path: str | Path, device: str = "cpu", verify: bool = True
                   ) -> tuple[Any, Any, dict[str, Any]]:
    """The model (eval mode; a LoRA adapter merged into a copy of its base in memory), its
    tokenizer and a description, from a fine-tune run or a plain model folder."""
    path = Path(path)
    if not (path / "dlforge.json").is_file():
        model, tok = load_model(path), load_tokenizer(path)
        return model.to(device), tok, {"kind": "folder", "path": str(path.resolve())}
    manifest = check_run(path)
    if manifest.get("task") != FINETUNE_TASK:
        raise RunDirError(f"{path}: a {manifest.get('task')} run, not a language-model "
                          "fine-tune")
    cfg = load_lm_config_finetune(path)
    base = json.loads((path / "base.json").read_text(encoding="utf-8"))
    tok = load_tokenizer(path / "tokenizer")
    if cfg.lora:
        folder = Path(base["path"])
        if not folder.is_dir():
            raise RunDirError(f"{path}: its base model folder {folder} is gone (the adapter "
                              "needs it; dlforge lm finetune --merge writes a standalone folder)")
        if verify and folder_digest(folder) != base["sha256"]:
            raise RunDirError(f"{path}: the base model at {folder} changed since the fine-tune "
                              "(its weights' SHA-256 differs from base.json)")
        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = PeftModel.from_pretrained(load_model(folder), str(path / "adapter"))
        model = model.merge_and_unload()
    else:
        model = load_model(path / "model", tokenizer=False)  # the run's tokenizer/ is used
    return model.eval().to(device), tok, {"kind": "lora" if cfg.lora else "full",
                                          "path": str(path.resolve()), "base": base}


def load_lm_config_finetune(path: Path) -> FinetuneConfig:
    """The FinetuneConfig saved in run ``path``."""
    import yaml

    from dlforge.config.lm import finetune_config

    try:
        data = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path / 'config.yaml'}: unreadable ({err})") from None
    return finetune_config(data if isinstance(data, dict) else {}, str(path / "config.yaml"))


def greedy(model: Any, tok: Any, prompts: Sequence[str], max_new_tokens: int = 16
           ) -> list[list[int]]:
    """Greedy continuations (token ids) of ``prompts``, one at a time."""
    outs = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt")["input_ids"]
            gen = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
            outs.append(gen[0, ids.shape[1]:].tolist())
    return outs


def merge(run: str | Path, out: str | Path, overwrite: bool = False,
          prompts: Sequence[str] = ("Hello", "The capital of France is")) -> Path:
    """Write the LoRA run ``run`` merged into its base as a standalone model folder ``out``,
    verified to give the same greedy tokens as base + adapter."""
    run, out = Path(run), Path(out)
    cfg = load_lm_config_finetune(run)
    if not cfg.lora:
        raise ConfigError(f"{run}: a full fine-tune has no adapter to merge; its model/ "
                          "folder is already standalone")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise RunDirError(f"{out}: exists; pass --overwrite to replace it")
    base = json.loads((run / "base.json").read_text(encoding="utf-8"))
    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        adapted = PeftModel.from_pretrained(load_model(Path(base["path"])), str(run / "adapter"))
    tok = load_tokenizer(run / "tokenizer")
    want = greedy(adapted, tok, prompts)
    merged = adapted.merge_and_unload()
    with folder_into_place(out) as tmp:
        merged.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        got = greedy(load_model(tmp), tok, prompts)
        if got != want:
            raise RunDirError(f"{run}: the merged model's greedy tokens differ from base + "
                              "adapter; not written")
    return out
