"""center_crop and crop_and_concat against plain slicing + torch.cat and autograd, finite differences, bad input."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_matches_finite_differences, assert_matches_torch, float_dtypes, seeded_arrays
from unet_from_scratch.reference.crop import (
    center_crop,
    center_crop_backward,
    crop_and_concat,
    crop_and_concat_backward,
)

# Cropping and concatenation copy values without arithmetic: torch and we must agree exactly.
EXACT = dict(forward_tol=dict(rtol=0, atol=0), grad_tol=dict(rtol=0, atol=0))


def sliced(t, h, w):
    """The torch statement of the centre crop, written out: offsets (H - h) // 2 and (W - w) // 2."""
    top, left = (t.shape[2] - h) // 2, (t.shape[3] - w) // 2
    return t[:, :, top : top + h, left : left + w]


@st.composite
def crop_cases(draw):
    """(skip, up, dy): batch 1-3, channels 1-8 each, skip 1-24 square or not, up no larger than skip."""
    dtype = draw(float_dtypes)
    n, c_skip, c_up = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    big_h, big_w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    h, w = draw(st.integers(1, big_h)), draw(st.integers(1, big_w))
    skip = draw(seeded_arrays((n, c_skip, big_h, big_w), dtype))
    up = draw(seeded_arrays((n, c_up, h, w), dtype))
    dy = draw(seeded_arrays((n, c_skip + c_up, h, w), dtype))
    return skip, up, dy


@settings(deadline=None)
@given(crop_cases())
def test_center_crop_matches_slicing(case):
    skip, up, dy = case
    h, w = up.shape[2:]
    assert_matches_torch(
        lambda x, dout: (center_crop(x, (h, w))[0], [center_crop_backward(dout, center_crop(x, (h, w))[1])]),
        lambda t: sliced(t, h, w),
        [skip],
        wrt=[0],
        dout=dy[:, : skip.shape[1]],
        names=["dx"],
        **EXACT,
    )


@settings(deadline=None)
@given(crop_cases())
def test_crop_and_concat_matches_torch_cat(case):
    skip, up, dy = case
    h, w = up.shape[2:]
    assert_matches_torch(
        lambda s, u, dout: (crop_and_concat(s, u)[0], list(crop_and_concat_backward(dout, crop_and_concat(s, u)[1]))),
        lambda s, u: torch.cat([sliced(s, h, w), u], dim=1),
        [skip, up],
        wrt=[0, 1],
        dout=dy,
        names=["dskip", "dup"],
        **EXACT,
    )


def test_odd_difference_leaves_the_extra_row_and_column_at_the_bottom_right():
    x = np.arange(30, dtype=np.float64).reshape(1, 1, 5, 6)
    # (5 - 2) // 2 = 1 row above, 2 below; (6 - 3) // 2 = 1 column left, 2 right.
    y, cache = center_crop(x, (2, 3))
    np.testing.assert_array_equal(y, [[[[7, 8, 9], [13, 14, 15]]]])
    dx = center_crop_backward(np.ones((1, 1, 2, 3)), cache)
    np.testing.assert_array_equal(dx[0, 0], [[0] * 6, [0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 0, 0], [0] * 6, [0] * 6])


def test_paper_skip_sizes():
    # The paper's first skip connection: 64 channels of 568x568 cropped to the 392x392 up-convolved map (Fig. 1).
    skip = np.ones((1, 64, 568, 568), np.float32)
    up = np.zeros((1, 64, 392, 392), np.float32)
    y, _ = crop_and_concat(skip, up)
    assert y.shape == (1, 128, 392, 392)
    assert y[:, :64].min() == 1 and y[:, 64:].max() == 0


@pytest.mark.parametrize("shape, size", [((1, 2, 4, 5), (2, 3)), ((2, 1, 3, 3), (3, 1)), ((1, 1, 2, 2), (2, 2))])
def test_backward_matches_finite_differences(shape, size, rng):
    x = rng.normal(size=shape)
    dy = rng.normal(size=(*shape[:2], *size))
    dx = center_crop_backward(dy, center_crop(x, size)[1])
    assert_matches_finite_differences(dx, lambda z: center_crop(z, size)[0], x, dy, name="dx")

    up = rng.normal(size=(shape[0], 3, *size))
    dcat = rng.normal(size=(shape[0], shape[1] + 3, *size))
    dskip, dup = crop_and_concat_backward(dcat, crop_and_concat(x, up)[1])
    assert_matches_finite_differences(dskip, lambda z: crop_and_concat(z, up)[0], x, dcat, name="dskip")
    assert_matches_finite_differences(dup, lambda z: crop_and_concat(x, z)[0], up, dcat, name="dup")


