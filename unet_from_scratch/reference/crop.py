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

from unet_from_scratch.reference._checks import check_float_array, check_same_dtype, is_int


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


def center_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The central (h, w) window of ``x`` (N, C, H, W) -> (N, C, h, w), same dtype (float32/float64).

    Top/left offsets are ``(H - h) // 2`` and ``(W - w) // 2`` (see the module docstring for odd differences).
    Returns a view of ``x``. ``size`` larger than (H, W) in either dimension raises ValueError.
    """
    check_float_array(x, "x", ndim=4, layout="(N, C, H, W)")
    rows, cols = _crop_window(x.shape, size)
    return x[:, :, rows, cols]


def center_crop_backward(dy: np.ndarray, x_shape: tuple[int, int, int, int]) -> np.ndarray:
    """Gradient of ``center_crop``: ``dy`` (N, C, h, w) placed back at the centre of zeros of ``x_shape``.

    The pixels the crop dropped did not reach the output, so their gradient is zero.
    """
    check_float_array(dy, "dy", ndim=4, layout="(N, C, h, w)")
    x_shape = tuple(x_shape)
    if len(x_shape) != 4 or x_shape[:2] != dy.shape[:2]:
        raise ValueError(f"x_shape must be (N, C, H, W) with (N, C) = {dy.shape[:2]} as in dy, got {x_shape}")
    rows, cols = _crop_window(x_shape, dy.shape[2:])
    dx = np.zeros(x_shape, dtype=dy.dtype)
    dx[:, :, rows, cols] = dy
    return dx


def crop_and_concat(skip: np.ndarray, up: np.ndarray) -> np.ndarray:
    """The skip connection: ``concat([center_crop(skip, (h, w)), up], axis=1)`` -> (N, C_skip + C_up, h, w).

    ``skip`` (N, C_skip, H, W) is the encoder map, ``up`` (N, C_up, h, w) the up-convolved decoder map, with
    h <= H and w <= W; same batch size and dtype. The encoder's channels come first, as in the paper's figure and
    in ``torch.cat([skip, up], dim=1)``.
    """
    check_float_array(skip, "skip", ndim=4, layout="(N, C_skip, H, W)")
    check_float_array(up, "up", ndim=4, layout="(N, C_up, h, w)")
    if skip.shape[0] != up.shape[0]:
        raise ValueError(f"skip and up must have the same batch size, got {skip.shape[0]} and {up.shape[0]}")
    check_same_dtype(skip=skip, up=up)
    return np.concatenate([center_crop(skip, up.shape[2:]), up], axis=1)


def crop_and_concat_backward(
    dy: np.ndarray, skip_shape: tuple[int, int, int, int], up_channels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``crop_and_concat`` -> ``(dskip, dup)``.

    ``dy`` is (N, C_skip + C_up, h, w); its first C_skip channels flow back through the crop (zero-padded to
    ``skip_shape``), the last ``up_channels`` go to ``up`` unchanged.
    """
    check_float_array(dy, "dy", ndim=4, layout="(N, C_skip + C_up, h, w)")
    skip_shape = tuple(skip_shape)
    if not _is_positive_int(up_channels) or len(skip_shape) != 4 or skip_shape[1] + up_channels != dy.shape[1]:
        raise ValueError(
            f"dy has {dy.shape[1]} channels, expected C_skip + up_channels from skip_shape {skip_shape} "
            f"and up_channels {up_channels}"
        )
    c_skip = skip_shape[1]
    return center_crop_backward(dy[:, :c_skip], skip_shape), dy[:, c_skip:].copy()
