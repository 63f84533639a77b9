"""
Flash attention in Triton: ``softmax(scale · q kᵀ) v`` without ever holding the (seq × seq) matrix
==================================================================================================

Plain attention writes the scores S = scale · Q Kᵀ and the weights P = softmax(S) to memory: two (seq × seq)
matrices per batch element and head. At a U-Net bottleneck of 64x64 positions that is seq = 4096, so 16M scores
per head, and the matmuls wait on memory traffic rather than on arithmetic.

Flash attention (Dao et al. 2022, "FlashAttention"; Dao 2023, "FlashAttention-2") never writes them. A program
owns one tile of BLOCK_M queries and streams the keys and values past it in tiles of BLOCK_N, keeping only
running softmax statistics (the *online softmax*, Milakov & Gimelshein 2018). It writes the output and one
number per query, the log-sum-exp of its scores: O(seq) extra memory instead of O(seq²). The backward recomputes
each tile of P from Q, K and that log-sum-exp instead of reading a stored P.

Layout follows the Triton tutorial ``python/tutorials/06-fused-attention.py``:

- ``_attn_fwd``            grid (query tiles, batch·heads): O and the log-sum-exp.
- ``_attn_bwd_preprocess`` grid (query tiles, batch·heads): delta = rowsum(dO ∘ O).
- ``_attn_bwd_dkdv``       grid (key tiles, batch·heads): each program owns a K/V tile and loops over all queries.
- ``_attn_bwd_dq``         grid (query tiles, batch·heads): each program owns a Q tile and loops over all keys.

Splitting dK/dV from dQ means every program writes only the rows it owns: no atomics, and the result does not
depend on the order programs run in. The price is computing the tile of P twice, once in each kernel.

Shapes: q, k, v and the output are (batch, heads, seq, head_dim), contiguous inside the kernels (the wrapper
makes them so), float32, float16 or bfloat16; every accumulation is in float32. head_dim 16 to 128; it is padded
up to a power of two (``tl.arange`` needs one) and the padding is masked to zero, which adds nothing to q·k and
produces output columns that are never stored. Any seq works: the last tile's missing rows are masked.

Precision: ``tl.dot`` on float32 inputs uses TF32 tensor cores by default on NVIDIA GPUs, which keeps only 10
bits of mantissa (relative error ~5e-4 per product). Here float32 means float32: every ``tl.dot`` passes
``input_precision="ieee"``, so the float32 kernel agrees with the NumPy reference to float32 rounding on any
device. The flag only affects float32 operands (float16 and bfloat16 compile to Hopper's wgmma tensor-core
instructions with it); float32 runs on the FMA units and spills registers at large head_dim, so it is for parity
checks, and bfloat16 or float16 is the dtype to train in.

Tiles: on a GPU ``@triton.autotune`` picks them per (seq, head_dim). Without a GPU autotuning is unavailable (the
interpreter cannot time configurations), so one fixed 16x16 tiling is used: the smallest tile ``tl.dot``
accepts, and the one that keeps interpreter grids small.
"""

from __future__ import annotations

import math
from contextlib import nullcontext

import torch
import triton
import triton.language as tl
from torch.autograd.function import once_differentiable

from unet_from_scratch.kernels import interpreting, triton_runs_on

HEAD_DIM_RANGE = (16, 128)
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# exp(x) = exp2(x · log2(e)). The kernels work in base 2 (``tl.exp2`` is the GPU's native instruction) by folding
# log2(e) into the score scale once, so the log-sum-exp they save is in base 2 as well.
LOG2_E = 1.4426950408889634

_AUTOTUNE = torch.cuda.is_available() and not interpreting()
_TILES = {} if _AUTOTUNE else dict(BLOCK_M=16, BLOCK_N=16)


