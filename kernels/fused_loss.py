"""
The fused segmentation loss in Triton: Dice + focal + weighted cross-entropy in two passes over the logits
========================================================================================================

The loss the U-Net trains on is a weighted sum of three terms of the class probabilities p = softmax(z) over the
channel axis of the logits z (N, C, H, W), with t(x) the target class at pixel x and P = N·H·W pixels (the
contract is ``reference.losses.combined_loss``):

    L = c0 · Dice + c1 · Focal + c2 · CE

    CE    = -Σ_x w(x) · log p_t(x) / Σ_x w(x),   w(x) = pixel_weights[x] · class_weights[t(x)]   (0 if Σw = 0)
    Focal = mean_x[ -alpha · (1 - p_t(x))^gamma · log p_t(x) ]            (Lin et al. 2017, softmax form)
    Dice  = 1 - mean_{n, c included} (2·I[n,c] + smooth) / (S[n,c] + smooth)     (Milletari et al. 2016)
            I[n,c] = Σ_hw p·g,  S[n,c] = Σ_hw p + Σ_hw g,  g = one_hot(t);  c ≥ 1 unless include_background
            (the one class when C == 1)

Composed from torch ops (``nn.losses.combined_loss_torch``), log p, p and the one-hot target are materialised
(N·C·H·W floats each), every op reads and writes whole tensors of that size, and autograd keeps several of them
for a backward that does the same again. At N=16, C=8, 512x512 in float32 one such tensor is 134 MB.

Here the whole loss is two passes over the logits:

- ``_loss_partials``  (forward, grid (N, T)): each program streams a strided share of one image's pixels, computes
  the softmax of every pixel in registers and accumulates the CE numerator and weight sum, the focal sum and the
  Dice sums I, Σp, Σg. It writes one row of partial sums: a few floats per program.
- ``_loss_combine``   (forward, one program): adds the partial rows, forms the loss and, from I and S, the per-(n, c)
  coefficients of the Dice gradient, which the backward needs before it can touch any pixel.
- ``_loss_backward``  (grid (N, pixel tiles)): recomputes the softmax from the logits and writes dL/dz.

Memory traffic: the forward reads the logits, the targets and the weight map once; the backward reads them once
more and writes the gradient. At N=16, C=8, 512x512 (float32 logits, int64 targets, a float32 weight map) that is
2 · (134 + 34 + 17) MB + 134 MB = 503 MB per step, 150 µs at an H100's 3.35 TB/s. Nothing of size N·C·H·W is
allocated besides the gradient, and no probability ever leaves the registers. Partial sums are written, never
atomically added, so the result is the same on every run.

Layout: logits NCHW contiguous or channels-last (any other strides are made contiguous first), float32, float16 or
bfloat16; every sum is float32. Targets any integer dtype, (N, H, W). C from 1 to 16 is padded to a power of two
BLOCK_C (``tl.arange`` needs one) and the padding masked out; any H·W works, the last tile masked.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from unet_from_scratch.kernels import interpreting, triton_runs_on
from unet_from_scratch.kernels.loss_checks import FUSED_DTYPES as DTYPES
from unet_from_scratch.kernels.loss_checks import FUSED_MAX_CLASSES as MAX_CLASSES
from unet_from_scratch.kernels.loss_checks import LossOptions, check_loss_inputs

# On a GPU ``@triton.autotune`` picks the tile per (N, C, H·W); without one it cannot time configurations (and the
# interpreter runs programs one after another), so a fixed small tile keeps interpreter grids at a few programs
# while still exercising the loop over tiles and the masked tail on 13x13 images.
_AUTOTUNE = torch.cuda.is_available() and not interpreting()
_INTERPRETER_PIXELS = 64


def _autotune_on_gpu(key):
    """``triton.autotune`` over tile sizes and warps keyed on ``key``, where a GPU can time them; else nothing.

    A config fixes TILE = BLOCK_C · BLOCK_P, the elements one program holds in registers at once, rather than the
    pixels per tile: so the register footprint is the same for C = 2 and C = 16. The configs give each thread 8 or
    16 elements of the tile: compiled for sm_90, 8 per thread costs 60-110 registers in the forward (its three
    running sums are tile-sized), 16 per thread 130-180, and 32 per thread spills.
    """
    if not _AUTOTUNE:
        return lambda kernel: kernel
    shapes = ((1024, 4), (2048, 4), (2048, 8), (4096, 8), (4096, 16))
    configs = [triton.Config(dict(TILE=tile), num_warps=warps) for tile, warps in shapes]
    return triton.autotune(configs=configs, key=key)


# %%
# The softmax of a tile of pixels
# -------------------------------
# A tile is [BLOCK_C, BLOCK_P]: all classes of BLOCK_P neighbouring pixels. In NCHW each class row is BLOCK_P
# consecutive floats (coalesced loads along pixels); in channels-last the whole tile is one contiguous run. Padded
# classes enter as -inf, so they get probability exp(-inf) = 0 and never win the max. Pixels past the end of the
# image enter as finite zeros (a harmless uniform softmax) and are masked out of every sum by the caller.
#
# log p_t is taken from the log-sum-exp, log p_t = (z_t - max) - log Σ exp(z - max), not as log(p_t): exact where
# p_t underflows. The target is never used as an index, only compared with the class ids, so a label out of range
# can give a wrong loss but never an out-of-bounds read.


@triton.jit
def _softmax_tile(z, offs_c, t, p_mask):
    z_max = tl.max(z, axis=0)
    shifted = z - z_max[None, :]
    e = tl.exp(shifted)
    s = tl.sum(e, axis=0)
    p = e / s[None, :]
    is_t = (offs_c[:, None] == t[None, :]) & p_mask[None, :]
    logp_t = tl.sum(tl.where(is_t, shifted, 0.0), axis=0) - tl.log(s)
    return p, is_t, logp_t, tl.exp(logp_t)


@triton.jit
def _pixel_weight(pw_ptr, cw, offs_p, p_mask, is_t, HAS_PW: tl.constexpr, HAS_CW: tl.constexpr):
    """w(x) = pixel_weights[x] · class_weights[t(x)], 0 outside the image. class_weights[t] is a masked sum over
    the tile's classes rather than a gather: no indexing by the label."""
    w = tl.where(p_mask, 1.0, 0.0)
    if HAS_PW:
        w = w * tl.load(pw_ptr + offs_p, mask=p_mask, other=0.0).to(tl.float32)
    if HAS_CW:
        w = w * tl.sum(tl.where(is_t, cw[:, None], 0.0), axis=0)
    return w


