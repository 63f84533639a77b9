"""The transposed convolution: the U-Net's 2x2, stride-2 "up-convolution", forward and backward.

Each input pixel stamps its kernel, scaled by its value, onto the output at stride s (torch's weight layout,
``w`` of shape (C_in, C_out, kh, kw); no padding):

    y[n, o, s*i + p, s*j + q] += sum_c x[n, c, i, j] * w[c, o, p, q]   (+ b[o] once per output pixel)

    H_out = (H - 1) * s + kh,    W_out = (W - 1) * s + kw

(Dumoulin & Visin, "A guide to convolution arithmetic for deep learning", 2016, Sec. 4; ``torch.nn.ConvTranspose2d``.)
It is the adjoint (transpose) of a stride-s convolution with the same kernel, hence the name.

The computation is one matmul over the input channels, ``cols[n, o, i, j, p, q] = sum_c x[n, c, i, j] w[c, o, p, q]``,
followed by a fold that adds each stamp into place. In the U-Net's case, kernel == stride (2x2, stride 2), the
stamps tile the 2H x 2W output without overlap: every output pixel receives exactly one term,
``y[n, o, 2i + p, 2j + q] = b[o] + sum_c x[n, c, i, j] w[c, o, p, q]``. A kernel larger than the stride makes
neighbouring stamps overlap and add; one smaller than the stride leaves gaps that only the bias fills.

As for ``conv2d`` (and by the policy of ``reference/_checks.py``): the weights ``w`` and the bias ``b`` must be
finite, a NaN there would reach every output of its channel; NaN or infinity in ``x`` (or ``dy``) is not rejected:
as in any sum, it only propagates to the outputs it touches.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from unet_from_scratch.reference import threads
from unet_from_scratch.reference._checks import (
    check_cache,
    check_finite,
    check_float_array,
    check_int,
    check_same_dtype,
)


def _check_inputs(x: np.ndarray, w: np.ndarray, stride: int) -> None:
    check_float_array(x, "x", ndim=4, layout="(N, C_in, H, W)")
    check_float_array(w, "w", ndim=4, layout="(C_in, C_out, kh, kw)")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"x has {x.shape[1]} channels but w expects C_in = {w.shape[0]} (w is (C_in, C_out, kh, kw))")
    check_int(stride, "stride")
    check_same_dtype(x=x, w=w)
    kh, kw = w.shape[2:]
    if kh < 1 or kw < 1:
        raise ValueError(f"w must have a kernel of at least 1x1, got {kh}x{kw}")
    check_finite(w, "w")


def _output_shape(x: np.ndarray, w: np.ndarray, s: int) -> tuple[int, int, int, int]:
    n, _, h, wd = x.shape
    _, c_out, kh, kw = w.shape
    return n, c_out, (h - 1) * s + kh, (wd - 1) * s + kw


def conv_transpose2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, stride: int = 2):
    """Transposed convolution of ``x`` (N, C_in, H, W) with ``w`` (C_in, C_out, kh, kw) and bias ``b`` (C_out,).

    Returns ``(y, cache)``: ``y`` (N, C_out, (H-1)*s + kh, (W-1)*s + kw) in the dtype of ``x`` (float32/float64;
    all inputs alike), with the U-Net's 2x2 kernel and stride 2 (N, C_out, 2H, 2W), equal to
    ``F.conv_transpose2d(x, w, b, stride)``; ``cache`` (``x``, ``w``, s) for ``conv_transpose2d_backward``.
    """
    _check_inputs(x, w, stride)
    c_out, kh, kw = w.shape[1:]
    if b is not None:
        check_float_array(b, "b", ndim=1, layout="(C_out,)")
        if b.shape != (c_out,):
            raise ValueError(f"b must have shape ({c_out},) to match w's C_out, got {b.shape}")
        check_same_dtype(x=x, b=b)
        check_finite(b, "b")
    s = stride
    n, _, h, wd = x.shape

    y = np.zeros(_output_shape(x, w, s), dtype=x.dtype)

    def part(start: int, stop: int) -> None:  # images start..stop (the batch is split over the cores: threads.py)
        cols = np.einsum("nchw,copq->nohwpq", x[start:stop], w, optimize=True)  # (n, C_out, H, W, kh, kw)
        out = y[start:stop]
        for p in range(kh):  # the fold: kernel tap (p, q) lands on output rows p, p + s, ..., columns q, q + s, ...
            for q in range(kw):
                out[:, :, p : p + s * (h - 1) + 1 : s, q : q + s * (wd - 1) + 1 : s] += cols[..., p, q]
        if b is not None:
            out += b[None, :, None, None]

    threads.over_batch(part, n)
    return y, {"layer": "conv_transpose2d", "x": x, "w": w, "stride": int(stride)}


def conv_transpose2d_backward(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``conv_transpose2d`` -> ``(dx, dw, db)`` shaped like ``x``, ``w`` and (C_out,).

    ``dy`` has the forward output's shape; ``cache`` is the one ``conv_transpose2d`` returned. Reading the forward
    formula backwards, each input pixel sees the k x k patch of ``dy`` its kernel was stamped on,
    ``dcols[n, o, i, j, p, q] = dy[n, o, s*i + p, s*j + q]``:

        dx[n, c, i, j] = sum_{o,p,q} dcols[n, o, i, j, p, q] * w[c, o, p, q]   (a stride-s convolution of dy)
        dw[c, o, p, q] = sum_{n,i,j} x[n, c, i, j] * dcols[n, o, i, j, p, q]
        db[o]          = sum_{n,y,x} dy[n, o, y, x]
    """
    check_cache(cache, "conv_transpose2d")
    x, w, stride = cache["x"], cache["w"], cache["stride"]
    check_float_array(dy, "dy", ndim=4, layout="(N, C_out, H_out, W_out)")
    expected = _output_shape(x, w, stride)
    if dy.shape != expected:
        raise ValueError(f"dy must have the output shape {expected}, got {dy.shape}")
    check_same_dtype(dy=dy, x=x)
    s = stride
    kh, kw = w.shape[2:]

    # (N, C_out, H_out - kh + 1, W_out - kw + 1, kh, kw) windows; every s-th one starts at (s*i, s*j).
    dcols = sliding_window_view(dy, (kh, kw), axis=(2, 3))[:, :, ::s, ::s]  # (N, C_out, H, W, kh, kw)
    dx = np.empty(x.shape, dtype=x.dtype)

    def part(start: int, stop: int):  # dx of images start..stop, their shares of dw and db
        dx[start:stop] = np.einsum("nohwpq,copq->nchw", dcols[start:stop], w, optimize=True)
        dw = np.einsum("nchw,nohwpq->copq", x[start:stop], dcols[start:stop], optimize=True)
        return dw, dy[start:stop].sum(axis=(0, 2, 3))

    dws, dbs = zip(*threads.over_batch(part, x.shape[0]))
    return dx, np.sum(dws, axis=0), np.sum(dbs, axis=0)
