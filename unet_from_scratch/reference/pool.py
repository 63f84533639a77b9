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


def max_pool2d(x: np.ndarray, kernel_size: int = 2):
    """Max-pool ``x`` (N, C, H, W) over k x k windows with stride k -> ``(y, cache)``, ``y`` (N, C, H // k, W // k)
    in ``x``'s dtype, ``cache`` (``x`` and k) for ``max_pool2d_backward``.

    ``x`` is float32/float64 without NaN; H and W must be at least ``kernel_size`` (torch errors on an empty
    output as well). Infinities are fine: they are ordered like any other value.
    """
    _check_pool_input(x, kernel_size)
    y = _windows(x, kernel_size).max(axis=(4, 5))
    return y, {"layer": "max_pool2d", "x": x, "kernel_size": int(kernel_size)}


def max_pool2d_backward(dy: np.ndarray, cache: dict) -> np.ndarray:
    """Gradient of ``max_pool2d`` with respect to ``x``: each ``dy`` entry goes to its window's maximum.

    ``dy`` (N, C, H // k, W // k) in ``x``'s dtype; ``cache`` the one ``max_pool2d`` returned. Returns ``dx``
    shaped like ``x``: ``dx[n, c, k*i + p*, k*j + q*] = dy[n, c, i, j]`` at the first (row-major) argmax
    ``(p*, q*)`` of each window, zero elsewhere — including the rows/columns that an odd size drops. The argmax is
    found again from ``x`` here, not stored by the forward: the forward stays one reduction.
    """
    check_cache(cache, "max_pool2d")
    x, k = cache["x"], cache["kernel_size"]
    windows = _windows(x, k)
    n, c, ho, wo = windows.shape[:4]
    check_float_array(dy, "dy", ndim=4, layout="(N, C, H_out, W_out)")
    if dy.shape != (n, c, ho, wo):
        raise ValueError(f"dy must have the output shape {(n, c, ho, wo)}, got {dy.shape}")
    check_same_dtype(dy=dy, x=x)

    flat = windows.reshape(n, c, ho, wo, k * k)  # window entries in row-major (p, q) order
    first_max = flat.argmax(axis=-1)[..., None]  # (N, C, H_out, W_out, 1)
    dflat = np.zeros_like(flat)
    np.put_along_axis(dflat, first_max, dy[..., None], axis=-1)

    dx = np.zeros_like(x)
    _windows(dx, k)[...] = dflat.reshape(n, c, ho, wo, k, k)  # _windows is a view, so this writes into dx
    return dx
