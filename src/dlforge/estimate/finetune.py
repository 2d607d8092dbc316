"""What fine-tuning a pretrained causal LM costs, before it starts (``dlforge estimate
--lm-finetune FOLDER``): parameters total and trained, memory of weights, gradients, AdamW states,
activations and logits (full vs LoRA, with and without gradient checkpointing), FLOPs and time
per epoch on this machine. Every formula and its source: docs/estimate.md ("Fine-tuning a
pretrained language model").

The model's shape comes from its folder's ``config.json``, built on PyTorch's ``meta`` device (no
weights read, no memory); the data's from a :class:`DataPlan`: one epoch's batches as dlforge's
fine-tuning loop forms them (``dlforge estimate`` builds it from ``--data`` with the loop's own
tokenizing and batching). The loop computes logits only at supervised positions, so the head's
FLOPs and the logits' memory scale with the supervised tokens, not with every token.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlforge.config.lm import FinetuneConfig
from dlforge.errors import ConfigError, RunDirError
from dlforge.estimate.arch import Arch
from dlforge.estimate.counts import activation_bytes_layer

__all__ = ["Batch", "DataPlan", "Shape", "finetune_costs", "lora_targets", "read_shape"]

# The LLaMA family's layer (LLaMA, Mistral, Qwen2, SmolLM2): counted term by term.
LLAMA_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FP32 = 4  # weights, gradients and AdamW's moments stay fp32 (bf16 runs use autocast)


@dataclass(frozen=True)
class Batch:
    """One training (or validation) batch: ``rows`` x ``length`` tokens after padding,
    ``tokens`` of them real, ``supervised`` with a label; ``masked``: an attention mask reaches
    the attention kernel (padding, or packed examples)."""

    rows: int
    length: int
    tokens: int
    supervised: int
    masked: bool


@dataclass
class DataPlan:
    """One epoch of a fine-tune's data: its training and validation batches."""

    train: list[Batch]
    val: list[Batch] = field(default_factory=list)
    sequences: int = 0
    val_sequences: int = 0
    source: str = ""
    examples_cut: int = 0

    @classmethod
    def uniform(cls, batch_size: int, length: int, batches: int = 1) -> DataPlan:
        """``batches`` full batches of ``batch_size`` x ``length`` tokens, every token
        supervised: the worst case a step can meet, for an estimate without data."""
        b = Batch(batch_size, length, batch_size * length, batch_size * (length - 1), False)
        return cls([b] * batches, sequences=batch_size * batches, source="no data: full rows")


@dataclass(frozen=True)
class Shape:
    """A causal LM's sizes, read from its config.json on the meta device."""

    name: str
    model_type: str
    architecture: str
    layers: int
    hidden: int
    heads: int
    vocab: int
    context: int
    tied: bool
    params: int  # every weight, tied ones once
    layer_linears: tuple[tuple[str, int, int], ...]  # (name in the layer, in, out)
    llama: bool  # the LLaMA family's layer (RMSNorm, SwiGLU): counted term by term
    dropout: bool  # dropout inside the layers (GPT-2's 0.1)
    ffn: int

    def linear(self, suffix: str) -> tuple[str, int, int]:
        return next(x for x in self.layer_linears if x[0].endswith(suffix))

    @property
    def hq(self) -> int:  # query width: heads x head_dim
        return self.linear("q_proj")[2] if self.llama else self.hidden

    @property
    def dkv(self) -> int:  # key (and value) width: kv_heads x head_dim
        return self.linear("k_proj")[2] if self.llama else self.hidden

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model_type": self.model_type,
                "architecture": self.architecture, "layers": self.layers,
                "hidden": self.hidden, "heads": self.heads, "query_width": self.hq,
                "kv_width": self.dkv, "ffn": self.ffn, "vocab": self.vocab,
                "context": self.context, "tied": self.tied,
                "activations": "counted term by term (LLaMA family)" if self.llama else
                "Korthikanti et al. 2022's formula: approximate for this architecture"}