@triton.jit
def _power(u, exponent):
    """u ** exponent for u in [0, 1] as exp(exponent · log u) (libdevice ``pow`` does not run in the interpreter).

    Guarded at u = 0: 0 ** 0 = 1 and 0 otherwise. (For a negative exponent 0 is not the limit, but the only
    negative exponent used, gamma - 1, multiplies p_t · log p_t, which is 0 where u = 1 - p_t = 0.)
    """
    safe = tl.where(u > 0, u, 1.0)
    at_zero = tl.where(exponent == 0, 1.0, 0.0)
    return tl.where(u > 0, tl.exp(exponent * tl.log(safe)), at_zero)


# %%
# Forward, pass 1: partial sums
# -----------------------------
# Program (n, split) visits the tiles split, split + T, split + 2T, ... of image n. T is chosen by the host so that
# N·T programs fill the GPU a few times over; each program keeps its running sums in registers, elementwise over
# the tile (no cross-thread reduction inside the loop), and reduces them once at the end. Its output row:
#
#   dice_part[0|1|2, n, split, :BLOCK_C]  Σ p·g, Σ p, Σ g over its pixels, per class
#   sum_part[0|1|2, n, split]            Σ w·(-log p_t), Σ w, Σ -(1 - p_t)^gamma · log p_t
#
# Bytes: every logit, label and weight once in; 3 floats per class and 3 more per program out.


