"""Centre cropping and the crop-and-concatenate skip connection of a valid-convolution U-Net.

Unpadded 3x3 convolutions shrink every feature map by 2 pixels, so an encoder map is larger than the decoder map
it is joined to; the paper crops the encoder map's centre to the decoder's size and stacks the two along the
channels (Ronneberger, Fischer & Brox, "U-Net", 2015, Fig. 1 and Sec. 2).

Centre crop of (N, C, H, W) to (h, w): ``y = x[:, :, top : top + h, left : left + w]`` with

    top = (H - h) // 2,    left = (W - w) // 2

When H - h is odd the centre falls between two pixels and the extra row goes to the bottom (floor of half at
the top), for a reason the U-Net itself gives: an odd size arises when a max-pool floored an odd encoder map,
dropping its last row, so everything decoded from below covers the map's first H - 1 rows, centred at (H - 2) / 2.
A crop of even height h (an up-convolution's output always is) centred there starts at (H - 1 - h) / 2, which
is exactly the floor of (H - h) / 2. The same holds for columns. In the paper's own sizes (572 -> 388) every
difference is even and the question never arises.

Cropping only selects, so NaN and infinity pass through untouched and are not rejected.
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference._checks import check_cache, check_float_array, check_same_dtype, is_int


def _is_positive_int(v) -> bool:
    return is_int(v) and v >= 1


def _crop_window(shape: tuple[int, ...], size) -> tuple[slice, slice]:
    """Row and column slices of the centred (h, w) window in an (N, C, H, W) map; ValueError if it does not fit."""
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(_is_positive_int(v) for v in size)):
        raise ValueError(f"size must be two positive integers (h, w), got {size!r}")
    (h, w), (big_h, big_w) = size, shape[2:]
    if h > big_h or w > big_w:
        raise ValueError(f"cannot crop ({big_h}, {big_w}) to the larger size ({h}, {w})")
    top, left = (big_h - h) // 2, (big_w - w) // 2
    return slice(top, top + h), slice(left, left + w)


def center_crop(x: np.ndarray, size: tuple[int, int]):
    """The central (h, w) window of ``x`` (N, C, H, W) -> ``(y, cache)``, ``y`` (N, C, h, w) in ``x``'s dtype
    (float32/float64), a view of ``x``; ``cache`` (``x``'s shape) for ``center_crop_backward``.

    Top/left offsets are ``(H - h) // 2`` and ``(W - w) // 2`` (see the module docstring for odd differences).
    ``size`` larger than (H, W) in either dimension raises ValueError.
    """
    check_float_array(x, "x", ndim=4, layout="(N, C, H, W)")
    rows, cols = _crop_window(x.shape, size)
    y = x[:, :, rows, cols]
    return y, {"layer": "center_crop", "x_shape": x.shape, "y_shape": y.shape}


def _uncrop(dy: np.ndarray, x_shape: tuple[int, int, int, int]) -> np.ndarray:
    """``dy`` (N, C, h, w) placed back at the centre of zeros of ``x_shape``."""
    rows, cols = _crop_window(x_shape, dy.shape[2:])
    dx = np.zeros(x_shape, dtype=dy.dtype)
    dx[:, :, rows, cols] = dy
    return dx


def center_crop_backward(dy: np.ndarray, cache: dict) -> np.ndarray:
    """Gradient of ``center_crop``: ``dy`` (N, C, h, w) placed back at the centre of zeros of ``x``'s shape.

    ``cache`` is the one ``center_crop`` returned. The pixels the crop dropped did not reach the output, so their
    gradient is zero.
    """
    check_cache(cache, "center_crop")
    check_float_array(dy, "dy", ndim=4, layout="(N, C, h, w)")
    if dy.shape != cache["y_shape"]:
        raise ValueError(f"dy must have the output shape {cache['y_shape']}, got {dy.shape}")
    return _uncrop(dy, cache["x_shape"])


def crop_and_concat(skip: np.ndarray, up: np.ndarray):
    """The skip connection: ``concat([center_crop(skip, (h, w)), up], axis=1)`` -> ``(y, cache)``, ``y``
    (N, C_skip + C_up, h, w), ``cache`` (the two inputs' shapes) for ``crop_and_concat_backward``.

    ``skip`` (N, C_skip, H, W) is the encoder map, ``up`` (N, C_up, h, w) the up-convolved decoder map, with
    h <= H and w <= W; same batch size and dtype. The encoder's channels come first, as in the paper's figure and
    in ``torch.cat([skip, up], dim=1)``.
    """
    check_float_array(skip, "skip", ndim=4, layout="(N, C_skip, H, W)")
    check_float_array(up, "up", ndim=4, layout="(N, C_up, h, w)")
    if skip.shape[0] != up.shape[0]:
        raise ValueError(f"skip and up must have the same batch size, got {skip.shape[0]} and {up.shape[0]}")
    check_same_dtype(skip=skip, up=up)
    y = np.concatenate([center_crop(skip, up.shape[2:])[0], up], axis=1)
    return y, {"layer": "crop_and_concat", "skip_shape": skip.shape, "y_shape": y.shape}


def crop_and_concat_backward(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``crop_and_concat`` -> ``(dskip, dup)``, from the cache ``crop_and_concat`` returned.

    ``dy`` is (N, C_skip + C_up, h, w); its first C_skip channels flow back through the crop (zero-padded to
    ``skip``'s shape), the last C_up go to ``up`` unchanged.
    """
    check_cache(cache, "crop_and_concat")
    check_float_array(dy, "dy", ndim=4, layout="(N, C_skip + C_up, h, w)")
    if dy.shape != cache["y_shape"]:
        raise ValueError(f"dy must have the output shape {cache['y_shape']}, got {dy.shape}")
    c_skip = cache["skip_shape"][1]
    return _uncrop(dy[:, :c_skip], cache["skip_shape"]), dy[:, c_skip:].copy()
