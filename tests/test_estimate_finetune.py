"""dlforge estimate --lm-finetune: the fine-tune estimate against measurements of the real thing
on tiny random LLaMA / Qwen2 / GPT-2 folders: parameters, steps and tokens against a real
dlforge fine-tune; FLOPs against FlopCounterMode on the loop's own loss; activations against
the tensors autograd saves (saved-tensor hooks); gradients and AdamW states against the tensors
a real step makes. Timings are not asserted (a shared machine)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

pytest.importorskip("peft")
import torch  # noqa: E402
import transformers  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from dlforge.cli import main  # noqa: E402
from dlforge.config.lm import FinetuneConfig  # noqa: E402
from dlforge.errors import ConfigError  # noqa: E402
from dlforge.estimate import Batch, DataPlan, estimate_finetune  # noqa: E402
from dlforge.estimate.finetune import _flops, finetune_costs, lora_targets, read_shape  # noqa: E402
from dlforge.lm.finetune import finetune, supervised_loss  # noqa: E402
from dlforge.lm.sft import IGNORE, Encoded, collate  # noqa: E402
from dlforge.testing import tiny_causal_lm  # noqa: E402
from dlforge.train.device import autocast  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("estimate-finetune")
    out = {arch: tiny_causal_lm(root / arch, arch) for arch in ("llama", "qwen2", "gpt2")}
    rows = [{"messages": [{"role": "user", "content": f"what is {i} plus {i % 7}?"},
                          {"role": "assistant", "content": f"it is {i + i % 7}." * (1 + i % 3)}]}
            for i in range(30)]
    out["chats"] = root / "chats.jsonl"
    out["chats"].write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return out


def _plan(folder: Path, data: Path, **settings: object) -> tuple[FinetuneConfig, DataPlan]:
    from dlforge.cli.estimate import _finetune_plan
    from dlforge.config.lm import finetune_config

    cfg = finetune_config(settings)
    return cfg, _finetune_plan(folder, data, cfg)


def _model(folder: Path, cfg: FinetuneConfig, attn: str = "sdpa") -> torch.nn.Module:
    """The model as dlforge.lm.finetune prepares it."""
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, attn_implementation=attn)
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        targets = sorted(set(lora_targets(read_shape(folder), cfg.target_modules)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, LoraConfig(
                r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                target_modules=targets, task_type="CAUSAL_LM", bias="none"))
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})
        if cfg.lora:
            model.enable_input_require_grads()
    return model.train()


def _batch(lengths: list[int], packed: bool = False) -> tuple[dict, Batch]:
    """A batch as dlforge.lm.sft collates one (half of each example supervised), and its
    shape as the estimate sees it."""
    encs = [Encoded(list(range(5, 5 + n)), [IGNORE] * (n // 2) + list(range(5 + n // 2, 5 + n)))
            for n in lengths]
    batch = collate([encs] if packed else [[e] for e in encs], 0)
    rows, width = batch["input_ids"].shape
    real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else rows * width
    return batch, Batch(rows, width, real, int((batch["labels"] != IGNORE).sum()),
                        packed or real < rows * width)


SETTINGS = {"lora": {}, "full": {"lora": False},
            "lora-ckpt": {"gradient_checkpointing": True},
            "full-ckpt": {"lora": False, "gradient_checkpointing": True},
            "all-linear": {"target_modules": "all-linear", "lora_r": 4}}


# ---------------------------------------------------- against a real fine-tune of the model
@pytest.mark.parametrize("settings", [{}, {"lora": False, "gradient_checkpointing": True,
                                           "packing": True, "batch_size": 4}])
def test_counts_match_a_real_finetune(folders: dict[str, Path], tmp_path: Path,
                                      settings: dict) -> None:
    """Parameters (total, trained), sequences, steps and tokens seen: the estimate's plan of
    the data is the loop's."""
    cfg, plan = _plan(folders["llama"], folders["chats"], **settings)
    r = estimate_finetune(folders["llama"], cfg, plan)
    run = cfg.model_copy(update={"max_steps": 2})
    m = finetune(folders["llama"], folders["chats"], tmp_path / "run", run, verbose=0)
    assert r["parameters"]["total"] == m["parameters"]
    assert r["parameters"]["trained"] == m["trained_parameters"]
    assert r["data"]["sequences"] == m["train_sequences"]
    assert r["data"]["val_sequences"] == m["val_sequences"]
    assert r["data"]["optimizer_steps"] == len(plan.train) > 2 == m["steps"]
    seen = round(m["tokens_per_second"] * m["seconds"])
    assert seen == sum(b.tokens for b in plan.train[:2])  # tokens, not padding
    assert r["method"] == ("lora" if cfg.lora else "full")


