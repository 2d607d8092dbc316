"""Fine-tuning pretrained causal LMs (dlforge.lm.finetune, sft, hf; PretrainedLM; dlforge lm
finetune / merge / eval / generate / chat): tiny random LLaMA / Qwen2 / GPT-2 folders made with
transformers' config classes, a few optimiser steps."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("peft")
import torch  # noqa: E402

from dlforge import DataError, LanguageModel, PretrainedLM  # noqa: E402
from dlforge.cli import main  # noqa: E402
from dlforge.config.lm import FinetuneConfig  # noqa: E402
from dlforge.errors import ConfigError, RunDirError  # noqa: E402
from dlforge.lm.finetune import finetune, greedy, supervised_loss  # noqa: E402
from dlforge.lm.hf import import_gguf, load_model, load_tokenizer  # noqa: E402
from dlforge.lm.sft import IGNORE, collate, encode, read_examples  # noqa: E402
from dlforge.testing import tiny_causal_lm  # noqa: E402

CHAT = {"messages": [{"role": "system", "content": "be brief"},
                     {"role": "user", "content": "what is the capital of france?"},
                     {"role": "assistant", "content": "paris."},
                     {"role": "user", "content": "and 1 plus 1?"},
                     {"role": "assistant", "content": "2"}]}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("causal")
    out = {arch: tiny_causal_lm(root / arch, arch) for arch in ("llama", "qwen2", "gpt2")}
    out["plain"] = tiny_causal_lm(root / "plain", "llama", chat_template=False)
    rows = [{"messages": [{"role": "user", "content": f"what is {i} plus 1?"},
                          {"role": "assistant", "content": f"it is {i + 1}."}]}
            for i in range(24)]
    data = root / "chats.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out["chats"] = data
    return out


@pytest.fixture(scope="module")
def lora_run(folders: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lora"
    finetune(folders["llama"], folders["chats"], out,
             FinetuneConfig(max_steps=4, lr=5e-3, batch_size=4), verbose=0)
    return out


def _main(args: list[object]) -> int:
    return main([str(a) for a in args])


def _jsonl(path: Path, *rows: object) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n",
                    encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ the labels
def test_only_assistant_turns_are_supervised(folders: dict[str, Path]) -> None:
    tok = load_tokenizer(folders["llama"])
    [enc], cut = encode([CHAT], tok, 256)
    assert cut == 0
    supervised = tok.decode([t for t, lab in zip(enc.ids, enc.labels, strict=True)
                             if lab != IGNORE])
    assert supervised == "paris.<|im_end|>\n2<|im_end|>\n"
    # the whole conversation is the template's rendering, token for token
    assert enc.ids == tok(tok.apply_chat_template(CHAT["messages"], tokenize=False),
                          add_special_tokens=False)["input_ids"]


def test_prompt_completion_and_text_labels(folders: dict[str, Path]) -> None:
    tok = load_tokenizer(folders["llama"])
    (pc, txt), _ = encode([{"prompt": "hello, how are", "completion": " you?"},
                           {"text": "the lazy dog"}], tok, 64)
    assert tok.decode([t for t, lab in zip(pc.ids, pc.labels, strict=True)
                       if lab != IGNORE]) == " you?<|im_end|>"
    assert txt.labels == txt.ids
    (pc_all,), _ = encode([{"prompt": "hello", "completion": " you"}], tok, 64,
                          completion_only=False)
    assert IGNORE not in pc_all.labels


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_packed_examples_do_not_attend_to_each_other(folders: dict[str, Path],
                                                     arch: str) -> None:
    tok, model = load_tokenizer(folders[arch]), load_model(folders[arch])
    enc, _ = encode([CHAT, {"prompt": "hello, how are", "completion": " you? i am fine"},
                     {"text": "the quick brown fox jumps over the lazy dog."}], tok, 128)
    with torch.no_grad():
        packed, n, _ = supervised_loss(model, collate([enc], tok.pad_token_id))
        alone = [supervised_loss(model, collate([[e]], tok.pad_token_id)) for e in enc]
        # control: the same row with positions running on (one sequence): the loss differs
        row = collate([enc], tok.pad_token_id)
        row["position_ids"] = torch.arange(row["input_ids"].shape[1])[None]
        leaky, _, _ = supervised_loss(model, row)
    assert n == sum(a[1] for a in alone)
    assert float(packed) == pytest.approx(sum(float(a[0]) for a in alone), rel=1e-4)
    assert abs(float(leaky) - float(packed)) > 1e-3


# ----------------------------------------------------------------------------- fine-tuning
def test_lora_run_learns_saves_and_loads(lora_run: Path, folders: dict[str, Path]) -> None:
    metrics = json.loads((lora_run / "metrics.json").read_text())
    assert metrics["val_after"]["loss"] < metrics["val_before"]["loss"]
    assert metrics["trained_parameters"] < metrics["parameters"]
    assert (lora_run / "adapter" / "adapter_model.safetensors").is_file()
    assert not list(lora_run.rglob("*.bin"))
    base = json.loads((lora_run / "base.json").read_text())
    assert base["path"] == str(folders["llama"].resolve()) and len(base["sha256"]) == 64
    assert "chat_template" in (lora_run / "tokenizer" / "tokenizer_config.json").read_text() \
        or (lora_run / "tokenizer" / "chat_template.jinja").is_file()
    lm = LanguageModel.load(lora_run)
    assert isinstance(lm, PretrainedLM)
    # the adapter changed the model: its greedy answer differs from the base's logits
    base_lm = PretrainedLM.load(folders["llama"])
    ids = lm.encode_prompt("what is 3 plus 1?")
    with torch.no_grad():
        a = lm.model(torch.tensor([ids])).logits
        b = base_lm.model(torch.tensor([ids])).logits
    assert not torch.allclose(a, b)


def test_same_seed_same_run(folders: dict[str, Path], lora_run: Path, tmp_path: Path) -> None:
    finetune(folders["llama"], folders["chats"], tmp_path / "again",
             FinetuneConfig(max_steps=4, lr=5e-3, batch_size=4), verbose=0)
    first = json.loads((lora_run / "metrics.json").read_text())["val_after"]
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())["val_after"]
    assert first == again


def test_merge_gives_the_same_greedy_tokens(lora_run: Path, tmp_path: Path) -> None:
    from dlforge.lm.finetune import merge

    folder = merge(lora_run, tmp_path / "merged")
    merged = PretrainedLM.load(folder)
    run = PretrainedLM.load(lora_run)
    prompts = ["what is 5 plus 1?", "hello"]
    assert greedy(merged.model, merged.tokenizer, prompts, 8) == greedy(
        run.model, run.tokenizer, prompts, 8)


def test_full_finetune_with_packing_and_checkpointing(folders: dict[str, Path],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "full"
    m = finetune(folders["gpt2"], folders["chats"], out,
                 FinetuneConfig(lora=False, packing=True, gradient_checkpointing=True,
                                max_steps=3, lr=1e-3), verbose=0)
    assert m["trained_parameters"] == m["parameters"]
    assert (out / "model" / "model.safetensors").is_file()
    lm = PretrainedLM.load(out)
    text = lm.chat([{"role": "user", "content": "what is 2 plus 1?"}], 5, temperature=0)
    assert isinstance(text, str)


def test_base_folder_changed_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "base"
    shutil.copytree(folders["llama"], base)
    finetune(base, folders["chats"], tmp_path / "run", FinetuneConfig(max_steps=1), verbose=0)
    tiny_causal_lm(base, "llama", seed=1)  # other weights in the same place
    with pytest.raises(RunDirError, match="changed since the fine-tune"):
        PretrainedLM.load(tmp_path / "run")


def test_generation_stops_at_the_context(folders: dict[str, Path]) -> None:
    lm = PretrainedLM.load(folders["llama"])
    with pytest.raises(ConfigError, match=r"prompt is \d+ tokens; the model's context is 128"):
        lm.generate("hello " * 200)
    mine = list(lm.tokens(lm.encode_prompt("hello"), 6, temperature=0))
    theirs = greedy(lm.model, lm.tokenizer, ["hello"], 6)[0]  # transformers' generate
    assert theirs[:len(mine)] == mine
    assert len(mine) == 6 or theirs[len(mine)] in lm.eos
    a = lm.generate("hello", 8, temperature=1.0, seed=3)
    assert a == lm.generate("hello", 8, temperature=1.0, seed=3)


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("rows, match", [
    (['{"messages": [{"role": "user", "content": "hi"}]}', '{"prompt": "x"}'],
     r"chats\.jsonl:2: completion is missing"),
    (['{"messages": [{"role": "robot", "content": "hi"}]}'],
     r"chats\.jsonl:1: messages\[0\] has the unknown role 'robot'"),
    (['{"text": "a"}', "{not json"], r"chats\.jsonl:2: not valid JSON"),
    (['{"input": "a"}'], r"chats\.jsonl:1: no messages, prompt/completion or text field"),
])
def test_bad_rows_name_the_line(tmp_path: Path, rows: list[str], match: str) -> None:
    with pytest.raises(DataError, match=match):
        read_examples(_jsonl(tmp_path / "chats.jsonl", *rows))


def test_bad_model_folders(folders: dict[str, Path], tmp_path: Path) -> None:
    from dlforge.lm.hf import check_folder

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunDirError, match="config.json is missing"):
        check_folder(empty)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(folders["llama"], no_weights)
    (no_weights / "model.safetensors").unlink()
    (no_weights / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(RunDirError, match="pytorch_model.bin is a pickle"):
        check_folder(no_weights)
    no_tok = tmp_path / "no_tok"
    shutil.copytree(folders["llama"], no_tok)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (no_tok / f).unlink()
    with pytest.raises(RunDirError, match="no tokenizer"):
        check_folder(no_tok)
    import transformers

    enc = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(
        vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=8)).save_pretrained(str(enc))
    shutil.copy(folders["llama"] / "tokenizer.json", enc / "tokenizer.json")
    with pytest.raises(ConfigError, match="BertModel is not a causal language model"):
        check_folder(enc)


def test_bad_settings(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="q_prj matches no module.*q_proj"):
        finetune(folders["llama"], folders["chats"], tmp_path / "a",
                 FinetuneConfig(target_modules=["q_prj"], max_steps=1), verbose=0)
    with pytest.raises(ConfigError, match="--max-length 4096 is above the model's context of "
                                          "128"):
        finetune(folders["llama"], folders["chats"], tmp_path / "b",
                 FinetuneConfig(max_length=4096), verbose=0)
    with pytest.raises(DataError, match="no chat template.*--chat-template"):
        finetune(folders["plain"], folders["chats"], tmp_path / "c",
                 FinetuneConfig(max_steps=1), verbose=0)
    # prompts longer than --max-length: every completion is cut off
    long = _jsonl(tmp_path / "long.jsonl", *[{"prompt": "the quick brown fox jumps over " * 4,
                                               "completion": "yes"}] * 3)
    with pytest.raises(DataError, match="no token is supervised"):
        finetune(folders["llama"], long, tmp_path / "d",
                 FinetuneConfig(max_steps=1, max_length=4), verbose=0)
    for name in "abcd":
        assert not (tmp_path / name).exists()


def test_chat_template_file_lets_a_plain_model_chat(folders: dict[str, Path],
                                                    tmp_path: Path) -> None:
    from dlforge.testing import CHATML

    template = tmp_path / "chatml.jinja"
    template.write_text(CHATML, encoding="utf-8")
    finetune(folders["plain"], folders["chats"], tmp_path / "run",
             FinetuneConfig(max_steps=1), chat_template=template, verbose=0)
    lm = PretrainedLM.load(tmp_path / "run")
    assert lm.render_chat([{"role": "user", "content": "hi"}]).endswith(
        "<|im_start|>assistant\n")
    with pytest.raises(ConfigError, match="no chat template"):
        PretrainedLM.load(folders["plain"]).chat([{"role": "user", "content": "hi"}])


def test_gguf_import_refuses_other_files(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(DataError, match="not a GGUF file"):
        import_gguf(fake, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------- the CLI
def test_cli_finetune_eval_generate_chat(folders: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    assert _main(["lm", "finetune", "--model", folders["qwen2"], "--data", folders["chats"],
                 "--out", out, "--max-steps", "2", "--merge", tmp_path / "merged"]) == 0
    printed = capsys.readouterr()
    assert "supervised part in ⟦ ⟧" in printed.err and "⟦it is" in printed.err
    assert "validation perplexity" in printed.out
    assert (tmp_path / "merged" / "config.json").is_file()
    assert _main(["lm", "eval", out, "--data", folders["chats"], "--exact-match", "2",
                 "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["exact_match_examples"] == 2 and m["perplexity"] > 1
    assert _main(["lm", "generate", out, "--prompt", "hello", "--max-new-tokens", "3",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("hello")
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n/reset\nhello\n/exit\n"))
    assert _main(["lm", "chat", out, "--temperature", "0", "--max-new-tokens", "3"]) == 0
    capsys.readouterr()
    assert _main(["info", out]) == 0
    assert "lora" in capsys.readouterr().out
    assert _main(["info", out, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["task"] == "causal_lm" and d["model"]["base"]["path"] == str(
        folders["qwen2"].resolve())
    # the commands of classifiers say in one line that they do not apply
    for argv in (["predict", out, "--data", folders["chats"], "--out", tmp_path / "p.csv"],
                 ["export", out]):
        assert _main(argv) == 2
        err = capsys.readouterr().err
        assert "is a fine-tuned pretrained language model" in err, err
        assert len(err.strip().splitlines()) == 1


def test_cli_bad_input_is_one_line_exit_2(folders: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    bad = _jsonl(tmp_path / "bad.jsonl", {"messages": [{"role": "robot", "content": "x"}]})
    assert _main(["lm", "finetune", "--model", folders["llama"], "--data", bad, "--out",
                 tmp_path / "out"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1: messages[0] has the unknown role 'robot'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert _main(["lm", "chat", folders["plain"]]) == 2
    assert "no chat template" in capsys.readouterr().err
    assert _main(["lm", "finetune", "--model", folders["llama"], "--data", folders["chats"],
                 "--max-length", "4096", "--out", tmp_path / "out"]) == 2
    assert "above the model's context of 128" in capsys.readouterr().err


def test_an_interrupted_finetune_resumes_to_the_same_weights(
        folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dlforge.lm.finetune as ft

    cfg = FinetuneConfig(max_steps=6, lr=5e-3, batch_size=4)
    whole = finetune(folders["llama"], folders["chats"], tmp_path / "whole", cfg, verbose=0)
    calls = {"n": 0}
    real = ft.supervised_loss

    def interrupting(model: object, batch: dict) -> object:
        if model.training:  # noqa: SIM102 - the training steps only, not validation
            calls["n"] += 1
            if calls["n"] == 5:  # in the middle of the fifth step
                raise KeyboardInterrupt
        return real(model, batch)

    monkeypatch.setattr(ft, "supervised_loss", interrupting)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        finetune(folders["llama"], folders["chats"], out, cfg, verbose=0)
    assert not out.exists() and (tmp_path / ".cut.partial" / "checkpoint").is_dir()
    monkeypatch.setattr(ft, "supervised_loss", real)
    with pytest.raises(ConfigError, match="other settings.*lr"):
        finetune(folders["llama"], folders["chats"], out,
                 FinetuneConfig(max_steps=6, lr=1e-3, batch_size=4), resume=True, verbose=0)
    resumed = finetune(folders["llama"], folders["chats"], out, cfg, resume=True, verbose=0)
    assert resumed["val_after"] == whole["val_after"]
    assert resumed["steps"] == 6 and not (tmp_path / ".cut.partial").exists()
    a = (tmp_path / "whole" / "adapter" / "adapter_model.safetensors").read_bytes()
    assert a == (out / "adapter" / "adapter_model.safetensors").read_bytes()


def test_torchrun_two_processes_take_the_same_steps(folders: dict[str, Path],
                                                    tmp_path: Path) -> None:
    """--nproc 2: each process takes half of every batch's rows, the gradients are summed, so
    the run matches one process (no LoRA dropout: its masks are drawn per process)."""
    import os
    import subprocess
    import sys

    args = ["lm", "finetune", "--model", str(folders["llama"]), "--data",
            str(folders["chats"]), "--max-steps", "3", "--batch-size", "4", "--lr", "5e-3",
            "--lora-dropout", "0", "--precision", "fp32", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "dlforge.cli", *args, "--out",
                           str(tmp_path / "two"), "--nproc", "2"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    one = finetune(folders["llama"], folders["chats"], tmp_path / "one",
                   FinetuneConfig(max_steps=3, batch_size=4, lr=5e-3, lora_dropout=0.0,
                                  precision="fp32"), verbose=0)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["val_after"]["loss"] == pytest.approx(one["val_after"]["loss"], rel=1e-5)
    assert two["val_after"]["loss"] != two["val_before"]["loss"]


@pytest.mark.parametrize("arch", ["gemma2", "granite", "cohere"])
def test_the_loss_is_the_one_the_model_serves_with(arch: str) -> None:
    """Some architectures change the output layer's result in their forward (Gemma 2's
    soft-capping, Granite's and Cohere's scaling); the loss at supervised positions must too."""
    import torch.nn.functional as F
    import transformers

    common = {"vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}
    config, cls = {
        "gemma2": (transformers.Gemma2Config(**common, head_dim=8,
                                             final_logit_softcapping=0.5),
                   transformers.Gemma2ForCausalLM),
        "granite": (transformers.GraniteConfig(**common, logits_scaling=8.0),
                    transformers.GraniteForCausalLM),
        "cohere": (transformers.CohereConfig(**common, logit_scale=0.05),
                   transformers.CohereForCausalLM),
    }[arch]
    torch.manual_seed(0)
    model = cls(config).eval()
    ids = torch.randint(0, 64, (1, 10))
    labels = torch.full((1, 10), IGNORE)
    labels[0, 3:9] = ids[0, 4:10]
    with torch.no_grad():
        ours, n, _ = supervised_loss(model, {"input_ids": ids, "labels": labels,
                                             "position_ids": torch.arange(10)[None]})
        logits = model(input_ids=ids).logits[0, 3:9].float()
    assert n == 6
    assert float(ours) == pytest.approx(float(F.cross_entropy(logits, ids[0, 4:10],
                                                              reduction="sum")), rel=1e-5)


def test_pack_fills_rows_and_keeps_every_example_once() -> None:
    from dlforge.lm.sft import Encoded, pack

    rng = __import__("numpy").random.default_rng(0)
    examples = [Encoded([i] * int(n), [i] * int(n)) for i, n in
                enumerate(rng.integers(5, 60, 500))]
    rows = pack(examples, 128)
    assert sorted(e.ids[0] for row in rows for e in row) == list(range(500))
    assert all(sum(len(e.ids) for e in row) <= 128 for row in rows)
    fill = sum(len(e.ids) for e in examples) / (128 * len(rows))
    assert fill > 0.95


def test_count_batches_is_the_number_of_batches_made() -> None:
    from dlforge.lm.sft import Encoded, batches, count_batches

    rng = __import__("numpy").random.default_rng(1)
    examples = [Encoded([i % 50 + 1] * int(n), [i % 50 + 1] * int(n)) for i, n in
                enumerate(rng.integers(3, 40, 97))]
    for packing in (False, True):
        n = count_batches(examples, 8, 64, packing)
        assert n == len(batches(examples, 8, 64, packing, 0))