@pytest.mark.parametrize(
    "x, size, message",
    [
        (np.zeros((1, 1, 4, 6)), (5, 2), r"cannot crop \(4, 6\) to the larger size \(5, 2\)"),
        (np.zeros((1, 1, 4, 6)), (2, 7), r"cannot crop \(4, 6\) to the larger size \(2, 7\)"),
        (np.zeros((1, 1, 4, 6)), (0, 2), r"size must be two positive integers \(h, w\), got \(0, 2\)"),
        (np.zeros((1, 1, 4, 6)), (2,), r"size must be two positive integers \(h, w\), got \(2,\)"),
        (np.zeros((1, 1, 4, 6)), 2, r"size must be two positive integers \(h, w\), got 2"),
        (np.zeros((1, 1, 4, 6)), (2.0, 2), r"size must be two positive integers \(h, w\), got \(2.0, 2\)"),
        (np.zeros((4, 6)), (2, 2), r"x must have 4 dimensions \(N, C, H, W\), got shape \(4, 6\)"),
        (np.zeros((1, 1, 4, 6), np.uint8), (2, 2), "x must be float32 or float64, got uint8"),
    ],
)
def test_bad_crop_raises(x, size, message):
    with pytest.raises(ValueError, match=message):
        center_crop(x, size)


@pytest.mark.parametrize(
    "skip, up, message",
    [
        (np.zeros((1, 2, 4, 4)), np.zeros((1, 3, 5, 4)), r"cannot crop \(4, 4\) to the larger size \(5, 4\)"),
        (np.zeros((2, 2, 4, 4)), np.zeros((1, 3, 2, 2)), "skip and up must have the same batch size, got 2 and 1"),
        (np.zeros((1, 2, 4, 4)), np.zeros((1, 3, 2, 2), np.float32), "dtypes must match, got skip=float64, up=float32"),
        (np.zeros((1, 2, 4)), np.zeros((1, 3, 2, 2)), r"skip must have 4 dimensions \(N, C_skip, H, W\)"),
        (np.zeros((1, 2, 4, 4)), np.zeros((3, 2, 2)), r"up must have 4 dimensions \(N, C_up, h, w\)"),
        (np.zeros((1, 2, 4, 4), np.int64), np.zeros((1, 3, 2, 2)), "skip must be float32 or float64, got int64"),
    ],
)
def test_bad_crop_and_concat_raises(skip, up, message):
    with pytest.raises(ValueError, match=message):
        crop_and_concat(skip, up)


@pytest.mark.parametrize(
    "dy, message",
    [
        (np.zeros((1, 6, 2, 2)), r"dy must have the output shape \(1, 5, 2, 2\), got \(1, 6, 2, 2\)"),
        (np.zeros((1, 5, 2, 3)), r"dy must have the output shape \(1, 5, 2, 2\), got \(1, 5, 2, 3\)"),
        (np.zeros((5, 2, 2)), r"dy must have 4 dimensions \(N, C_skip \+ C_up, h, w\)"),
    ],
)
def test_bad_crop_and_concat_backward_raises(dy, message):
    _, cache = crop_and_concat(np.zeros((1, 3, 4, 4)), np.zeros((1, 2, 2, 2)))
    with pytest.raises(ValueError, match=message):
        crop_and_concat_backward(dy, cache)


def test_bad_center_crop_backward_raises():
    _, cache = center_crop(np.zeros((1, 3, 4, 4)), (2, 2))
    with pytest.raises(ValueError, match=r"dy must have the output shape \(1, 3, 2, 2\), got \(1, 2, 2, 2\)"):
        center_crop_backward(np.zeros((1, 2, 2, 2)), cache)
    with pytest.raises(ValueError, match="cache must be the one center_crop returned, got tuple"):
        center_crop_backward(np.zeros((1, 3, 2, 2)), (1, 3, 4, 4))
    with pytest.raises(ValueError, match="cache must be the one crop_and_concat returned, got the cache of center_c"):
        crop_and_concat_backward(np.zeros((1, 3, 2, 2)), cache)