# ------------------------------------------------------------------------------------ FLOPs
@pytest.mark.parametrize(("arch", "name", "packed"), [
    ("llama", "lora", False), ("llama", "lora-ckpt", False), ("llama", "full-ckpt", True),
    ("llama", "all-linear", True), ("gpt2", "full", False), ("gpt2", "lora-ckpt", True)])
def test_flops_equal_flop_counter(folders: dict[str, Path], arch: str, name: str,
                                  packed: bool) -> None:
    """Forward and forward + backward (+ checkpointing's recomputation) of the loop's own loss
    (logits at supervised positions only) equal FlopCounterMode's count. Attention is eager
    here: FlopCounterMode gives the CPU's flash kernel no FLOPs."""
    cfg = FinetuneConfig(**SETTINGS[name])
    batch, b = _batch([30, 34] if packed else [40, 33, 20, 38], packed)
    shape = read_shape(folders[arch])
    adapters = {t: cfg.lora_r for t in lora_targets(shape, cfg.target_modules)}
    want = _flops(shape, not cfg.lora, adapters if cfg.lora else {}, b,
                  cfg.gradient_checkpointing)
    model = _model(folders[arch], cfg, attn="eager")
    with FlopCounterMode(display=False) as fc:
        supervised_loss(model, batch)
    assert fc.get_total_flops() == want["forward"]
    with FlopCounterMode(display=False) as fc:
        supervised_loss(model, batch)[0].backward()
    assert fc.get_total_flops() == want["forward"] + want["backward"] + want["recompute"]