def read_shape(folder: Path) -> Shape:
    """The model in ``folder`` (its config.json), built on the meta device: exact parameter
    counts and every linear layer's size, without reading a weight."""
    import torch

    from dlforge._extras import require

    transformers = require("transformers", "llm", "dlforge estimate --lm-finetune")
    folder = Path(folder)
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise RunDirError(f"{folder}: not a model folder: config.json is missing (--lm-finetune "
                          "takes a Hugging Face folder; import a .gguf with dlforge lm import)")
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise RunDirError(f"{cfg_file}: unreadable ({str(err).splitlines()[0]})") from None
    mapping = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    archs = raw.get("architectures") or []
    if (config.model_type not in mapping or getattr(config, "is_encoder_decoder", False)
            or (archs and not any(a in set(mapping.values()) for a in archs))):
        what = ", ".join(archs) or f"model_type {config.model_type!r}"
        raise ConfigError(f"{folder}: {what} is not a causal language model; --lm-finetune "
                          "takes a decoder such as LLaMA, Qwen2 or GPT-2")
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    n_layers = config.num_hidden_layers
    blocks = next((m for m in model.modules()
                   if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers), None)
    if blocks is None or not n_layers:
        raise ConfigError(f"{folder}: cannot find the {n_layers} decoder layers of "
                          f"{type(model).__name__}; --lm-finetune does not know this layout")
    linears = tuple((n, *_in_out(m)) for n, m in blocks[0].named_modules() if _is_linear(m))
    norms = [type(m).__name__ for m in blocks[0].modules() if "Norm" in type(m).__name__]
    names = {n.rsplit(".", 1)[-1] for n, _, _ in linears}
    llama = (names == set(LLAMA_LINEARS) and len(norms) == 2
             and all("RMSNorm" in n for n in norms))
    head = model.get_output_embeddings()
    dropout = any(float(getattr(config, k, 0) or 0) > 0 for k in (
        "resid_pdrop", "attn_pdrop", "hidden_dropout", "attention_dropout", "dropout"))
    ffn = (next(o for n, _, o in linears if n.endswith(("gate_proj", "c_fc", "fc1", "up_proj")))
           if linears else 4 * config.hidden_size)
    return Shape(
        name=folder.name, model_type=config.model_type,
        architecture=(raw.get("architectures") or [type(model).__name__])[0],
        layers=n_layers, hidden=config.hidden_size, heads=config.num_attention_heads,
        vocab=head.weight.shape[0], tied=head.weight is model.get_input_embeddings().weight,
        context=int(getattr(config, "max_position_embeddings", 0)
                    or getattr(config, "n_positions", 0) or 0),
        params=sum(p.numel() for p in model.parameters()), layer_linears=linears,
        llama=llama, dropout=dropout, ffn=ffn)


def _is_linear(m: Any) -> bool:
    import torch

    return isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"


def _in_out(m: Any) -> tuple[int, int]:
    w = m.weight.shape  # Linear: (out, in); GPT-2's Conv1D: (in, out)
    return (w[1], w[0]) if type(m).__name__ != "Conv1D" else (w[0], w[1])


def lora_targets(shape: Shape, wanted: str | list[str]) -> list[str]:
    """The layer linears LoRA adapts, as ``dlforge lm finetune`` chooses them: ``auto`` is
    PEFT's choice for the architecture (else every linear layer), ``all-linear`` every linear
    layer but the output head, a list is matched by module name (a name matching nothing is an
    error listing the linear layers)."""
    every = [n for n, _, _ in shape.layer_linears]
    if wanted == "auto":
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        known = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(shape.model_type)
        wanted = list(known) if known else "all-linear"
    if wanted == "all-linear":
        return every
    asked = [wanted] if isinstance(wanted, str) else list(wanted)
    asked = [x.strip() for part in asked for x in part.split(",") if x.strip()]
    missing = [x for x in asked if not any(n == x or n.endswith("." + x) for n in every)]
    if missing:
        leaves = sorted({n.rsplit(".", 1)[-1] for n in every})
        raise ConfigError(f"--target-modules: {', '.join(missing)} matches no linear layer of "
                          f"this model's blocks; they are: {', '.join(leaves)} (or auto, "
                          "all-linear)")
    return [n for n in every if any(n == x or n.endswith("." + x) for x in asked)]


