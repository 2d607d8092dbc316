"""``check_model``: the checks every registered model family must pass.

Like scikit-learn's ``check_estimator``: build a tiny instance, train a step, save, load,
predict identically, and stay unaffected by padding. ``tests/test_common.py`` runs it for
every family in ``dlforge.models.registry.MODELS``.

``sklearn_expected_failed_checks``: the few scikit-learn estimator checks a dlforge estimator
is known to fail, each with its reason, for ``parametrize_with_checks`` and
``check_estimator`` (``tests/test_sklearn_checks.py``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import is_classifier

from dlforge.config import TrainConfig, validate_config
from dlforge.config.models import CANDIDATES
from dlforge.data.inputs import build_features
from dlforge.models.registry import MODELS, build_model
from dlforge.train.trainer import make_optimizer

__all__ = ["CASES", "CHATML", "TINY_MODELS", "check_model", "sklearn_expected_failed_checks",
           "tiny_causal_lm", "toy_texts"]

# The smallest sensible configuration of each family, for tests (each family's TINY).
TINY_MODELS: dict[str, dict] = {c.model_fields["name"].default: {
    "name": c.model_fields["name"].default, **c.TINY} for c in CANDIDATES}  # type: ignore[attr-defined]
# Every (family, input kind) the registry builds, and the MLP on a table. A pretrained encoder
# needs a model folder: tests/test_pretrained.py builds a tiny BERT and checks it there.
CASES: list[tuple[str, str]] = sorted(k for k in MODELS if k[0] != "pretrained") + [
    ("mlp", "table")]


def sklearn_expected_failed_checks(estimator: Any) -> dict[str, str]:
    """The scikit-learn estimator checks ``estimator`` is known to fail: {check name: why}.
    Pass it as ``expected_failed_checks`` to scikit-learn's ``parametrize_with_checks`` or
    ``check_estimator`` (scikit-learn >= 1.6); every other check must pass."""
    failed = {}
    if is_classifier(estimator) and "class_weight" in estimator.get_params(deep=False):
        failed["check_class_weight_classifiers"] = (
            "class_weight is 'auto', 'none' or 'balanced' (one run-config value, also a YAML "
            "key and a CLI flag); a dict of per-class weights such as {0: 1000, 1: 0.0001}, "
            "which this check sets, is not supported")
    return failed


def toy_texts(n: int = 120, seed: int = 0, classes: int = 2) -> tuple[list[str], list[str]]:
    """Short texts whose label is given away by one cue word among filler words."""
    rng = np.random.default_rng(seed)
    cues = {0: ["good", "great", "lovely"], 1: ["bad", "awful", "poor"],
            2: ["odd", "strange", "weird"], 3: ["fast", "quick", "rapid"]}
    names = ["pos", "neg", "odd", "fast"]
    filler = ["the", "a", "movie", "plot", "was", "really", "quite", "it", "and", "so"]
    texts, labels = [], []
    for _ in range(n):
        y = int(rng.integers(classes))
        words = list(rng.choice(filler, size=int(rng.integers(2, 9))))
        words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(cues[y])))
        texts.append(" ".join(words))
        labels.append(names[y])
    return texts, labels


def _tiny_batch(name: str, kind: str, n_outputs: int, vocab_size: int, max_length: int,
                rng: np.random.Generator, n: int = 8, tiny: dict[str, Any] | None = None
                ) -> tuple[Any, list[Any], Any]:
    """(config, rows, features) for a tiny model of ``name`` (``tiny``, default
    ``TINY_MODELS[name]``) on inputs of ``kind``."""
    if kind == "text":
        inputs = [{"name": "t", "type": "text", "max_length": max_length}]
        rows = [{"t": rng.integers(5, vocab_size, size=int(rng.integers(1, max_length + 1)))}
                for _ in range(n)]
        specs = {"t": {"vocab_size": vocab_size, "max_length": max_length}}
    elif kind == "sequence":
        inputs = [{"name": "s", "type": "sequence", "max_length": max_length}]
        rows = [{"s": rng.normal(size=(int(rng.integers(1, max_length + 1)), 2)).astype(
            np.float32)} for _ in range(n)]
        specs = {"s": {"features": 2, "max_length": max_length}}
    elif kind == "image":
        inputs = [{"name": "img", "type": "image"}]
        rows = [{"img": rng.normal(size=(1, 8, 8)).astype(np.float32)} for _ in range(n)]
        specs = {"img": {"channels": 1, "height": 8, "width": 8}}
    elif kind == "audio":  # 0.1 s clips at 8 kHz: 8 mel bands x 13 frames
        inputs = [{"name": "wav", "type": "audio", "sample_rate": 8000, "seconds": 0.1,
                   "n_mels": 8, "n_fft": 128, "hop_length": 64}]
        rows = [{"wav": rng.normal(scale=0.1, size=800).astype(np.float32)} for _ in range(n)]
        specs = {"wav": {"channels": 1, "height": 8, "width": 13}}
    else:  # a table: two numeric columns and a categorical one
        inputs = [{"name": "a", "type": "numeric"}, {"name": "b", "type": "numeric"},
                  {"name": "c", "type": "category"}]
        rows = [{"a": rng.normal(size=2).astype(np.float32),
                 "b": rng.normal(size=2).astype(np.float32),
                 "c": np.int64(rng.integers(0, 4))} for _ in range(n)]
        specs = {"a": {"width": 2}, "b": {"width": 2}, "c": {"categories": 4, "dim": 3}}
    model = tiny or TINY_MODELS[name]
    cfg = validate_config({"inputs": inputs, "output": {"name": "y"}, "model": model})
    return cfg, rows, specs


def _collate(cfg: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    features = build_features(cfg)
    for f in features.values():  # images, audio: identity normalisation (the rows are floats)
        if f.kind == "image":
            f.set_state({"shape": [1, 8, 8], "color": "gray", "scale": 1.0, "mean": [0.0],
                         "std": [1.0]}, None)
        if f.kind == "audio":
            f.set_state({"mean": [0.0] * 8, "std": [1.0] * 8}, None)
    return {name: f.collate([r[name] for r in rows]) for name, f in features.items()}


def check_model(name: str, kind: str = "text", n_outputs: int = 3, vocab_size: int = 50,
                max_length: int = 12, seed: int = 0, tiny: dict[str, Any] | None = None
                ) -> None:
    """Raise AssertionError if the family ``name`` breaks the contract on inputs of ``kind``
    (text, sequence, image, audio or table). ``tiny``: the model config to build (default:
    ``TINY_MODELS[name]``, the family's ``TINY`` settings)."""
    from safetensors.torch import load_file, save_file

    rng = np.random.default_rng(seed)
    cfg, rows, specs = _tiny_batch(name, kind, n_outputs, vocab_size, max_length, rng,
                                   tiny=tiny)
    torch.manual_seed(seed)
    model = build_model(cfg, specs, n_outputs)
    batch = _collate(cfg, rows)

    # 1. Builds and maps a batch to (B, n_outputs).
    model.eval()
    out = model(batch)
    assert out.shape == (len(rows), n_outputs), f"{name}: output shape {tuple(out.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite outputs"

    # 2. A row's output does not depend on the rest of its batch (for sequences: the padding
    #    mask is honoured; for images: batch-norm uses its running statistics in eval mode).
    for i, row in enumerate(rows):
        single = model(_collate(cfg, [row]))
        assert torch.allclose(single[0], out[i], atol=1e-5), (
            f"{name}/{kind}: output for row {i} changes with the batch around it")

    # 3. A few training steps change the weights and lower the loss on the same batch.
    model.train()
    opt = make_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.0))
    target = torch.from_numpy(rng.integers(0, n_outputs, size=len(rows)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(batch), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"{name}/{kind}: loss did not fall ({losses})"
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), (
        f"{name}/{kind}: a training step changed no weight")

    # 4. Save (safetensors), load into a fresh instance, predict identically.
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        fresh = build_model(cfg, specs, n_outputs).eval()
        fresh.load_state_dict(load_file(path))
    with torch.no_grad():
        assert torch.equal(model(batch), fresh(batch)), (
            f"{name}/{kind}: predictions differ after save and load")


# ChatML, the template of SmolLM2 and Qwen2 (without their default system prompt).
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
_CORPUS = ("the quick brown fox jumps over the lazy dog. what is the capital of france? "
           "the capital of france is paris. hello, how are you? i am fine, thank you. "
           "user assistant system 0123456789 " * 4)


def tiny_causal_lm(folder: str | Path, arch: str = "llama", chat_template: bool = True,
                   seed: int = 0) -> Path:
    """A tiny random causal LM folder, as ``save_pretrained`` writes one (no download):
    ``arch`` llama, qwen2 or gpt2; a byte-level BPE tokenizer trained on a few sentences, with
    ChatML's special tokens and (``chat_template``) its template."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = Path(folder)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator([_CORPUS], trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        chat_template=CHATML if chat_template else None)
    vocab = bpe.get_vocab_size()
    torch.manual_seed(seed)
    common = {"vocab_size": vocab, "eos_token_id": tok.eos_token_id,
              "pad_token_id": tok.pad_token_id}
    if arch == "gpt2":
        config = transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=128,
                                         bos_token_id=tok.eos_token_id, **common)
        model = transformers.GPT2LMHeadModel(config)
    else:
        cls = {"llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
               "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[arch]
        config = cls[0](hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2,
                        max_position_embeddings=128, tie_word_embeddings=True, **common)
        model = cls[1](config)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder
