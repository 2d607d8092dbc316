"""``check_model``: the checks every registered model family must pass.

Like scikit-learn's ``check_estimator``: build a tiny instance, train a step, save, load,
predict identically, and stay unaffected by padding. ``tests/test_common.py`` runs it for
every family in ``dlforge.models.registry.MODELS``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from dlforge.config import TrainConfig, validate_config
from dlforge.data.loader import pad_collate
from dlforge.models.registry import build_model
from dlforge.train.trainer import make_optimizer

__all__ = ["TINY_MODELS", "check_model", "toy_texts"]

# The smallest sensible configuration of each family, for tests.
TINY_MODELS: dict[str, dict] = {
    "transformer": {"name": "transformer", "d_model": 16, "heads": 2, "layers": 2,
                    "dropout": 0.0},
    "cnn": {"name": "cnn", "d_model": 16, "filters": 8, "kernel_sizes": [2, 3], "dropout": 0.0},
    "rnn": {"name": "rnn", "d_model": 16, "hidden": 8, "dropout": 0.0},
}


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


def check_model(name: str, n_outputs: int = 3, vocab_size: int = 50, max_length: int = 12,
                seed: int = 0) -> None:
    """Raise AssertionError if the family ``name`` breaks the contract."""
    from safetensors.torch import load_file, save_file

    cfg = validate_config({"inputs": [{"name": "t", "max_length": max_length}],
                           "output": {"name": "y"}, "model": TINY_MODELS[name]})
    torch.manual_seed(seed)
    model = build_model(cfg.model, vocab_size, max_length, n_outputs)
    rng = np.random.default_rng(seed)
    seqs = [rng.integers(5, vocab_size, size=int(rng.integers(1, max_length + 1)))
            for _ in range(8)]
    batch = pad_collate([(s.astype(np.int64), None) for s in seqs])
    ids, mask = batch["input_ids"], batch["attention_mask"]

    # 1. Builds and maps (B, T) -> (B, n_outputs).
    model.eval()
    out = model(ids, mask)
    assert out.shape == (len(seqs), n_outputs), f"{name}: output shape {tuple(out.shape)}"
    assert torch.isfinite(out).all(), f"{name}: non-finite outputs"

    # 2. Padding does not change a sequence's output (the mask is honoured).
    for i, s in enumerate(seqs):
        alone = pad_collate([(s.astype(np.int64), None)])
        single = model(alone["input_ids"], alone["attention_mask"])
        assert torch.allclose(single[0], out[i], atol=1e-5), (
            f"{name}: output for sequence {i} changes with padding")

    # 3. One training step changes the weights and lowers the loss on the same batch.
    model.train()
    opt = make_optimizer(model, TrainConfig(lr=1e-2, weight_decay=0.0))
    target = torch.from_numpy(rng.integers(0, n_outputs, size=len(seqs)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(ids, mask), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], f"{name}: loss did not fall ({losses})"
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), (
        f"{name}: a training step changed no weight")

    # 4. Save (safetensors), load into a fresh instance, predict identically.
    model.eval()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        fresh = build_model(cfg.model, vocab_size, max_length, n_outputs).eval()
        fresh.load_state_dict(load_file(path))
    with torch.no_grad():
        assert torch.equal(model(ids, mask), fresh(ids, mask)), (
            f"{name}: predictions differ after save and load")