# ------------------------------------------------------------------------------------ FLOPs
def _groups(shape: Shape) -> list[tuple[str, ...]]:
    """The layer's linears grouped by the input they read, in order."""
    if shape.llama:
        names = {n.rsplit(".", 1)[-1]: n for n, _, _ in shape.layer_linears}
        return [tuple(names[k] for k in g) for g in (("q_proj", "k_proj", "v_proj"),
                                                     ("o_proj",), ("gate_proj", "up_proj"),
                                                     ("down_proj",))]
    return [(n,) for n, _, _ in shape.layer_linears]


def _flops(shape: Shape, full: bool, adapters: dict[str, int], b: Batch, ckpt: bool
           ) -> dict[str, float]:
    """Forward, backward and recomputed FLOPs (2 x multiply-adds) of one training step on
    batch ``b`` (equal to FlopCounterMode's count: tests/test_estimate_finetune.py).

    Backward: a frozen weight's product needs only its input's gradient (1 x the forward), a
    trained one also its weight's (2 x: Kaplan et al. 2020, Sec. 2.1); skipping the frozen
    weights' gradients is LoRA's saving (Hu et al. 2021, Sec. 4.2), whose adapters train. Below
    the first adapter of a LoRA run no activation needs a gradient (unless checkpointing asks
    for the embeddings' gradient, as dlforge's loop does). Checkpointing recomputes each layer's
    forward, but PyTorch stops the recomputation once the last tensor the backward needs is
    rebuilt: the layer's last product (or its adapter's) is not recomputed (where no dropout
    follows it)."""
    tok = float(b.rows * b.length)
    sizes = {n: (i, o) for n, i, o in shape.layer_linears}
    half = 2.0 * b.rows * b.length ** 2 * shape.hq  # Q·Kᵀ, or P·V, over the full T x T
    fwd = bwd = 0.0
    needs = full or ckpt  # does the activation at this point need a gradient?
    for _ in range(shape.layers):
        for i, group in enumerate(_groups(shape)):
            for name in group:
                n_in, n_out = sizes[name]
                base = 2.0 * tok * n_in * n_out
                fwd += base
                bwd += (base if full else 0.0) + (base if needs else 0.0)
                r = adapters.get(name)
                if r:
                    a, bb = 2.0 * tok * n_in * r, 2.0 * tok * r * n_out
                    fwd += a + bb
                    bwd += a + 2 * bb + (a if needs else 0.0)
            if i == 0:  # attention follows the first group (q, k, v; GPT-2's c_attn)
                parts = group if len(group) == 3 else group * 3  # GPT-2: one c_attn
                q, k, v = (needs or parts[j] in adapters for j in range(3))
                fwd += 2 * half
                bwd += half * (q + k + (q or k) + v)  # dQ, dK, d(softmax), dV
            needs = needs or any(n in adapters for n in group)
    last, (n_in, n_out) = shape.layer_linears[-1][0], shape.layer_linears[-1][1:]
    # (a dropout after it, as in GPT-2, keeps a mask: then the whole layer is recomputed)
    skipped = 0.0 if shape.dropout else 2.0 * tok * adapters.get(last, n_in) * n_out
    head = 2.0 * b.supervised * shape.hidden * shape.vocab  # logits at supervised positions
    return {"forward": fwd + head, "backward": bwd + head * (2 if full else 1),
            "recompute": fwd - shape.layers * skipped if ckpt else 0.0}