@_autotune_on_gpu(key=["N", "C", "HW"])
@triton.jit
def _loss_partials(
    z_ptr, t_ptr, pw_ptr, cw_ptr,
    dice_part_ptr, sum_part_ptr,
    N, C, HW,
    stride_zn, stride_zc, stride_zp,
    gamma,
    T: tl.constexpr,
    BLOCK_C: tl.constexpr,
    TILE: tl.constexpr,
    HAS_PW: tl.constexpr,
    HAS_CW: tl.constexpr,
    GAMMA_IS_TWO: tl.constexpr,
):  # fmt: skip
    BLOCK_P: tl.constexpr = TILE // BLOCK_C
    n = tl.program_id(0)
    split = tl.program_id(1)
    # int64 image offsets: N·C·H·W passes 2**31 at large batches.
    z_img = z_ptr + n.to(tl.int64) * stride_zn
    t_img = t_ptr + n.to(tl.int64) * HW
    pw_img = pw_ptr + n.to(tl.int64) * HW
    offs_c = tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    cw = tl.zeros([BLOCK_C], tl.float32)
    if HAS_CW:
        cw = tl.load(cw_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)

    acc_inter = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    acc_prob = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    acc_count = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    acc_ce = tl.zeros([BLOCK_P], tl.float32)
    acc_w = tl.zeros([BLOCK_P], tl.float32)
    acc_focal = tl.zeros([BLOCK_P], tl.float32)
    for start in range(split * BLOCK_P, HW, T * BLOCK_P):
        offs_p = start + tl.arange(0, BLOCK_P)
        p_mask = offs_p < HW
        z = tl.load(
            z_img + offs_c[:, None] * stride_zc + offs_p[None, :] * stride_zp,
            mask=c_mask[:, None] & p_mask[None, :],
            other=0.0,
        ).to(tl.float32)
        z = tl.where(c_mask[:, None], z, float("-inf"))
        t = tl.load(t_img + offs_p, mask=p_mask, other=0).to(tl.int32)
        p, is_t, logp_t, p_t = _softmax_tile(z, offs_c, t, p_mask)
        w = _pixel_weight(pw_img, cw, offs_p, p_mask, is_t, HAS_PW, HAS_CW)

        one_minus = 1.0 - p_t
        if GAMMA_IS_TWO:
            modulator = one_minus * one_minus
        else:
            modulator = _power(one_minus, gamma)

        acc_inter += tl.where(is_t, p, 0.0)
        acc_prob += tl.where(p_mask[None, :], p, 0.0)
        acc_count += is_t.to(tl.float32)
        acc_ce += -w * logp_t
        acc_w += w
        acc_focal += tl.where(p_mask, -modulator * logp_t, 0.0)

    row = n * T + split
    plane = N * T * BLOCK_C
    tl.store(dice_part_ptr + row * BLOCK_C + offs_c, tl.sum(acc_inter, axis=1))
    tl.store(dice_part_ptr + plane + row * BLOCK_C + offs_c, tl.sum(acc_prob, axis=1))
    tl.store(dice_part_ptr + 2 * plane + row * BLOCK_C + offs_c, tl.sum(acc_count, axis=1))
    tl.store(sum_part_ptr + row, tl.sum(acc_ce, axis=0))
    tl.store(sum_part_ptr + N * T + row, tl.sum(acc_w, axis=0))
    tl.store(sum_part_ptr + 2 * N * T + row, tl.sum(acc_focal, axis=0))


# %%
# Forward, pass 2: the loss and the Dice coefficients
# ---------------------------------------------------
# One program adds the N·T partial rows. With K = N · (number of included classes) and D = S + smooth, the Dice
# term's derivative with respect to one probability is
#
#   dDice/dp[n,c,x] = -(1/K) · (2·g[n,c,x]·D - (2·I + smooth)) / D²  =  a[n,c] · g[n,c,x] + b[n,c]
#   a = -2 / (K·D),   b = (2·I + smooth) / (K·D²)       (0 for excluded classes)
#
# so the backward needs only a and b (times c0) per (n, c): they are stored here, with the two scalars that scale
# the per-pixel CE and focal gradients, c2 / Σw (0 when Σw = 0) and c1 · alpha / P.


