"""The three core formulas in plain NumPy: convolution, the Elman recurrence, attention.

These are the readable, standard forms of what ``dlforge.models.layers`` computes with
PyTorch. They are slow on purpose (explicit loops where a loop says what happens) and are used
by ``tests/test_reference.py`` to check the torch layers, and by ``docs/math.md`` to recompute
the worked examples of the article the project started from.

* :func:`conv1d` - 1-D convolution as deep-learning frameworks define it, i.e. cross-correlation
  (the kernel is *not* flipped): ``y[t] = sum_k w[k] * x[t*stride + k] + b``.
* :func:`rnn_step` / :func:`rnn` - the Elman step ``h_t = f(W1 x_t + W2 h_{t-1} + b)``.
* :func:`scaled_dot_product_attention` - ``softmax(Q K^T / sqrt(d_k)) V``, the scale *inside*
  the softmax.

:func:`article_attention_as_written` keeps the article's erroneous attention formula, only so
that the documentation can show how it differs; do not use it for anything else.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "article_attention_as_written",
    "conv1d",
    "rnn",
    "rnn_step",
    "scaled_dot_product_attention",
    "sigmoid",
    "softmax",
]


# --------------------------------------------------------------------------- convolution


def conv1d(x, w, b=0.0, stride: int = 1, padding: int = 0) -> np.ndarray:
    """1-D convolution as in ``torch.nn.functional.conv1d`` (cross-correlation, no flip).

    ``y[t] = sum_k w[k] * x[t*stride + k] + b`` over the zero-padded input, for
    ``t = 0 .. T_out - 1`` with ``T_out = (T + 2*padding - K) // stride + 1``. With the default
    ``padding=0`` this is "valid" mode: only windows that lie wholly inside ``x``.

    Two layouts are accepted:

    * single channel: ``x`` of shape ``(T,)``, ``w`` of shape ``(K,)``, scalar ``b``;
      returns ``(T_out,)``.
    * multi-channel: ``x`` ``(C_in, T)``, ``w`` ``(C_out, C_in, K)``, ``b`` scalar or
      ``(C_out,)``; returns ``(C_out, T_out)`` with
      ``y[o, t] = sum_c sum_k w[o, c, k] * x[c, t*stride + k] + b[o]``.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if stride < 1 or padding < 0:
        raise ValueError("stride must be >= 1 and padding >= 0")
    single = x.ndim == 1
    if single:
        if w.ndim != 1:
            raise ValueError("a 1-D input needs a 1-D kernel")
        x, w = x[None, :], w[None, None, :]  # (1, T), (1, 1, K)
    elif x.ndim != 2 or w.ndim != 3 or w.shape[1] != x.shape[0]:
        raise ValueError("expected x (C_in, T) and w (C_out, C_in, K)")
    c_out, _, k = w.shape
    b = np.broadcast_to(np.asarray(b, dtype=np.float64), (c_out,))

    if padding:
        x = np.pad(x, ((0, 0), (padding, padding)))  # zeros on both ends of time
    t_out = (x.shape[1] - k) // stride + 1
    if t_out < 1:
        raise ValueError("kernel is longer than the (padded) input")

    y = np.empty((c_out, t_out))
    for t in range(t_out):
        window = x[:, t * stride : t * stride + k]  # (C_in, K), read left to right: no flip
        y[:, t] = np.einsum("ock,ck->o", w, window) + b
    return y[0] if single else y


# --------------------------------------------------------------------------- recurrence