# ----------------------------------------------------------------------------------- memory
def _llama_layer(shape: Shape, full: bool, adapters: dict[str, int], p: int, mask_bytes: int,
                 masked: bool, needs: bool, lora_dropout: bool) -> tuple[float, bool]:
    """Bytes per token one LLaMA-family layer keeps for the backward pass, as the Hugging Face
    implementation does (measured with saved-tensor hooks in tests/test_estimate_finetune.py):
    Korthikanti et al. 2022's count (Sec. 4.1), with RMSNorm keeping its input and (weight
    trained) its normalised output in fp32, SDPA keeping Q, K, V, its output and the
    log-sum-exp (no T x T matrix; K and V repeated to every query head when a mask is passed),
    SwiGLU keeping gate, SiLU(gate) and up (and the product for a trained down projection);
    a frozen projection keeps nothing for its weight; under bf16 autocast each projection keeps
    its own 16-bit copy of an fp32 input. Returns the bytes and whether gradients flow out."""
    h, hq, f, heads = shape.hidden, shape.hq, shape.ffn, shape.heads
    kv = hq if masked and shape.dkv != hq else shape.dkv
    auto = p != FP32
    total = 0.0

    def norm(needs: bool) -> float:
        return (FP32 * h + 4 if needs else 0) + (FP32 * h if full else 0)

    def group(names: tuple[str, ...], n_in: int, x_bytes: int, x_counted: bool,
              needs: bool) -> float:
        """What a group of projections reading one input ``x`` keeps, and its adapters."""
        out = 0.0
        if full:  # each trained weight needs x (autocast: its own 16-bit copy)
            if auto and x_bytes == FP32:
                out += len(names) * p * n_in
            elif not x_counted:
                out, x_counted = out + x_bytes * n_in, True
        for name in names:
            r = adapters.get(name)
            if not r:
                continue
            if lora_dropout:  # PEFT casts x to the adapter's fp32 before its dropout
                out += (mask_bytes or FP32) * n_in if needs else 0  # dropout's mask
                out += (p if auto else FP32) * n_in  # A's input: x dropped (cast)
            elif auto and x_bytes == FP32:
                out += p * n_in
            elif not x_counted:
                out, x_counted = out + x_bytes * n_in, True
            out += p * r  # B's input
        return out

    full_names = {n.rsplit(".", 1)[-1]: n for n, _, _ in shape.layer_linears}
    names = {k: full_names[k] for k in LLAMA_LINEARS}
    adapted = {k: names[k] in adapters for k in LLAMA_LINEARS}
    total += norm(needs)
    total += group((names["q_proj"], names["k_proj"], names["v_proj"]), h, FP32, False, needs)
    needs = needs or adapted["q_proj"] or adapted["k_proj"] or adapted["v_proj"]
    if needs:  # SDPA: Q, K, V, output, log-sum-exp per head
        total += p * (2 * hq + 2 * kv) + 4 * heads
    total += group((names["o_proj"],), hq, p, True, needs)
    needs = needs or adapted["o_proj"]
    total += norm(needs)
    total += group((names["gate_proj"], names["up_proj"]), h, FP32, False, needs)
    gate, up = needs or adapted["gate_proj"], needs or adapted["up_proj"]
    # SiLU keeps its input and the product keeps up (for a gate needing a gradient), the
    # product keeps SiLU(gate) (for an up needing one)
    total += p * f * (2 * gate + up)
    needs = gate or up
    total += group((names["down_proj"],), f, p, False, needs)
    return total, needs or adapted["down_proj"]


def _per_token_layers(shape: Shape, full: bool, adapters: dict[str, int], p: int, cuda: bool,
                      ckpt: bool, lora_dropout: bool, masked: bool) -> list[float]:
    """Bytes per token each LLaMA-family layer keeps for the backward pass (without
    checkpointing); empty for other architectures (counted per batch, see _batch_memory)."""
    if not shape.llama:
        return []
    out, needs = [], full or ckpt
    for _ in range(shape.layers):
        n, needs = _llama_layer(shape, full, adapters, p, 1 if cuda else 0, masked, needs,
                                lora_dropout)
        out.append(n)
    return out