@triton.jit
def _loss_combine(
    dice_part_ptr, sum_part_ptr,
    loss_ptr, coef_ptr, scale_ptr,
    N, C, c_start, n_terms, n_pixels,
    alpha, smooth, c_dice, c_focal, c_ce,
    T: tl.constexpr,
    BLOCK_C: tl.constexpr,
):  # fmt: skip
    offs_t = tl.arange(0, T)
    offs_c = tl.arange(0, BLOCK_C)
    included = (offs_c >= c_start) & (offs_c < C)
    plane = N * T * BLOCK_C

    dice_acc = tl.zeros([BLOCK_C], tl.float32)
    ce_acc = tl.zeros([T], tl.float32)
    w_acc = tl.zeros([T], tl.float32)
    focal_acc = tl.zeros([T], tl.float32)
    for n in range(N):
        rows = (n * T + offs_t)[:, None] * BLOCK_C + offs_c[None, :]
        inter = tl.sum(tl.load(dice_part_ptr + rows), axis=0)
        prob = tl.sum(tl.load(dice_part_ptr + plane + rows), axis=0)
        count = tl.sum(tl.load(dice_part_ptr + 2 * plane + rows), axis=0)
        denom = prob + count + smooth
        numer = 2.0 * inter + smooth
        dice_acc += tl.where(included, numer / denom, 0.0)
        coef_a = tl.where(included, -2.0 * c_dice / (n_terms * denom), 0.0)
        coef_b = tl.where(included, c_dice * numer / (n_terms * denom * denom), 0.0)
        tl.store(coef_ptr + n * 2 * BLOCK_C + offs_c, coef_a)
        tl.store(coef_ptr + n * 2 * BLOCK_C + BLOCK_C + offs_c, coef_b)
        ce_acc += tl.load(sum_part_ptr + n * T + offs_t)
        w_acc += tl.load(sum_part_ptr + N * T + n * T + offs_t)
        focal_acc += tl.load(sum_part_ptr + 2 * N * T + n * T + offs_t)

    w_sum = tl.sum(w_acc, axis=0)
    ce_scale = tl.where(w_sum > 0, c_ce / tl.where(w_sum > 0, w_sum, 1.0), 0.0)
    focal_scale = c_focal * alpha / n_pixels
    loss = c_dice * (1.0 - tl.sum(dice_acc, axis=0) / n_terms)
    loss += focal_scale * tl.sum(focal_acc, axis=0) + ce_scale * tl.sum(ce_acc, axis=0)
    tl.store(loss_ptr, loss)
    tl.store(scale_ptr, ce_scale)
    tl.store(scale_ptr + 1, focal_scale)


# %%
# Backward: recompute the softmax, write dL/dz
# --------------------------------------------
# With q_c = a_c · g_c + b_c the Dice derivative with respect to p (times c0, from pass 2), the softmax Jacobian
# dp_c/dz_j = p_c (δ_cj - p_j) gives, per pixel and class j,
#
#   Dice:   p_j · (q_j - Σ_c p_c q_c)
#   CE:     (c2 / Σw) · w · (p_j - g_j)                       since d(-log p_t)/dz_j = p_j - g_j
#   Focal:  -(c1·alpha/P) · f · (p_j - g_j),   f = gamma · (1 - p_t)^(gamma-1) · p_t · log p_t - (1 - p_t)^gamma
#
# all times the upstream gradient, read from memory so that no host synchronisation is needed. Recomputing p
# costs arithmetic the GPU has to spare; storing it would cost an N·C·H·W write and read. Bytes: logits, labels
# and weights in, the gradient out.


@_autotune_on_gpu(key=["C", "HW"])
@triton.jit
def _loss_backward(
    z_ptr, t_ptr, pw_ptr, cw_ptr,
    coef_ptr, scale_ptr, dloss_ptr, dz_ptr,
    C, HW,
    stride_zn, stride_zc, stride_zp,
    gamma,
    BLOCK_C: tl.constexpr,
    TILE: tl.constexpr,
    HAS_PW: tl.constexpr,
    HAS_CW: tl.constexpr,
    GAMMA_IS_TWO: tl.constexpr,
):  # fmt: skip
    BLOCK_P: tl.constexpr = TILE // BLOCK_C
    n = tl.program_id(0)
    offs_p = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_mask = offs_p < HW
    offs_c = tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    mask = c_mask[:, None] & p_mask[None, :]
    tile = n.to(tl.int64) * stride_zn + offs_c[:, None] * stride_zc + offs_p[None, :] * stride_zp

    z = tl.load(z_ptr + tile, mask=mask, other=0.0).to(tl.float32)
    z = tl.where(c_mask[:, None], z, float("-inf"))
    t = tl.load(t_ptr + n.to(tl.int64) * HW + offs_p, mask=p_mask, other=0).to(tl.int32)
    cw = tl.zeros([BLOCK_C], tl.float32)
    if HAS_CW:
        cw = tl.load(cw_ptr + offs_c, mask=c_mask, other=0.0).to(tl.float32)
    p, is_t, logp_t, p_t = _softmax_tile(z, offs_c, t, p_mask)
    w = _pixel_weight(pw_ptr + n.to(tl.int64) * HW, cw, offs_p, p_mask, is_t, HAS_PW, HAS_CW)
    g = is_t.to(tl.float32)

    coef_a = tl.load(coef_ptr + n * 2 * BLOCK_C + offs_c)
    coef_b = tl.load(coef_ptr + n * 2 * BLOCK_C + BLOCK_C + offs_c)
    q = coef_a[:, None] * g + coef_b[:, None]
    d_dice = p * (q - tl.sum(p * q, axis=0)[None, :])

    one_minus = 1.0 - p_t
    if GAMMA_IS_TWO:
        modulator = one_minus * one_minus
        modulator_slope = 2.0 * one_minus
    else:
        modulator = _power(one_minus, gamma)
        modulator_slope = gamma * _power(one_minus, gamma - 1.0)
    focal = modulator_slope * p_t * logp_t - modulator
    ce_scale = tl.load(scale_ptr)
    focal_scale = tl.load(scale_ptr + 1)
    k = ce_scale * w - focal_scale * focal

    dz = tl.load(dloss_ptr).to(tl.float32) * (d_dice + k[None, :] * (p - g))
    tl.store(dz_ptr + tile, dz.to(dz_ptr.dtype.element_ty), mask=mask)


