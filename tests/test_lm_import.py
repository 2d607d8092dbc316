"""dlforge lm import (dlforge.lm.hf.import_gguf) on a real GGUF file written here: a tiny random
LLaMA and its byte-level BPE tokenizer, written with the gguf package's GGUFWriter under
llama.cpp's key and tensor names (q/k rows permuted as llama.cpp's converter does), imported back
into a safetensors folder that must give the same logits, tokens and chat template."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pytest.importorskip("gguf")
pytest.importorskip("accelerate")
import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from dlforge import DataError, PretrainedLM  # noqa: E402
from dlforge.cli import main  # noqa: E402
from dlforge.lm.hf import import_gguf  # noqa: E402
from dlforge.testing import CHATML, tiny_causal_lm  # noqa: E402

# llama.cpp's tensor names (gguf.TENSOR_NAMES) for the Hugging Face LLaMA block's weights.
BLOCK = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
         "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
         "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
         "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
CHAT = [{"role": "user", "content": "what is the capital of france?"}]
TEXTS = ["the quick brown fox jumps over the lazy dog.",
         "<|im_start|>user\nhello, how are you?<|im_end|>\n"]


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute: HF's rotate-half rows of q/k
    become llama.cpp's interleaved pairs (transformers' GGUF loader reverses it)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_llama_gguf(model: torch.nn.Module, tokenizer_json: Path, path: Path) -> Path:
    """``model`` (a LlamaForCausalLM) and its tokenizer as an F32 GGUF file, as llama.cpp
    writes one: no ``output.weight`` when the embeddings are tied (SmolLM2's case)."""
    cfg = model.config
    tj = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = dict(tj["model"]["vocab"])
    specials = {a["content"]: a["id"] for a in tj["added_tokens"]}
    vocab.update(specials)
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert len(tokens) == cfg.vocab_size
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny-llama")
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")  # byte-level BPE
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL
                       for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(specials["<|endoftext|>"])
    w.add_eos_token_id(specials["<|im_end|>"])
    w.add_pad_token_id(specials["<|endoftext|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)

    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf_name, name in BLOCK.items():
            t = sd[f"model.layers.{i}.{hf_name}.weight"]
            if name == "attn_q":
                t = llama_cpp_permute(t, cfg.num_attention_heads)
            elif name == "attn_k":
                t = llama_cpp_permute(t, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{name}.weight", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _source(root: Path, tied: bool) -> dict[str, object]:
    """A tiny random LLaMA (tied embeddings as tiny_causal_lm makes it, or an untied one with
    its own output.weight), its tokenizer, the GGUF file of both and its import."""
    folder = tiny_causal_lm(root / "hf", "llama")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    if not tied:
        cfg = model.config
        cfg.tie_word_embeddings = False
        torch.manual_seed(1)
        model = transformers.LlamaForCausalLM(cfg).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(folder))
    file = write_llama_gguf(model, folder / "tokenizer.json", root / "tiny-llama.F32.gguf")
    out = import_gguf(file, root / "imported", say=lambda m: None)
    return {"model": model, "tok": tok, "file": file, "out": out, "tied": tied}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    return {kind: _source(tmp_path_factory.mktemp(f"gguf-{kind}"), kind == "tied")
            for kind in ("tied", "untied")}


BOTH = pytest.mark.parametrize("kind", ["tied", "untied"])


@BOTH
def test_the_gguf_file_holds_llama_cpp_layouts(sources: dict, kind: str) -> None:
    """The file is llama.cpp's, not a copy of the HF tensors: q/k rows are permuted (so the
    import below only matches if transformers' reverse permutation runs)."""
    source = sources[kind]
    reader = gguf.GGUFReader(str(source["file"]))
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.1.ffn_down.weight"} <= names
    assert ("output.weight" in names) is not source["tied"]
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    stored = np.asarray(q.data).reshape(32, 32)
    original = source["model"].model.layers[0].self_attn.q_proj.weight.detach().numpy()
    assert not np.array_equal(stored, original)
    assert np.array_equal(np.sort(stored, axis=0), np.sort(original, axis=0))  # rows reordered


@BOTH
def test_import_gives_back_the_same_model(sources: dict, kind: str) -> None:
    source = sources[kind]
    out: Path = source["out"]
    model, tok = source["model"], source["tok"]
    assert {"config.json", "model.safetensors", "tokenizer.json",
            "dlforge-import.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("*.gguf")) and not list(out.parent.glob(".imported.*"))
    imported = transformers.AutoModelForCausalLM.from_pretrained(str(out)).eval()
    itok = transformers.AutoTokenizer.from_pretrained(str(out))
    assert type(imported).__name__ == "LlamaForCausalLM"
    assert imported.config.tie_word_embeddings is source["tied"]
    assert imported.config.num_key_value_heads == 2 and imported.config.head_dim == 8

    # The chat template survived, and renders and tokenizes as the source's does.
    assert itok.chat_template == CHATML
    prompt = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert itok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True) == prompt
    for text in [prompt, *TEXTS]:
        assert itok(text)["input_ids"] == tok(text)["input_ids"], text
    assert itok.eos_token == "<|im_end|>"

    ids = torch.tensor([tok(prompt)["input_ids"]])
    with torch.no_grad():
        want, got = model(ids).logits, imported(ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)

    info = json.loads((out / "dlforge-import.json").read_text(encoding="utf-8"))
    assert info["sha256"] == hashlib.sha256(source["file"].read_bytes()).hexdigest()
    assert info["source"] == source["file"].name and info["format"] == "gguf"
    assert info["architecture"] == "LlamaForCausalLM" and info["chat_template"] is True
    assert info["parameters"] == sum(p.numel() for p in model.parameters())


def test_imported_folder_loads_as_a_pretrained_lm(sources: dict) -> None:
    source = sources["tied"]
    lm = PretrainedLM.load(source["out"])
    prompt = lm.render_chat(CHAT)
    ids = lm.encode_prompt(prompt)
    got = list(lm.tokens(ids, max_new_tokens=5, temperature=0))
    x = torch.tensor([ids])
    want = []
    with torch.no_grad():  # the source model's greedy tokens, step by step
        for _ in range(5):
            nxt = int(source["model"](x).logits[0, -1].argmax())
            if nxt in lm.eos:
                break
            want.append(nxt)
            x = torch.cat([x, torch.tensor([[nxt]])], dim=1)
    assert got == want


def test_cli_import_and_overwrite(sources: dict, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    source = sources["tied"]
    out = tmp_path / "models" / "tiny"
    assert main(["lm", "import", str(source["file"]), "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert f"wrote {out}: LlamaForCausalLM" in said.out and "chat template" in said.out
    assert (out / "model.safetensors").is_file()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}

    # --out exists: refused in one line, before anything is read or written.
    assert main(["lm", "import", str(source["file"]), "--out", str(out)]) == 2
    said = capsys.readouterr()
    assert said.err.strip().count("\n") == 0 and "Traceback" not in said.err
    assert "exists; pass --overwrite" in said.err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]

    # A folder that is not a model folder is never replaced, even with --overwrite.
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine", encoding="utf-8")
    assert main(["lm", "import", str(source["file"]), "--out", str(other),
                 "--overwrite"]) == 2
    assert "not a model folder" in capsys.readouterr().err
    assert [p.name for p in other.iterdir()] == ["keep.txt"]

    assert main(["lm", "import", str(source["file"]), "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny"]


def _corrupt(data: bytes, how: str) -> bytes:
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    return {"magic-then-garbage": b"GGUF" + garbage,
            "header-then-garbage": data[:8] + garbage,
            "magic-only": b"GGUF",
            "cut-in-metadata": data[:2000],
            "cut-in-tensors": data[:len(data) // 2],
            "last-bytes-missing": data[:-64]}[how]


@pytest.mark.parametrize("how", ["magic-then-garbage", "header-then-garbage", "magic-only",
                                 "cut-in-metadata", "cut-in-tensors", "last-bytes-missing"])
def test_corrupt_gguf_is_a_one_line_refusal(sources: dict, how: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    source = sources["tied"]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_corrupt(source["file"].read_bytes(), how))
    out = tmp_path / "out"
    with pytest.raises(DataError, match="cannot read this GGUF file"):
        import_gguf(bad, out, say=lambda m: None)
    assert main(["lm", "import", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "bad.gguf: transformers cannot read this GGUF file" in errors[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.gguf"]  # nothing half-written