def _weight_copies(shape: Shape, full: bool, adapters: dict[str, int], ckpt: bool
                   ) -> tuple[float, float]:
    """bf16 autocast keeps a 16-bit copy of each weight whose product is differentiated (the
    head's too), 2 bytes a weight: (kept through the forward, at the peak). With
    checkpointing only the head's is kept, and one layer's while it is rebuilt."""
    sizes = {n: (i, o) for n, i, o in shape.layer_linears}
    needs, layers = full or ckpt, []
    for _ in range(shape.layers):
        layer = 0.0
        for group in _groups(shape):
            for name in group:
                n_in, n_out = sizes[name]
                if full or needs:
                    layer += 2.0 * n_in * n_out
                if name in adapters:
                    layer += 2.0 * adapters[name] * (n_in + n_out)
            needs = needs or any(n in adapters for n in group)
        layers.append(layer)
    head = 2.0 * shape.vocab * shape.hidden
    if ckpt:
        return head, head + max(layers)
    return head + sum(layers), head + sum(layers)


def _batch_memory(shape: Shape, b: Batch, layers: dict[bool, list[float]], full: bool,
                  p: int, ckpt: bool) -> dict[str, float]:
    """Activation and logits bytes of one batch."""
    tok = b.rows * b.length
    if shape.llama:
        per = layers[b.masked]
        mask = FP32 * b.rows * b.length ** 2 if b.masked else 0.0  # the 4-D attention mask
    else:  # Korthikanti et al. 2022, Sec. 4.1, at this length (T x T terms where not flash)
        arch = Arch(layers=1, d_model=shape.hidden, heads=shape.heads, vocab=shape.vocab,
                    context=max(shape.context, b.length), ffn=shape.ffn)
        layer = activation_bytes_layer(arch, b.length, p, shape.dropout,
                                       flash=not shape.dropout)
        per, mask = [layer / b.length] * shape.layers, 0.0
    if ckpt:  # each layer keeps its input; one layer is rebuilt at a time (Korthikanti 4.2)
        kept, rebuilt = shape.layers * FP32 * shape.hidden * tok, max(per) * tok + mask
    else:
        kept, rebuilt = sum(per) * tok + shape.layers * mask, 0.0
    outside = tok * ((8 if full else 0)  # the token ids, for the embedding's gradient
                     + FP32 * shape.hidden + 4 + (FP32 * shape.hidden if full else 0)  # norm
                     + 1)  # where the labels are (the gather's mask)
    outside += b.supervised * ((p * shape.hidden if full else 0) + 8)  # head input, targets
    log_probs = FP32 * b.supervised * shape.vocab
    # log-probabilities, their gradient and the logits' gradient (+ its 16-bit copy)
    logits = b.supervised * shape.vocab * (3 * FP32 + (p if p != FP32 else 0))
    return {"layers": kept, "rebuilt": rebuilt, "outside": outside, "log_probs": log_probs,
            "logits": logits}