# %%
# The host side: layout, launch sizes, the autograd Function
# ----------------------------------------------------------


def _layout(logits: torch.Tensor):
    """(logits, strides, memory format) such that element (n, c, pixel) sits at n·sn + c·sc + pixel·sp.

    Both layouts flatten (H, W) into one pixel axis; a tensor in neither is made contiguous. The strides are the
    dense ones of the format rather than ``stride()``: torch leaves the stride of a size-1 dimension arbitrary.
    """
    n, c, h, w = logits.shape
    if logits.is_contiguous():
        return logits, (c * h * w, h * w, 1), torch.contiguous_format
    if logits.is_contiguous(memory_format=torch.channels_last):
        return logits, (h * w * c, 1, c), torch.channels_last
    return logits.contiguous(), (c * h * w, h * w, 1), torch.contiguous_format


def _splits(n_images: int, hw: int, device: torch.device) -> int:
    """T, the programs per image in pass 1: a power of two (pass 2 loads a [T, BLOCK_C] block) such that the N·T
    programs fill every multiprocessor a few times, but no more than there are 256-pixel tiles to share."""
    if device.type == "cuda":
        wanted = 4 * torch.cuda.get_device_properties(device).multi_processor_count
        smallest_tile = 256
    else:
        wanted = 4  # the interpreter runs programs one after another
        smallest_tile = _INTERPRETER_PIXELS
    per_image = min(triton.cdiv(wanted, n_images), triton.cdiv(hw, smallest_tile))
    return triton.next_power_of_2(max(per_image, 1))


def _tile(block_c: int) -> dict:
    """Launch meta-parameters the autotuner does not choose (all of them under the interpreter)."""
    return {} if _AUTOTUNE else dict(TILE=_INTERPRETER_PIXELS * block_c, num_warps=4)