def _autotune_on_gpu(*configs):
    """``triton.autotune`` over ``configs`` (BLOCK_M, BLOCK_N, num_stages, num_warps), keyed on the problem size,
    where a GPU can time them; else nothing (the launchers then pass the fixed 16x16 tiles)."""
    if not _AUTOTUNE:
        return lambda kernel: kernel
    return triton.autotune(
        configs=[triton.Config(dict(BLOCK_M=m, BLOCK_N=n), num_stages=s, num_warps=w) for m, n, s, w in configs],
        key=["SEQ_LEN", "HEAD_DIM"],
    )


# %%
# Forward
# -------
# One program: the query tile Q_i (BLOCK_M rows) of one (batch, head). For each key/value tile j it computes the
# scores S_ij = Q_i K_jᵀ · scale (in base-2 units), then updates, for every query row,
#
#   m_new = max(m, rowmax(S_ij))                  running maximum, so exp2 never sees a positive exponent
#   alpha = exp2(m - m_new)                       rescales what was summed under the old maximum
#   P_ij  = exp2(S_ij - m_new)
#   l     = alpha · l   + rowsum(P_ij)            running softmax denominator
#   acc   = alpha · acc + P_ij V_j                running unnormalised output
#
# and finally O_i = acc / l. The log-sum-exp m + log2(l) is saved: the backward rebuilds any tile of P from it as
# exp2(S_ij - lse) without the running rescaling. Bytes moved per program: Q_i once, all of K and V once.


