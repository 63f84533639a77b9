"""Max-pooling: the U-Net's 2x2, stride-2 downsampling step, forward and backward.

Each output is the largest value of its own k x k window (stride = k, so the windows tile the input without
overlap):

    y[n, c, i, j] = max_{0 <= p, q < k} x[n, c, k*i + p, k*j + q],    H_out = floor(H / k), W_out = floor(W / k)

An odd height or width floors like ``torch.nn.functional.max_pool2d``: the last row/column, which fills no whole
window, is dropped and gets zero gradient. The max is not differentiable where a window holds a tie; like torch,
the whole gradient goes to the first maximum in row-major window order (``np.argmax`` picks the first occurrence),
and the other entries get zero (a subgradient).
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference._checks import check_cache, check_float_array, check_int, check_same_dtype


def _check_pool_input(x: np.ndarray, kernel_size: int) -> None:
    check_float_array(x, "x", ndim=4, layout="(N, C, H, W)")
    check_int(kernel_size, "kernel_size")
    if x.shape[2] < kernel_size or x.shape[3] < kernel_size:
        raise ValueError(
            f"input height and width must be >= kernel_size {kernel_size} (output size would be 0), got shape {x.shape}"
        )
    if np.isnan(x).any():
        # The max of a window holding NaN is undefined (torch returns NaN and routes the gradient to a NaN).
        raise ValueError(f"x must not contain NaN, got {int(np.isnan(x).sum())} NaN value(s)")


def _windows(x: np.ndarray, k: int) -> np.ndarray:
    """The non-overlapping k x k windows of ``x`` as a view of shape (N, C, H_out, W_out, k, k)."""
    n, c, h, w = x.shape
    ho, wo = h // k, w // k
    return x[:, :, : ho * k, : wo * k].reshape(n, c, ho, k, wo, k).transpose(0, 1, 2, 4, 3, 5)


def _taps(a: np.ndarray, k: int, ho: int, wo: int):
    """The k * k strided views ``a[:, :, p : k*ho : k, q : k*wo : k]``, one per window entry (p, q), in row-major
    order: view (p, q) holds entry (p, q) of every window, shaped (N, C, H_out, W_out)."""
    return [a[:, :, p : k * ho : k, q : k * wo : k] for p in range(k) for q in range(k)]


def max_pool2d(x: np.ndarray, kernel_size: int = 2):
    """Max-pool ``x`` (N, C, H, W) over k x k windows with stride k -> ``(y, cache)``, ``y`` (N, C, H // k, W // k)
    in ``x``'s dtype, ``cache`` (``x``, ``y`` and k) for ``max_pool2d_backward``.

    ``x`` is float32/float64 without NaN; H and W must be at least ``kernel_size`` (torch errors on an empty
    output as well). Infinities are fine: they are ordered like any other value.

    ``_windows(x, k).max(axis=(4, 5))`` is the formula as it stands; the maximum is taken instead over the k * k
    strided views of ``_taps``, one elementwise ``np.maximum`` each, which runs 25x faster than reducing the two
    short, transposed window axes (0.7 ms against 18 ms on a (4, 16, 128, 128) float32 map, one thread).
    """
    _check_pool_input(x, kernel_size)
    k = int(kernel_size)
    n, c, h, w = x.shape
    taps = _taps(x, k, h // k, w // k)
    y = taps[0].copy()
    for tap in taps[1:]:
        np.maximum(y, tap, out=y)
    return y, {"layer": "max_pool2d", "x": x, "y": y, "kernel_size": k}


def max_pool2d_backward(dy: np.ndarray, cache: dict) -> np.ndarray:
    """Gradient of ``max_pool2d`` with respect to ``x``: each ``dy`` entry goes to its window's maximum.

    ``dy`` (N, C, H // k, W // k) in ``x``'s dtype; ``cache`` the one ``max_pool2d`` returned. Returns ``dx``
    shaped like ``x``: ``dx[n, c, k*i + p*, k*j + q*] = dy[n, c, i, j]`` at the first (row-major) argmax
    ``(p*, q*)`` of each window, zero elsewhere — including the rows/columns that an odd size drops.

    The window entries are visited in row-major order, each as one strided view (``_taps``): entry (p, q) takes
    the gradient where it equals the window's maximum ``y`` and no earlier entry did, which is the first argmax.
    The 0/1 mask multiplies ``dy`` (for a finite ``dy`` that is the selection exactly, and 9x faster than
    ``np.where``, see ``conv._relu_backward``); a non-finite ``dy`` takes ``_max_pool2d_backward_argmax``, the
    plain argmax form, so that NaN times 0 puts no NaN where no gradient goes. On a (4, 16, 128, 128) float32
    map: 1.6 ms, against 15 ms for the argmax form.
    """
    check_cache(cache, "max_pool2d")
    x, y, k = cache["x"], cache["y"], cache["kernel_size"]
    check_float_array(dy, "dy", ndim=4, layout="(N, C, H_out, W_out)")
    if dy.shape != y.shape:
        raise ValueError(f"dy must have the output shape {y.shape}, got {dy.shape}")
    check_same_dtype(dy=dy, x=x)
    if not np.isfinite(dy).all():
        return _max_pool2d_backward_argmax(dy, x, k)

    dx = np.zeros_like(x)
    taken = np.zeros(y.shape, dtype=bool)  # windows whose first maximum has been found
    for x_tap, dx_tap in zip(_taps(x, k, *y.shape[2:]), _taps(dx, k, *y.shape[2:])):
        first = (x_tap == y) & ~taken
        np.multiply(dy, first, out=dx_tap)  # dx_tap is a view of dx
        taken |= first
    return dx


def _max_pool2d_backward_argmax(dy: np.ndarray, x: np.ndarray, k: int) -> np.ndarray:
    """``max_pool2d_backward`` by its definition: ``np.argmax`` of each window picks the first maximum."""
    windows = _windows(x, k)
    n, c, ho, wo = windows.shape[:4]
    flat = windows.reshape(n, c, ho, wo, k * k)  # window entries in row-major (p, q) order
    first_max = flat.argmax(axis=-1)[..., None]  # (N, C, H_out, W_out, 1)
    dflat = np.zeros_like(flat)
    np.put_along_axis(dflat, first_max, dy[..., None], axis=-1)

    dx = np.zeros_like(x)
    _windows(dx, k)[...] = dflat.reshape(n, c, ho, wo, k, k)  # _windows is a view, so this writes into dx
    return dx