def sigmoid(z):
    """The logistic function ``1 / (1 + exp(-z))``, computed without overflow."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))  # in (0, 1]: never overflows
    out = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return out[()] if out.ndim == 0 else out


_ACTIVATIONS = {"sigmoid": sigmoid, "tanh": np.tanh}


def _apply(W, v):
    """``W . v`` for a scalar weight, or a matrix weight applied to a vector (or a batch of
    row vectors, shape ``(..., in)``): ``v @ W.T`` is ``W v`` written for row vectors."""
    W = np.asarray(W, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    return W * v if W.ndim == 0 else v @ W.T


def rnn_step(x_t, h_prev, W1, W2, b, activation: str = "sigmoid"):
    """One Elman RNN step: ``h_t = f(W1 x_t + W2 h_{t-1} + b)``.

    ``activation`` is ``"sigmoid"`` (the article's choice) or ``"tanh"`` (what
    ``torch.nn.RNN`` uses by default). Scalars work (``W1``, ``W2``, ``x_t``, ``h_prev`` all
    numbers); so do vectors, with ``W1`` of shape ``(H, I)``, ``W2`` ``(H, H)``, ``b`` ``(H,)``,
    ``x_t`` ``(I,)`` or a batch ``(B, I)`` and ``h_prev`` ``(H,)`` or ``(B, H)``.
    """
    try:
        f = _ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(f"activation must be 'sigmoid' or 'tanh', not {activation!r}") from None
    pre = _apply(W1, x_t) + _apply(W2, h_prev) + np.asarray(b, dtype=np.float64)
    return f(pre)


def rnn(xs, h0, W1, W2, b, activation: str = "sigmoid") -> np.ndarray:
    """Run :func:`rnn_step` over ``xs`` (time on the first axis) from ``h0``.

    Returns every hidden state ``h_1 .. h_T`` stacked on a new first axis (``h0`` itself is not
    included), i.e. what ``torch.nn.RNN`` returns as its output sequence.
    """
    h = np.asarray(h0, dtype=np.float64)
    hs = []
    for x_t in np.asarray(xs, dtype=np.float64):
        h = rnn_step(x_t, h, W1, W2, b, activation)
        hs.append(h)
    return np.stack(hs)


# --------------------------------------------------------------------------- attention


def softmax(z, axis: int = -1) -> np.ndarray:
    """``exp(z) / sum(exp(z))`` along ``axis``; the max is subtracted first so nothing overflows."""
    z = np.asarray(z, dtype=np.float64)
    z = z - np.max(z, axis=axis, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=axis, keepdims=True)


def _as_rows(a):
    a = np.asarray(a, dtype=np.float64)
    return a[None, :] if a.ndim == 1 else a


def scaled_dot_product_attention(Q, K, V, mask=None) -> np.ndarray:
    """``softmax(Q K^T / sqrt(d_k)) V``: the 1/sqrt(d_k) scale goes *inside* the softmax.

    ``Q`` is ``(..., L, d_k)``, ``K`` ``(..., S, d_k)``, ``V`` ``(..., S, d_v)``; leading
    (batch, head) dims broadcast. A 1-D ``Q``/``K``/``V`` is a single query/key/value row; the
    result is 1-D when ``Q`` is. ``mask`` is boolean, broadcastable to ``(..., L, S)``, True
    where a query may attend to a key (``torch.nn.functional.scaled_dot_product_attention``'s
    convention); masked scores are set to -inf before the softmax. A query with no key it may
    attend to has no defined output (NaN).

    The output rows are convex combinations of the rows of ``V`` (the softmax weights are
    non-negative and sum to 1), so with a single key the output is exactly that key's value.
    """
    single_query = np.ndim(Q) == 1
    Q, K, V = _as_rows(Q), _as_rows(K), _as_rows(V)
    d_k = Q.shape[-1]
    scores = Q @ np.swapaxes(K, -1, -2) / np.sqrt(d_k)  # (..., L, S)
    if mask is not None:
        scores = np.where(np.asarray(mask, dtype=bool), scores, -np.inf)
    with np.errstate(invalid="ignore"):  # fully masked rows -> NaN, as documented
        weights = softmax(scores, axis=-1)
    out = weights @ V
    return out[..., 0, :] if single_query else out


def article_attention_as_written(Q, K, V, scale: float = 1.0) -> np.ndarray:
    """The article's *erroneous* formula ``softmax(scale * Q K^T) / sqrt(d_k) . V``.

    Kept only so ``docs/math.md`` can show what it computes: dividing by sqrt(d_k) *after* the
    softmax makes the weights sum to 1/sqrt(d_k) instead of 1 (it shrinks the output rather
    than tempering the softmax). Use :func:`scaled_dot_product_attention`.
    """
    single_query = np.ndim(Q) == 1
    Q, K, V = _as_rows(Q), _as_rows(K), _as_rows(V)
    d_k = Q.shape[-1]
    weights = softmax(scale * (Q @ np.swapaxes(K, -1, -2)), axis=-1) / np.sqrt(d_k)
    out = weights @ V
    return out[..., 0, :] if single_query else out