# (BLOCK_M, BLOCK_N, stages, warps): a few tilings around the tutorial's 128 queries x 64 keys. Each autotune list
# leaves out the tilings that spill registers on sm_90 in float16/bfloat16 at head_dim 128 (compiled ahead of time
# and read off the cubin): with 4 warps, a 128-row tile's float32 accumulators and operands outgrow 255 registers.
@_autotune_on_gpu((64, 64, 3, 4), (128, 64, 3, 8), (128, 128, 2, 8), (64, 32, 4, 4))
@triton.jit
def _attn_fwd(
    Q, K, V, O, LSE,
    qk_scale,  # scale · log2(e)
    SEQ_LEN,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    # Every tensor is (batch·heads, seq, head_dim) contiguous: one offset finds this head's rows. int64, since
    # batch·heads·seq·head_dim can pass 2**31 at large sizes.
    head = bh.to(tl.int64) * SEQ_LEN * HEAD_DIM
    Q += head
    K += head
    V += head
    O += head

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    mask_m = offs_m < SEQ_LEN
    mask_d = offs_d < HEAD_DIM
    mask_md = mask_m[:, None] & mask_d[None, :]
    # Padded rows and head_dim columns load as 0: they add nothing to any dot product.
    q = tl.load(Q + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_md, other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)
    for start_n in range(0, SEQ_LEN, BLOCK_N):
        offs_k = start_n + offs_n
        mask_n = offs_k < SEQ_LEN
        # K loaded transposed, (HEAD_DIM_PAD, BLOCK_N), so the scores are a plain (M, D) x (D, N) product.
        kT = tl.load(
            K + offs_k[None, :] * HEAD_DIM + offs_d[:, None], mask=mask_d[:, None] & mask_n[None, :], other=0.0
        )
        s = tl.dot(q, kT, input_precision="ieee") * qk_scale  # (BLOCK_M, BLOCK_N)
        # Keys past the end get weight exp2(-inf) = 0. Every tile holds at least one real key, so m_new is finite.
        s = tl.where(mask_n[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp2(m_i - m_new)  # first tile: exp2(-inf) = 0
        p = tl.exp2(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(V + offs_k[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_n[:, None] & mask_d[None, :], other=0.0)
        # P in the input dtype for the tensor-core product, as the FlashAttention papers do; the sum stays float32.
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m_i = m_new

    acc = acc / l_i[:, None]
    tl.store(O + offs_m[:, None] * HEAD_DIM + offs_d[None, :], acc.to(O.dtype.element_ty), mask=mask_md)
    tl.store(LSE + bh.to(tl.int64) * SEQ_LEN + offs_m, m_i + tl.log2(l_i), mask=mask_m)


# %%
# Backward
# --------
# With S = scale · Q Kᵀ (natural units; the kernels' base-2 scores are S · log2 e) and dS the gradient with respect
# to S (derived in ``reference/attention.py``):
#
#   dV = Pᵀ dO        dP = dO Vᵀ        dS = P ∘ (dP − delta),  delta = rowsum(dO ∘ O)
#   dQ = scale · dS K                   dK = scale · dSᵀ Q
#
# delta is one number per query, computed once here so neither backward kernel needs all of a query's row of P.


@triton.jit
def _attn_bwd_preprocess(
    O, DO, DELTA,
    SEQ_LEN,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(1)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    mask = (offs_m < SEQ_LEN)[:, None] & (offs_d < HEAD_DIM)[None, :]
    rows = bh.to(tl.int64) * SEQ_LEN * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    o = tl.load(O + rows, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + rows, mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + bh.to(tl.int64) * SEQ_LEN + offs_m, tl.sum(o * do, 1), mask=offs_m < SEQ_LEN)


# One program owns the key/value tile K_j, V_j and sweeps every query tile i, accumulating
#   dV_j += P_ijᵀ dO_i     and     dK_j += dS_ijᵀ Q_i.
# It works with the transposed tile Pᵀ (BLOCK_N, BLOCK_M), rebuilt as exp2(K_j Q_iᵀ · scale·log2 e − lse_i), so
# every product has the owned keys as its rows.


# Owning many keys (BLOCK_N) and sweeping few queries at a time, as the tutorial's backward does.
@_autotune_on_gpu((32, 128, 3, 8), (64, 64, 3, 8), (32, 64, 3, 4))
@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE, DELTA,
    scale,
    qk_scale,  # scale · log2(e)
    SEQ_LEN,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    head = bh.to(tl.int64) * SEQ_LEN * HEAD_DIM
    Q += head
    K += head
    V += head
    DO += head
    DK += head
    DV += head
    LSE += bh.to(tl.int64) * SEQ_LEN
    DELTA += bh.to(tl.int64) * SEQ_LEN

    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    mask_n = offs_n < SEQ_LEN
    mask_d = offs_d < HEAD_DIM
    mask_nd = mask_n[:, None] & mask_d[None, :]
    k = tl.load(K + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_nd, other=0.0)
    v = tl.load(V + offs_n[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_nd, other=0.0)

    dk = tl.zeros([BLOCK_N, HEAD_DIM_PAD], tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM_PAD], tl.float32)
    for start_m in range(0, SEQ_LEN, BLOCK_M):
        offs_q = start_m + offs_m
        mask_m = offs_q < SEQ_LEN
        mask_md = mask_m[:, None] & mask_d[None, :]
        qT = tl.load(
            Q + offs_q[None, :] * HEAD_DIM + offs_d[:, None], mask=mask_d[:, None] & mask_m[None, :], other=0.0
        )
        # Queries past the end load q = 0, lse = 0, dO = 0 and delta = 0: their weights are exp2(0) = 1 but meet
        # dO = 0 and dP - delta = 0, so they add nothing. Keys past the end can give inf here (exp2(-lse)),
        # but only in their own rows of dK and dV, which are never stored.
        lse = tl.load(LSE + offs_q, mask=mask_m, other=0.0)
        pT = tl.exp2(tl.dot(k, qT, input_precision="ieee") * qk_scale - lse[None, :])  # (BLOCK_N, BLOCK_M)
        do = tl.load(DO + offs_q[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_md, other=0.0)
        dv += tl.dot(pT.to(do.dtype), do, input_precision="ieee")
        delta = tl.load(DELTA + offs_q, mask=mask_m, other=0.0)
        dpT = tl.dot(v, tl.trans(do), input_precision="ieee")  # (BLOCK_N, BLOCK_M)
        dsT = pT * (dpT - delta[None, :])
        dk += tl.dot(dsT.to(qT.dtype), tl.trans(qT), input_precision="ieee")

    tl.store(DK + offs_n[:, None] * HEAD_DIM + offs_d[None, :], (dk * scale).to(DK.dtype.element_ty), mask=mask_nd)
    tl.store(DV + offs_n[:, None] * HEAD_DIM + offs_d[None, :], dv.to(DV.dtype.element_ty), mask=mask_nd)


# One program owns the query tile Q_i and sweeps every key/value tile j, accumulating dQ_i += dS_ij K_j.


@_autotune_on_gpu((128, 32, 3, 8), (128, 64, 2, 8), (64, 32, 3, 4))
@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, DQ, LSE, DELTA,
    scale,
    qk_scale,  # scale · log2(e)
    SEQ_LEN,
    HEAD_DIM: tl.constexpr,
    HEAD_DIM_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    head = bh.to(tl.int64) * SEQ_LEN * HEAD_DIM
    Q += head
    K += head
    V += head
    DO += head
    DQ += head

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM_PAD)
    mask_m = offs_m < SEQ_LEN
    mask_d = offs_d < HEAD_DIM
    mask_md = mask_m[:, None] & mask_d[None, :]
    q = tl.load(Q + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_md, other=0.0)
    do = tl.load(DO + offs_m[:, None] * HEAD_DIM + offs_d[None, :], mask=mask_md, other=0.0)
    lse = tl.load(LSE + bh.to(tl.int64) * SEQ_LEN + offs_m, mask=mask_m, other=0.0)
    delta = tl.load(DELTA + bh.to(tl.int64) * SEQ_LEN + offs_m, mask=mask_m, other=0.0)

    dq = tl.zeros([BLOCK_M, HEAD_DIM_PAD], tl.float32)
    for start_n in range(0, SEQ_LEN, BLOCK_N):
        offs_k = start_n + offs_n
        mask_n = offs_k < SEQ_LEN
        mask_dn = mask_d[:, None] & mask_n[None, :]
        kT = tl.load(K + offs_k[None, :] * HEAD_DIM + offs_d[:, None], mask=mask_dn, other=0.0)
        vT = tl.load(V + offs_k[None, :] * HEAD_DIM + offs_d[:, None], mask=mask_dn, other=0.0)
        p = tl.exp2(tl.dot(q, kT, input_precision="ieee") * qk_scale - lse[:, None])  # (BLOCK_M, BLOCK_N)
        # Keys past the end load K = V = 0, so their weight exp2(-lse) meets zero rows of K. But when every score
        # of a row is below -128 (base 2) that weight overflows to inf, and inf · 0 = NaN: zero it outright.
        p = tl.where(mask_n[None, :], p, 0.0)
        dp = tl.dot(do, vT, input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(kT.dtype), tl.trans(kT), input_precision="ieee")

    tl.store(DQ + offs_m[:, None] * HEAD_DIM + offs_d[None, :], (dq * scale).to(DQ.dtype.element_ty), mask=mask_md)


# %%
# Launchers and the autograd Function
# -----------------------------------


def _grid(seq_len: int, heads: int, block: str):
    return lambda meta: (triton.cdiv(seq_len, meta[block]), heads)


def _on_device(t: torch.Tensor):
    """Make ``t``'s GPU the current one while launching (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.is_cuda else nullcontext()


def _forward(q, k, v, scale: float):
    batch, heads, seq, head_dim = q.shape
    out = torch.empty_like(q)
    lse = torch.empty((batch, heads, seq), device=q.device, dtype=torch.float32)
    pad = triton.next_power_of_2(head_dim)
    with _on_device(q):
        _attn_fwd[_grid(seq, batch * heads, "BLOCK_M")](
            q, k, v, out, lse, scale * LOG2_E, seq, HEAD_DIM=head_dim, HEAD_DIM_PAD=pad, **_TILES
        )
    return out, lse


def _backward(do, q, k, v, out, lse, scale: float):
    batch, heads, seq, head_dim = q.shape
    pad = triton.next_power_of_2(head_dim)
    delta = torch.empty_like(lse)
    dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
    with _on_device(q):
        _attn_bwd_preprocess[(triton.cdiv(seq, 64), batch * heads)](
            out, do, delta, seq, HEAD_DIM=head_dim, HEAD_DIM_PAD=pad, BLOCK_M=64
        )
        _attn_bwd_dkdv[_grid(seq, batch * heads, "BLOCK_N")](
            q, k, v, do, dk, dv, lse, delta, scale, scale * LOG2_E, seq, HEAD_DIM=head_dim, HEAD_DIM_PAD=pad, **_TILES
        )
        _attn_bwd_dq[_grid(seq, batch * heads, "BLOCK_M")](
            q, k, v, do, dq, lse, delta, scale, scale * LOG2_E, seq, HEAD_DIM=head_dim, HEAD_DIM_PAD=pad, **_TILES
        )
    return dq, dk, dv


class FlashAttentionFunction(torch.autograd.Function):
    """Autograd glue: saves q, k, v, the output and the (batch, heads, seq) log-sum-exp; nothing of size seq²."""

    @staticmethod
    def forward(ctx, q, k, v, scale):
        out, lse = _forward(q, k, v, scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    @once_differentiable  # the backward kernels are not themselves differentiable: say so instead of being wrong
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(dout.contiguous(), q, k, v, out, lse, ctx.scale)
        return dq, dk, dv, None


def _check_inputs(q, k, v, scale) -> float:
    """Every ValueError ``flash_attention`` can raise, before anything launches. Returns the scale to use."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be 4-D (batch, heads, seq, head_dim), got shape {tuple(t.shape)}")
        if t.dtype not in DTYPES:
            raise ValueError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if not q.shape == k.shape == v.shape:
        raise ValueError(f"q, k, v must have the same shape, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if not q.dtype == k.dtype == v.dtype:
        raise ValueError(f"q, k, v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.device == k.device == v.device:
        raise ValueError(f"q, k, v must be on the same device, got {q.device}, {k.device}, {v.device}")
    if q.numel() == 0:
        raise ValueError(f"q, k, v must be non-empty, got shape {tuple(q.shape)}")
    low, high = HEAD_DIM_RANGE
    if not low <= q.shape[3] <= high:
        raise ValueError(f"head_dim must be in [{low}, {high}], got {q.shape[3]}")
    if not triton_runs_on(q, k, v):
        raise ValueError(f"flash_attention needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got {q.device}")
    if scale is None:
        scale = 1.0 / math.sqrt(q.shape[3])
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise ValueError(f"scale must be a finite number, got {scale!r}")
    # A NaN or inf would silently poison whole output rows. min and max keep both (NaN propagates, ±inf is an
    # extreme), so one read of each tensor and one host sync decide it, without a boolean mask as large as q.
    extremes = torch.stack([m for t in (q, k, v) for m in torch.aminmax(t)])
    if not bool(torch.isfinite(extremes).all()):
        raise ValueError("q, k, v must be finite, got NaN or infinite value(s)")
    return float(scale)


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(scale · q kᵀ) v by the flash-attention kernels, differentiable in q, k and v.

    Args:
        q, k, v: (batch, heads, seq, head_dim) tensors of one dtype (float32, float16 or bfloat16) on one device:
            CUDA, or CPU when Triton's interpreter is on (``TRITON_INTERPRET=1``). head_dim in [16, 128].
        scale: multiplies the scores; default ``1 / sqrt(head_dim)``.

    Returns:
        (batch, heads, seq, head_dim) in the inputs' dtype: the same function as
        ``torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=scale)``.

    Raises ValueError for anything else (shapes, dtypes, devices, head_dim, scale, non-finite values), before any
    kernel launches; the finiteness check reads q, k and v once more and waits for the device once.
    """
    scale = _check_inputs(q, k, v, scale)
    return FlashAttentionFunction.apply(q.contiguous(), k.contiguous(), v.contiguous(), scale)
