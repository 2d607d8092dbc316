"""Every registered model family passes the shared contract."""

import pytest
import torch

from dlforge.config import MODEL_FAMILIES, validate_config
from dlforge.models.registry import build_model
from dlforge.testing import CASES, TINY_MODELS, check_model


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_check_model(name, kind):
    check_model(name, kind)


def test_every_family_has_a_tiny_config():
    # auto and ensemble are made of the other families; pretrained is a folder
    assert set(TINY_MODELS) == set(MODEL_FAMILIES) - {"pretrained", "auto", "ensemble"}


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_rnn_cells_and_directions(cell):
    for bidirectional in (True, False):
        cfg = validate_config({"inputs": [{"name": "t"}], "output": {"name": "y"},
                               "model": {"name": "rnn", "cell": cell, "hidden": 6,
                                         "d_model": 8, "layers": 2,
                                         "bidirectional": bidirectional}})
        m = build_model(cfg, {"t": {"vocab_size": 30, "max_length": 10}}, 2).eval()
        ids = torch.randint(1, 30, (3, 5))
        batch = {"t": {"input_ids": ids, "attention_mask": torch.ones(3, 5, dtype=torch.bool)}}
        assert m(batch).shape == (3, 2)


def test_article_model_shape():
    """Embedding(10000→512) → Transformer(4 heads, d_model 512) → one output."""
    cfg = validate_config({"inputs": [{"name": "t"}], "output": {"name": "y"}})
    m = build_model(cfg, {"t": {"vocab_size": 10_000, "max_length": 128}}, 1)
    enc = m.encoders["t"]
    assert enc.embed.tok.weight.shape == (10_000, 512)
    assert enc.blocks[0].attn.heads == 4
    assert m.head.out.in_features == 512 and m.head.out.out_features == 1


def test_dropout_matches_nn_dropout_in_distribution():
    from dlforge.models.layers import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.25)
    x = torch.ones(400, 500, requires_grad=True)
    y = drop(x)
    zeroed = (y == 0).float().mean().item()
    assert abs(zeroed - 0.25) < 0.005  # 200k draws: the rate is p
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / 0.75)))
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # gradient flows through kept units only
    drop.eval()
    assert drop(x) is x
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert Dropout(0.5).train()(x.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        Dropout(1.0)


@pytest.mark.parametrize("T", [5, 128, 130])
def test_training_attention_path_equals_sdpa(T):
    """The explicit CPU training path and SDPA compute the same attention (with padding)."""
    import torch.nn.functional as F

    from dlforge.models.layers import attention

    g = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(3, 2, T, 8, generator=g, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    mask = torch.ones(3, T, dtype=torch.bool)
    mask[1, T // 2:] = False
    mask[2, 1:] = False
    got = attention(q, k, v, mask)  # grad enabled: the explicit path up to 128 tokens
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    assert torch.allclose(got, want, atol=1e-10)
    got.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
