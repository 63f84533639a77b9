"""Scaled dot-product attention, forward and backward, in NumPy.

For each batch element and head, ``n`` queries attend over ``m`` keys (Vaswani et al. 2017, "Attention Is All
You Need", eq. 1):

    S = scale · Q Kᵀ          (n, m)   scores; scale = 1/√d by default, so S stays O(1) as d grows
    P = softmax(S)  by rows   (n, m)   each query's weights over the keys, summing to 1
    O = P V                   (n, dv)  each output row is a weighted mean of the value rows

This file materialises S and P on purpose: it is the clear reference that the flash-attention kernel
(``unet_from_scratch.kernels.attention``), which never holds the (n, m) matrices, is tested against.

Checks (the policy of ``reference/_checks.py``): q, k and v must be finite, since one NaN or infinity spreads
through the softmax's sum over a whole row of weights, and so must the scores: float64 values of 1e200 are
finite, but their products overflow to infinity and the softmax would turn them into NaN. A softmax over no key
is undefined, so at least one key is needed, and a head_dim of at least 1 (the default scale is 1/√d).
"""

from __future__ import annotations

import math

import numpy as np

from unet_from_scratch.reference._checks import (
    check_cache,
    check_finite,
    check_float_array,
    check_real,
    check_same_dtype,
)

_LAYOUT = "(batch, heads, seq, head_dim)"


def scaled_dot_product_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float | None = None):
    """softmax(scale · q kᵀ) v over the last two axes, for every batch element and head.

    Args:
        q: (B, H, n, d) float32 or float64 queries.
        k: (B, H, m, d) keys, same dtype.
        v: (B, H, m, dv) values, same dtype.
        scale: multiplies the scores; default ``1 / sqrt(d)``.

    Returns:
        out: (B, H, n, dv), the dtype of the inputs.
        cache: what the backward needs, a dict of ``q, k, v, p, out, scale`` with ``p`` the (B, H, n, m) weights.

    The softmax is the stable one: subtracting each row's maximum before ``exp`` changes nothing mathematically
    (the factor ``exp(-max)`` cancels between numerator and denominator) but keeps every exponent ≤ 0, so no
    score overflows, and the largest term is exactly 1, so the denominator is ≥ 1 and never underflows to 0.
    """
    for name, x in (("q", q), ("k", k), ("v", v)):
        check_float_array(x, name, ndim=4, layout=_LAYOUT)
        check_finite(x, name)
    check_same_dtype(q=q, k=k, v=v)
    if q.shape[:2] != k.shape[:2] or k.shape[:2] != v.shape[:2]:
        raise ValueError(f"q, k, v must share (batch, heads), got {q.shape[:2]}, {k.shape[:2]}, {v.shape[:2]}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q and k must share head_dim, got q {q.shape} and k {k.shape}")
    if k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must share seq (one value per key), got k {k.shape} and v {v.shape}")
    if q.shape[3] == 0:
        raise ValueError(f"q and k must have head_dim >= 1, got q {q.shape} and k {k.shape}")
    if k.shape[2] == 0:
        raise ValueError(f"k and v must hold at least one key (a softmax over none is undefined), got k {k.shape}")
    scale = 1.0 / math.sqrt(q.shape[3]) if scale is None else check_real(scale, "scale")

    with np.errstate(over="ignore", invalid="ignore"):
        s = scale * (q @ np.swapaxes(k, -1, -2))  # (B, H, n, m)
    if not np.all(np.isfinite(s)):
        raise ValueError(
            f"the scores scale · q kᵀ must be finite, got {s.size - np.count_nonzero(np.isfinite(s))} that overflow "
            f"{s.dtype} (largest |q| {np.abs(q).max():.3g}, |k| {np.abs(k).max():.3g}, scale {scale:.3g})"
        )
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)  # (B, H, n, m)
    out = p @ v  # (B, H, n, dv)
    return out, {"layer": "scaled_dot_product_attention", "q": q, "k": k, "v": v, "p": p, "out": out, "scale": scale}


def scaled_dot_product_attention_backward(dout: np.ndarray, cache):
    """Gradients of the attention above: ``(dq, dk, dv)`` given ``dout = dL/dout`` of shape (B, H, n, dv).

    Derivation, per batch element and head (the chain rule through O = P V, P = softmax(S), S = scale · Q Kᵀ):

        dV = Pᵀ dO                                      O is linear in V
        dP = dO Vᵀ                                      ... and in P
        dS = P ∘ (dP − rowsum(dO ∘ O))                  the softmax's Jacobian, row by row (below)
        dQ = scale · dS K                               S is bilinear in Q and K
        dK = scale · dSᵀ Q

    Softmax row i has ∂P_ij/∂S_il = P_ij (δ_jl − P_il), so dS_il = Σ_j dP_ij P_ij (δ_jl − P_il)
    = P_il (dP_il − Σ_j P_ij dP_ij). The sum is Σ_j P_ij (dO_i · V_j) = dO_i · (Σ_j P_ij V_j) = dO_i · O_i:
    a dot product of two rows the forward already produced, which is why flash attention's backward needs no
    (n, m) matrix to compute it ("delta" in Dao et al. 2022, "FlashAttention", Appendix B.2).

    ``cache`` is the one the forward returned. Returns arrays shaped like q, k and v, in their dtype.
    """
    check_cache(cache, "scaled_dot_product_attention")
    q, k, v, p, out, scale = (cache[name] for name in ("q", "k", "v", "p", "out", "scale"))
    check_float_array(dout, "dout", ndim=4, layout=_LAYOUT)
    if dout.shape != out.shape:
        raise ValueError(f"dout must have the output's shape {out.shape}, got {dout.shape}")

    dv = np.swapaxes(p, -1, -2) @ dout  # (B, H, m, dv)
    dp = dout @ np.swapaxes(v, -1, -2)  # (B, H, n, m)
    delta = np.sum(dout * out, axis=-1, keepdims=True)  # (B, H, n, 1) = rowsum(P ∘ dP)
    ds = p * (dp - delta)  # (B, H, n, m)
    dq = scale * (ds @ k)  # (B, H, n, d)
    dk = scale * (np.swapaxes(ds, -1, -2) @ q)  # (B, H, m, d)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)