# ----------------------------------------------------------------------------------- memory
def _saved_bytes(model: torch.nn.Module, batch: dict, precision: str) -> int:
    """Bytes of the tensors autograd keeps for the backward pass over the loop's loss (each
    storage once; the model's own parameters left out)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = t.untyped_storage().data_ptr()
        if key not in params:
            seen[key] = max(seen.get(key, 0), t.untyped_storage().nbytes())
        return t

    with (torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
          autocast(torch.device("cpu"), precision)):
        supervised_loss(model, batch)
    return sum(seen.values())


PADDED, FULL_ROWS = [40, 33, 20, 38], [40, 40, 40, 40]


@pytest.mark.parametrize(("name", "precision", "lengths"), [
    ("lora", "fp32", PADDED), ("lora", "bf16", PADDED), ("full", "fp32", FULL_ROWS),
    ("full", "bf16", PADDED), ("lora-ckpt", "bf16", PADDED), ("full-ckpt", "fp32", PADDED),
    ("all-linear", "fp32", PADDED), ("all-linear", "bf16", FULL_ROWS)])
def test_saved_activations_match_the_formula(folders: dict[str, Path], name: str,
                                             precision: str, lengths: list[int]) -> None:
    """What a step keeps for its backward pass (activations, log-probabilities, bf16
    autocast's weight copies; with checkpointing, each layer's input) against the formula:
    within 3% (exact with checkpointing)."""
    cfg = FinetuneConfig(**SETTINGS[name])
    batch, b = _batch(lengths)
    want = finetune_costs(read_shape(folders["llama"]), cfg, DataPlan([b]), precision)
    got = _saved_bytes(_model(folders["llama"], cfg), batch, precision)
    assert got == pytest.approx(want["memory"]["saved_for_backward"],
                                rel=1e-4 if cfg.gradient_checkpointing else 0.03)


def test_qwen2_is_counted_as_the_llama_family(folders: dict[str, Path]) -> None:
    shape = read_shape(folders["qwen2"])
    assert shape.llama and shape.model_type == "qwen2"
    cfg = FinetuneConfig()
    batch, b = _batch([40, 33, 20, 38])
    want = finetune_costs(shape, cfg, DataPlan([b]), "fp32")["memory"]["saved_for_backward"]
    assert _saved_bytes(_model(folders["qwen2"], cfg), batch, "fp32") == pytest.approx(
        want, rel=0.03)


@pytest.mark.parametrize("name", ["lora", "full"])
def test_weights_gradients_and_adamw_states_are_exact(folders: dict[str, Path],
                                                      name: str) -> None:
    from dlforge.train.trainer import adamw

    cfg = FinetuneConfig(**SETTINGS[name])
    batch, b = _batch([40, 33])
    want = finetune_costs(read_shape(folders["llama"]), cfg, DataPlan([b]), "fp32")["memory"]
    model = _model(folders["llama"], cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw([(params, 1e-3)], 0.0)
    supervised_loss(model, batch)[0].backward()
    assert want["weights"] == sum(p.numel() * p.element_size() for p in model.parameters())
    assert want["gradients"] == sum(p.grad.numel() * p.grad.element_size() for p in params)
    opt.step()
    states = sum(t.numel() * t.element_size() for s in opt.state.values()
                 for k, t in s.items() if k != "step")
    assert want["optimizer_states"] == states


def test_full_vs_lora_vs_checkpointing(folders: dict[str, Path]) -> None:
    """The four settings side by side, for the largest batch of the data."""
    cfg, plan = _plan(folders["llama"], folders["chats"], max_length=64)
    r = estimate_finetune(folders["llama"], cfg, plan)
    c = r["memory_compare"]
    assert c["lora"] == r["memory"]["total"]
    assert c["full"] > c["lora"] > c["lora+checkpointing"]
    assert c["full"] > c["full+checkpointing"]
    m = r["memory"]
    assert m["gradients"] == 4 * r["parameters"]["trained"]
    assert m["optimizer_states"] == 8 * r["parameters"]["trained"]
    rows, length = r["memory"]["batch"]
    assert rows <= cfg.batch_size and length <= 64
    f = r["flops"]
    assert f["per_epoch"] == f["forward"] + f["backward"] + f["recompute"] and not f["recompute"]
    full = estimate_finetune(folders["llama"], cfg.model_copy(update={"lora": False}), plan)
    assert full["flops"]["backward"] > f["backward"]  # weight gradients of every layer
    assert r["time"]["seconds_per_epoch"] == pytest.approx(f["per_epoch"]
                                                           / r["time"]["flops_per_s"])


def test_gpt2_is_estimated_and_says_how(folders: dict[str, Path]) -> None:
    cfg, plan = _plan(folders["gpt2"], folders["chats"])
    r = estimate_finetune(folders["gpt2"], cfg, plan)
    assert r["lora"]["target_modules"] == ["c_attn"]
    assert "approximate" in r["model"]["activations"]
    assert r["memory"]["total"] > r["memory"]["weights"] > 0


def test_without_data_a_full_batch_is_assumed(folders: dict[str, Path]) -> None:
    r = estimate_finetune(folders["llama"], FinetuneConfig(batch_size=2, max_length=32))
    assert tuple(r["data"]["largest_batch"]) == (2, 32)
    assert r["data"]["padded_tokens"] == 64


def test_measured_steps_give_the_rate(folders: dict[str, Path]) -> None:
    cfg, plan = _plan(folders["llama"], folders["chats"])
    r = estimate_finetune(folders["llama"], cfg, plan, steps=2)
    me = r["time"]["measured"]
    assert me["steps_timed"] == 2 and me["achieved_flops_per_s"] > 0
    assert r["time"]["flops_per_s"] == me["achieved_flops_per_s"]
    assert "real steps" in r["time"]["how"]


# --------------------------------------------------------------------------------------- CLI
def test_cli_lm_finetune(folders: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = ["estimate", "--lm-finetune", str(folders["llama"]), "--data",
            str(folders["chats"]), "--gradient-checkpointing", "--batch-size", "4"]
    assert main(args + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["settings"]["gradient_checkpointing"] and r["settings"]["batch_size"] == 4
    assert set(r["faq"]) == {"parameters", "memory", "time"}
    assert main([*args, "--full"]) == 0
    out = capsys.readouterr().out
    assert "How much memory?" in out and "per epoch" in out and "full, checkpointing" in out


@pytest.mark.parametrize(("args", "needle"), [
    (["--lora-r", "8"], "describe a fine-tune: give --lm-finetune"),
    (["gpt2-small", "--lm-finetune", "{llama}"], "SOURCE do not apply"),
    (["--lm-finetune", "{llama}", "--target-modules", "nope"], "nope matches no linear layer"),
    (["--lm-finetune", "{llama}", "--max-length", "4096"], "above the model's context"),
    (["--lm-finetune", "{llama}", "--lora-r", "0"], "lora_r"),
    (["--lm-finetune", "{chats}"], "config.json is missing"),
    (["--lm-finetune", "{llama}", "--data", "{missing}"], "no such file"),
])
def test_bad_input_is_one_line(folders: dict[str, Path], tmp_path: Path,
                               capsys: pytest.CaptureFixture[str], args: list[str],
                               needle: str) -> None:
    paths = {"llama": folders["llama"], "chats": folders["chats"].parent,
             "missing": tmp_path / "missing.jsonl"}
    assert main(["estimate", *(a.format(**paths) for a in args)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and needle in err, err


def test_encoder_is_refused(tmp_path: Path) -> None:
    cfg = transformers.BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=32, vocab_size=50)
    cfg.architectures = ["BertForMaskedLM"]
    cfg.save_pretrained(str(tmp_path))
    with pytest.raises(ConfigError, match="BertForMaskedLM is not a causal language model"):
        read_shape(tmp_path)