class CombinedLossFunction(torch.autograd.Function):
    """The fused loss as an autograd Function: forward returns the float32 scalar, backward dL/dlogits.

    The weights are constants of the loss: they get no gradient.
    """

    @staticmethod
    def forward(ctx, logits, target, pixel_weights, class_weights, options: LossOptions):
        alpha, gamma, smooth = options.alpha, options.gamma, options.smooth
        include_background, coefficients = options.include_background, options.coefficients
        n, c, h, w = logits.shape
        hw = h * w
        z, strides, memory_format = _layout(logits)
        target = target.contiguous()
        pw = pixel_weights.contiguous() if pixel_weights is not None else None
        cw = class_weights.to(torch.float32).contiguous() if class_weights is not None else None
        block_c = triton.next_power_of_2(c)
        splits = _splits(n, hw, z.device)
        c_start = 0 if include_background or c == 1 else 1
        c_dice, c_focal, c_ce = (float(x) for x in coefficients)
        flags = dict(HAS_PW=pw is not None, HAS_CW=cw is not None, GAMMA_IS_TWO=float(gamma) == 2.0)

        device = z.device
        dice_part = torch.empty((3, n, splits, block_c), dtype=torch.float32, device=device)
        sum_part = torch.empty((3, n, splits), dtype=torch.float32, device=device)
        loss = torch.empty((), dtype=torch.float32, device=device)
        coef = torch.empty((n, 2, block_c), dtype=torch.float32, device=device)
        scales = torch.empty(2, dtype=torch.float32, device=device)
        # Absent weights: the kernels never load them (HAS_PW/HAS_CW are compile-time), any tensor stands in.
        pw_arg = pw if pw is not None else z
        cw_arg = cw if cw is not None else z

        _loss_partials[(n, splits)](
            z, target, pw_arg, cw_arg, dice_part, sum_part,
            n, c, hw, *strides, float(gamma),
            T=splits, BLOCK_C=block_c, **flags, **_tile(block_c),
        )  # fmt: skip
        _loss_combine[(1,)](
            dice_part, sum_part, loss, coef, scales,
            n, c, c_start, float(n * (c - c_start)), float(n * hw), float(alpha), float(smooth), c_dice, c_focal, c_ce,
            T=splits, BLOCK_C=block_c,
        )  # fmt: skip

        ctx.save_for_backward(z, target, pw, cw, coef, scales)
        ctx.launch = dict(
            strides=strides, memory_format=memory_format, gamma=float(gamma), block_c=block_c, flags=flags
        )
        return loss

    @staticmethod
    def backward(ctx, dloss):
        z, target, pw, cw, coef, scales = ctx.saved_tensors
        launch = ctx.launch
        n, c, h, w = z.shape
        hw = h * w
        block_c = launch["block_c"]
        dz = torch.empty((n, c, h, w), dtype=z.dtype, device=z.device, memory_format=launch["memory_format"])
        dloss = dloss.to(torch.float32).contiguous()

        def grid(meta):
            return (n, triton.cdiv(hw, meta["TILE"] // meta["BLOCK_C"]))

        _loss_backward[grid](
            z, target, pw if pw is not None else z, cw if cw is not None else z,
            coef, scales, dloss, dz,
            c, hw, *launch["strides"], launch["gamma"],
            BLOCK_C=block_c, **launch["flags"], **_tile(block_c),
        )  # fmt: skip
        return dz, None, None, None, None


# %%
# Input checks
# ------------
# Everything is checked before anything launches. The value checks (finite logits and weights, labels in range)
# read every input once more and wait for the answer on the host; ``validate=False`` skips them where the
# inputs are known good (a benchmark, a trainer whose data pipeline checked its labels).


def _check_inputs(logits, target, pixel_weights, class_weights, validate):
    """Every ValueError ``combined_loss`` can raise about its tensors, one line each: the shared checks, then the
    kernel's own (``LossOptions`` has checked the parameters)."""
    check_loss_inputs(
        logits, target, pixel_weights, class_weights, validate, dtypes=DTYPES, max_classes=MAX_CLASSES,
    )  # fmt: skip
    if not triton_runs_on(logits):
        raise ValueError(f"the fused loss needs CUDA tensors (or CPU with TRITON_INTERPRET=1), got {logits.device}")


# %%
# The public function
# -------------------


def combined_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    pixel_weights: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    *,
    validate: bool = True,
    **options,
) -> torch.Tensor:
    """c0·Dice + c1·focal + c2·weighted cross-entropy of ``logits``, fused, differentiable in ``logits``.

    logits: (N, C, H, W) float32/float16/bfloat16, NCHW or channels-last, 1 <= C <= 16, on CUDA (or on the CPU
    with TRITON_INTERPRET=1). target: (N, H, W) integer labels in [0, C). pixel_weights: (N, H, W) float >= 0 or
    None. class_weights: (C,) float >= 0 or None. ``options``: the fields of ``LossOptions`` (alpha, gamma, smooth,
    include_background, coefficients = (dice, focal, cross-entropy)), by keyword, with its defaults.
    Returns a float32 scalar; its gradient has the dtype and layout of ``logits``. The semantics are those of
    ``reference.losses.combined_loss`` (see the module docstring). ``validate=False`` skips the value checks (one
    extra read of the inputs and a host synchronisation); the shape and dtype checks always run.
    Raises ValueError for bad input, before any kernel launches.
    """
    options = LossOptions(**options)
    _check_inputs(logits, target, pixel_weights, class_weights, validate)
    return CombinedLossFunction.apply(logits, target, pixel_weights, class_weights, options)