def finetune_costs(shape: Shape, cfg: FinetuneConfig, plan: DataPlan, precision: str,
                   device: str = "cpu") -> dict[str, Any]:
    """Parameters, FLOPs per epoch and peak memory of fine-tuning ``shape`` with ``cfg`` on
    ``plan``; memory also for the three other settings (full / LoRA x checkpointing)."""
    if not plan.train:
        raise ConfigError("no training batch: the data has no example left for training")
    p = 2 if precision == "bf16" else FP32
    try:  # LoRA's modules, for a LoRA run and for the comparison with one
        targets = lora_targets(shape, cfg.target_modules)
    except ImportError:  # "auto" asks PEFT; a full run without it is compared with none
        if cfg.lora:
            raise
        targets = []
    lora_adapters = {n: cfg.lora_r for n in targets}
    adapters = lora_adapters if cfg.lora else {}
    sizes = {n: (i, o) for n, i, o in shape.layer_linears}
    n_adapter = shape.layers * sum(cfg.lora_r * sum(sizes[n]) for n in targets)
    trained = n_adapter if cfg.lora else shape.params
    if cfg.lora and not n_adapter:
        raise ConfigError("LoRA adapts no layer of this model; name --target-modules")
    cuda = device.startswith("cuda")

    def memory(full: bool, ckpt: bool) -> dict[str, Any]:
        ad = {} if full else lora_adapters
        layers = {m: _per_token_layers(shape, full, ad, p, cuda, ckpt, cfg.lora_dropout > 0, m)
                  for m in (False, True)}
        per_batch = [(_batch_memory(shape, b, layers, full, p, ckpt), b) for b in plan.train]
        worst, wb = max(per_batch, key=lambda mb: mb[0]["layers"] + mb[0]["rebuilt"]
                        + mb[0]["outside"] + mb[0]["logits"])
        n_tr = shape.params if full else n_adapter
        kept_copies, copies = (_weight_copies(shape, full, ad, ckpt) if p != FP32
                               else (0.0, 0.0))
        out = {"weights": FP32 * (shape.params + (0 if full else n_adapter)),
               "gradients": FP32 * n_tr, "optimizer_states": 2 * FP32 * n_tr,
               "activations": worst["layers"] + worst["rebuilt"] + worst["outside"],
               "logits": worst["logits"], "autocast_weight_copies": copies}
        out["total"] = sum(out.values())
        out["saved_for_backward"] = (worst["layers"] + worst["outside"] + worst["log_probs"]
                                     + kept_copies)
        out["batch"] = [wb.rows, wb.length]  # the batch that needs the most
        return out

    chosen = memory(not cfg.lora, cfg.gradient_checkpointing)
    compare = {f"{'full' if full else 'lora'}{'+checkpointing' if ck else ''}":
               memory(full, ck)["total"]
               for full in (True, False) for ck in (False, True) if full or targets}
    steps = [_flops(shape, not cfg.lora, adapters, b, cfg.gradient_checkpointing)
             for b in plan.train]
    fwd = sum(s["forward"] for s in steps)
    bwd = sum(s["backward"] for s in steps)
    rec = sum(s["recompute"] for s in steps)
    val = sum(_flops(shape, not cfg.lora, adapters, b, False)["forward"] for b in plan.val)
    tokens = sum(b.tokens for b in plan.train)
    padded = sum(b.rows * b.length for b in plan.train)
    n = shape.params + (n_adapter if cfg.lora else 0)
    return {
        "parameters": {"total": n, "base": shape.params, "adapters": n_adapter,
                       "trained": trained, "trained_share": trained / n},
        "lora": ({"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                  "target_modules": sorted({t.rsplit(".", 1)[-1] for t in targets}),
                  "modules": len(targets) * shape.layers} if cfg.lora else None),
        "data": {"source": plan.source, "sequences": plan.sequences,
                 "val_sequences": plan.val_sequences, "examples_cut": plan.examples_cut,
                 "batches": len(plan.train),
                 "optimizer_steps": -(-len(plan.train) // cfg.accumulate),
                 "tokens": tokens, "padded_tokens": padded,
                 "supervised_tokens": sum(b.supervised for b in plan.train),
                 "largest_batch": max((b.rows * b.length, b.rows, b.length)
                                      for b in plan.train)[1:]},
        "flops": {"forward": fwd, "backward": bwd, "recompute": rec,
                  "per_epoch": fwd + bwd + rec, "validation": 2 * val,
                  "rule_of_thumb": (4.0 if cfg.lora else 6.0) * shape.params * padded,
                  "rule": "4·N·tokens (LoRA)" if cfg.lora else "6·N·tokens (full)"},
        "memory": chosen,
        "memory_compare": compare,
    }
