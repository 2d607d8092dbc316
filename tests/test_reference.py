"""dlforge.reference (NumPy) against torch's layers and dlforge's own, plus the article's
worked examples with their correct values (see docs/math.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlforge.models.layers import ConvBank, MultiHeadSelfAttention
from dlforge.reference import (
    article_attention_as_written,
    conv1d,
    rnn,
    rnn_step,
    scaled_dot_product_attention,
    sigmoid,
    softmax,
)

ATOL64 = 1e-10  # float64 throughout: the reference and torch agree to rounding
ATOL32 = 1e-5  # a float32 torch module against the float64 reference


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


# --------------------------------------------------------------------------- convolution


@pytest.mark.parametrize(
    ("k", "stride", "padding"),
    [(1, 1, 0), (2, 1, 0), (3, 1, 0), (5, 1, 0), (3, 2, 0), (3, 1, 1), (4, 3, 2), (7, 2, 3)],
)
def test_conv1d_matches_torch_functional(k, stride, padding):
    rng = np.random.default_rng(1000 + 10 * k + stride + padding)
    c_in, c_out, T = 3, 4, 17
    x = rng.standard_normal((c_in, T))
    w = rng.standard_normal((c_out, c_in, k))
    b = rng.standard_normal(c_out)
    want = F.conv1d(torch.from_numpy(x)[None], torch.from_numpy(w), torch.from_numpy(b),
                    stride=stride, padding=padding)[0]
    got = conv1d(x, w, b, stride=stride, padding=padding)
    assert got.shape == tuple(want.shape)
    np.testing.assert_allclose(got, _np(want), rtol=0, atol=ATOL64)


@pytest.mark.parametrize(("k", "stride", "padding"), [(2, 1, 0), (3, 1, 1), (5, 2, 2)])
def test_conv1d_matches_torch_conv1d_module(k, stride, padding):
    torch.manual_seed(k + stride + padding)
    layer = nn.Conv1d(2, 5, k, stride=stride, padding=padding)  # float32, as dlforge uses it
    x = torch.randn(1, 2, 13)
    with torch.no_grad():
        want = layer(x)[0]
    got = conv1d(_np(x[0]), _np(layer.weight), _np(layer.bias), stride=stride, padding=padding)
    np.testing.assert_allclose(got, _np(want), rtol=0, atol=ATOL32)


def test_conv1d_single_channel_matches_torch():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal(11), rng.standard_normal(4)
    want = F.conv1d(torch.from_numpy(x)[None, None], torch.from_numpy(w)[None, None])[0, 0]
    got = conv1d(x, w)
    np.testing.assert_allclose(got, _np(want), rtol=0, atol=ATOL64)
    # cross-correlation, not the flipped (textbook) convolution
    assert not np.allclose(got, np.convolve(x, w, mode="valid"))
    np.testing.assert_allclose(got, np.convolve(x, w[::-1], mode="valid"), atol=ATOL64)


def test_conv1d_rejects_bad_shapes():
    with pytest.raises(ValueError):
        conv1d([1.0, 2.0], [1.0, 1.0, 1.0])  # kernel longer than the input
    with pytest.raises(ValueError):
        conv1d(np.ones((2, 5)), np.ones((3, 4, 2)))  # C_in mismatch


def test_conv_bank_matches_reference():
    torch.manual_seed(0)
    in_dim, filters, kernel_sizes = 6, 4, [2, 3, 5]
    bank = ConvBank(in_dim, filters, kernel_sizes).double().eval()
    B, T = 3, 9
    x = torch.randn(B, T, in_dim, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.bool)
    with torch.no_grad():
        got = bank(x, mask)
    assert got.shape == (B, filters * len(kernel_sizes))
    want = np.stack([
        np.concatenate([
            np.maximum(conv1d(_np(x[i]).T, _np(conv.weight), _np(conv.bias)), 0.0).max(axis=1)
            for conv in bank.convs
        ])
        for i in range(B)
    ])
    np.testing.assert_allclose(_np(got), want, rtol=0, atol=ATOL64)


# --------------------------------------------------------------------------- recurrence


def test_sigmoid_values_and_stability():
    assert sigmoid(0.0) == 0.5
    np.testing.assert_allclose(sigmoid(1.0), 1 / (1 + math.exp(-1)))
    z = np.array([-1000.0, -5.0, 0.0, 5.0, 1000.0])
    with np.errstate(over="raise"):
        s = sigmoid(z)
    np.testing.assert_allclose(s, _np(torch.sigmoid(torch.from_numpy(z))), atol=ATOL64)


@pytest.mark.parametrize("batch", [False, True])
def test_rnn_tanh_matches_torch_rnn(batch):
    torch.manual_seed(3)
    n_in, H, T, B = 4, 5, 7, 2
    layer = nn.RNN(n_in, H, nonlinearity="tanh", batch_first=True).double()
    x = torch.randn(B, T, n_in, dtype=torch.float64)
    h0 = torch.randn(1, B, H, dtype=torch.float64)
    with torch.no_grad():
        out, h_n = layer(x, h0)
    W1, W2 = _np(layer.weight_ih_l0), _np(layer.weight_hh_l0)
    b = _np(layer.bias_ih_l0 + layer.bias_hh_l0)
    if batch:  # x_t of shape (B, I): time first for the reference
        hs = rnn(_np(x).transpose(1, 0, 2), _np(h0[0]), W1, W2, b, activation="tanh")
        np.testing.assert_allclose(hs.transpose(1, 0, 2), _np(out), rtol=0, atol=ATOL64)
    else:
        for i in range(B):
            hs = rnn(_np(x[i]), _np(h0[0, i]), W1, W2, b, activation="tanh")
            np.testing.assert_allclose(hs, _np(out[i]), rtol=0, atol=ATOL64)
            np.testing.assert_allclose(hs[-1], _np(h_n[0, i]), rtol=0, atol=ATOL64)


def test_rnn_step_rejects_unknown_activation():
    with pytest.raises(ValueError):
        rnn_step(1.0, 0.0, 1.0, 1.0, 0.0, activation="relu")


# --------------------------------------------------------------------------- attention


def test_softmax_is_stable_and_normalised():
    z = np.array([[1000.0, 1001.0, 1002.0], [-3.0, 0.0, 3.0]])
    with np.errstate(over="raise"):
        p = softmax(z)
    np.testing.assert_allclose(p.sum(-1), 1.0)
    np.testing.assert_allclose(p[0], softmax(np.array([0.0, 1.0, 2.0])))  # shift-invariant
    np.testing.assert_allclose(p, _np(torch.softmax(torch.from_numpy(z), -1)), atol=ATOL64)


@pytest.mark.parametrize("use_mask", [False, True])
def test_attention_matches_torch_sdpa(use_mask):
    rng = np.random.default_rng(11)
    B, nh, L, S, d_k, d_v = 2, 3, 5, 6, 4, 7
    Q = rng.standard_normal((B, nh, L, d_k))
    K = rng.standard_normal((B, nh, S, d_k))
    V = rng.standard_normal((B, nh, S, d_v))
    mask = None
    if use_mask:
        mask = rng.random((B, nh, L, S)) < 0.6
        mask[..., 0] = True  # every query may attend somewhere
    want = F.scaled_dot_product_attention(
        torch.from_numpy(Q), torch.from_numpy(K), torch.from_numpy(V),
        attn_mask=None if mask is None else torch.from_numpy(mask))
    got = scaled_dot_product_attention(Q, K, V, mask=mask)
    assert got.shape == (B, nh, L, d_v)
    np.testing.assert_allclose(got, _np(want), rtol=0, atol=ATOL64)


def _reference_mhsa(layer: MultiHeadSelfAttention, x: np.ndarray, mask) -> np.ndarray:
    """The layer's forward, head by head, with the NumPy reference and the layer's weights."""
    B, T, C = x.shape
    nh = layer.heads
    hs = C // nh
    qkv = x @ _np(layer.qkv.weight).T + _np(layer.qkv.bias)  # (B, T, 3C)
    q, k, v = qkv[..., :C], qkv[..., C : 2 * C], qkv[..., 2 * C :]
    out = np.empty((B, T, C))
    for i in range(B):
        m = None if mask is None else np.broadcast_to(mask[i][None, :], (T, T))  # keys only
        for h in range(nh):
            sl = slice(h * hs, (h + 1) * hs)
            out[i, :, sl] = scaled_dot_product_attention(q[i, :, sl], k[i, :, sl], v[i, :, sl], m)
    return out @ _np(layer.proj.weight).T + _np(layer.proj.bias)


@pytest.mark.parametrize("mask_kind", ["none", "all_true", "padded"])
def test_attention_matches_dlforge_multihead_self_attention(mask_kind):
    torch.manual_seed(5)
    B, T, d_model, heads = 3, 6, 8, 2
    layer = MultiHeadSelfAttention(d_model, heads).double().eval()
    x = torch.randn(B, T, d_model, dtype=torch.float64)
    mask = None
    if mask_kind != "none":
        mask = torch.ones(B, T, dtype=torch.bool)
        if mask_kind == "padded":
            lengths = [6, 4, 1]
            for i, n in enumerate(lengths):
                mask[i, n:] = False
    with torch.no_grad():
        got = layer(x, mask)
    want = _reference_mhsa(layer, _np(x), None if mask is None else mask.numpy())
    np.testing.assert_allclose(_np(got), want, rtol=0, atol=ATOL64)


def test_attention_fully_masked_query_is_nan():
    out = scaled_dot_product_attention(np.ones((2, 3)), np.ones((2, 3)), np.ones((2, 3)),
                                       mask=np.array([[True, False], [False, False]]))
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()


# --------------------------------------------------------------------------- the article's
# worked examples, with the values they should have had (docs/math.md)


def test_article_conv_example():
    # x = (1, 2, 3), w = (1, 1), valid mode: windows (1, 2) and (2, 3).
    np.testing.assert_allclose(conv1d([1, 2, 3], [1, 1]), [3.0, 5.0])
    # The article's "1*1 + 2*1 + 3*1 = 6" is a three-tap kernel of ones, not w = (1, 1).
    np.testing.assert_allclose(conv1d([1, 2, 3], [1, 1, 1]), [6.0])
    # With padding=1 ("full" for a 2-tap kernel) still no 6 appears.
    np.testing.assert_allclose(conv1d([1, 2, 3], [1, 1], padding=1), [1.0, 3.0, 5.0, 3.0])


def test_article_rnn_example():
    # W1 = W2 = 1, b = 0, sigmoid, inputs 1, 2, 3, h0 = 0.
    hs = rnn([1.0, 2.0, 3.0], 0.0, 1.0, 1.0, 0.0, activation="sigmoid")
    s = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    h1 = s(1.0)
    h2 = s(2.0 + h1)
    h3 = s(3.0 + h2)
    np.testing.assert_allclose(hs, [h1, h2, h3], rtol=1e-12)
    np.testing.assert_allclose(hs, [0.7310586, 0.9388347, 0.9809010], atol=1e-7)
    # The article's 0.63, 0.86, 0.95 are 1 - exp(-x_t): neither sigmoid nor recurrence.
    article = np.array([0.63, 0.86, 0.95])
    np.testing.assert_allclose(1.0 - np.exp(-np.array([1.0, 2.0, 3.0])), article, atol=0.005)
    assert np.abs(hs - article).min() > 0.03


def test_article_attention_single_key_example():
    Q, K, V = [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]
    # One key: its softmax weight is exactly 1, so the output is V whatever the scale.
    np.testing.assert_allclose(scaled_dot_product_attention(Q, K, V), [5.0, 6.0])
    for scale in (0.1, 1.0, 10.0):
        np.testing.assert_allclose(scaled_dot_product_attention(np.multiply(scale, Q), K, V),
                                   [5.0, 6.0])
    # The article's formula as written: softmax(QK^T) / sqrt(2) . V = V / sqrt(2).
    as_written = article_attention_as_written(Q, K, V, scale=1.0)
    np.testing.assert_allclose(as_written, np.array([5.0, 6.0]) / math.sqrt(2))
    np.testing.assert_allclose(as_written, [3.5355339, 4.2426407], atol=1e-7)
    # The claimed (6.53, 7.53) is produced by neither, and exceeds V, which no convex
    # combination of the value rows can.
    claimed = np.array([6.53, 7.53])
    assert not np.allclose(scaled_dot_product_attention(Q, K, V), claimed, atol=0.01)
    assert not np.allclose(as_written, claimed, atol=0.01)


def test_article_attention_scale_inside_vs_outside_softmax():
    Q, K, V = [1.0, 0.0], np.eye(2), np.eye(2)  # two keys; output = the attention weights
    correct = scaled_dot_product_attention(Q, K, V)
    # softmax((1, 0) / sqrt(2)) = (0.6698, 0.3302)
    np.testing.assert_allclose(correct, softmax(np.array([1.0, 0.0]) / math.sqrt(2)))
    np.testing.assert_allclose(correct, [0.6697615, 0.3302385], atol=1e-7)
    np.testing.assert_allclose(correct.sum(), 1.0)
    as_written = article_attention_as_written(Q, K, V)
    # softmax((1, 0)) / sqrt(2) = (0.7311, 0.2689) / sqrt(2) = (0.5169, 0.1902)
    np.testing.assert_allclose(as_written, [0.5169365, 0.1901703], atol=1e-7)
    np.testing.assert_allclose(as_written.sum(), 1 / math.sqrt(2))
    assert not np.allclose(correct, as_written, atol=0.05)
