"""conv_transpose2d and its backward against F.conv_transpose2d and autograd, finite differences and bad input."""

import numpy as np
import pytest
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_matches_finite_differences, assert_matches_torch, float_dtypes, seeded_arrays
from unet_from_scratch.reference.upconv import conv_transpose2d, conv_transpose2d_backward


def ours(stride):
    def run(x, w, b, dout):
        y, cache = conv_transpose2d(x, w, b, stride)
        return y, list(conv_transpose2d_backward(dout, cache))

    return run


def theirs(stride):
    return lambda x, w, b: F.conv_transpose2d(x, w, b, stride=stride)


@st.composite
def upconv_cases(draw, kernel=st.just(2), stride=st.just(2), max_size=24):
    """(x, w, b, dy, stride): batch 1-3, channels 1-8 in and out, sizes 1..max_size; by default the U-Net's 2x2/2."""
    dtype = draw(float_dtypes)
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    h, w = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    kh, kw, s = draw(kernel), draw(kernel), draw(stride)
    x = draw(seeded_arrays((n, c_in, h, w), dtype))
    weight = draw(seeded_arrays((c_in, c_out, kh, kw), dtype, bound=1.0))
    b = draw(seeded_arrays((c_out,), dtype))
    dy = draw(seeded_arrays((n, c_out, (h - 1) * s + kh, (w - 1) * s + kw), dtype))
    return x, weight, b, dy, s


# An output sums at most C_in * ceil(kh/s) * ceil(kw/s) products, dx entries C_out * kh * kw, dw and db entries
# N * H * W (<= 1728), in the orders einsum and torch choose: the per-dtype defaults of tests/helpers.TOLERANCES
# are written for sums of up to ~10^4 terms.
@settings(deadline=None)
@given(upconv_cases())
def test_unet_up_convolution_matches_torch(case):
    x, w, b, dy, s = case
    assert_matches_torch(ours(s), theirs(s), [x, w, b], wrt=[0, 1, 2], dout=dy, names=["dx", "dw", "db"])


@settings(deadline=None)
@given(upconv_cases(kernel=st.integers(1, 4), stride=st.integers(1, 3), max_size=12))
def test_any_kernel_and_stride_matches_torch(case):
    x, w, b, dy, s = case
    assert_matches_torch(ours(s), theirs(s), [x, w, b], wrt=[0, 1, 2], dout=dy, names=["dx", "dw", "db"])


def without_bias(x, w, dout):
    y, cache = conv_transpose2d(x, w)
    return y, list(conv_transpose2d_backward(dout, cache))[:2]


def test_without_bias_matches_torch(rng):
    x, w = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(3, 2, 2, 2))
    dy = rng.normal(size=(2, 2, 8, 10))
    assert_matches_torch(
        without_bias,
        lambda x, w: F.conv_transpose2d(x, w, stride=2),
        [x, w],
        wrt=[0, 1],
        dout=dy,
        names=["dx", "dw"],
    )


def test_hand_worked_example():
    # One channel, two pixels: each pixel stamps the 2x2 kernel, scaled by its value, onto its own 2x2 block.
    x = np.array([[[[1.0, 2.0]]]])
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    y, _ = conv_transpose2d(x, w, np.array([0.5]))
    np.testing.assert_array_equal(y, [[[[1.5, 2.5, 2.5, 4.5], [3.5, 4.5, 6.5, 8.5]]]])


@pytest.mark.parametrize(
    "shape, kernel, stride",
    [((2, 2, 2, 3), (2, 2), 2), ((1, 3, 3, 2), (3, 2), 2), ((1, 2, 2, 2), (3, 3), 1), ((2, 1, 2, 3), (1, 2), 3)],
)
def test_backward_matches_finite_differences(shape, kernel, stride, rng):
    n, c_in, h, w_ = shape
    x = rng.normal(size=shape)
    w = rng.normal(size=(c_in, 2, *kernel))
    b = rng.normal(size=2)
    dy = rng.normal(size=(n, 2, (h - 1) * stride + kernel[0], (w_ - 1) * stride + kernel[1]))
    dx, dw, db = conv_transpose2d_backward(dy, conv_transpose2d(x, w, b, stride)[1])
    assert_matches_finite_differences(dx, lambda z: conv_transpose2d(z, w, b, stride)[0], x, dy, name="dx")
    assert_matches_finite_differences(dw, lambda z: conv_transpose2d(x, z, b, stride)[0], w, dy, name="dw")
    assert_matches_finite_differences(db, lambda z: conv_transpose2d(x, w, z, stride)[0], b, dy, name="db")


X = np.zeros((1, 3, 4, 4))
W = np.zeros((3, 2, 2, 2))


@pytest.mark.parametrize(
    "x, w, stride, message",
    [
        (np.zeros((3, 4, 4)), W, 2, r"x must have 4 dimensions \(N, C_in, H, W\), got shape \(3, 4, 4\)"),
        (X, np.zeros((3, 2, 2)), 2, r"w must have 4 dimensions \(C_in, C_out, kh, kw\), got shape \(3, 2, 2\)"),
        (X, np.zeros((2, 3, 2, 2)), 2, r"x has 3 channels but w expects C_in = 2"),
        (X.astype(np.int32), W, 2, "x must be float32 or float64, got int32"),
        (X, W.astype(np.float32), 2, "dtypes must match, got x=float64, w=float32"),
        (X, W, 0, "stride must be a positive integer, got 0"),
        (X, W, 1.5, "stride must be a positive integer, got 1.5"),
        (X, W, True, "stride must be a positive integer, got True"),
        (X, np.zeros((3, 2, 0, 0)), 2, "w must have a kernel of at least 1x1, got 0x0"),
        (X, np.zeros((3, 2, 2, 0)), 2, "w must have a kernel of at least 1x1, got 2x0"),
        (X, np.full((3, 2, 2, 2), np.nan), 2, r"w must be finite, got 24 NaN or infinite value\(s\)"),
        (X, np.where(np.arange(24).reshape(3, 2, 2, 2) == 5, np.inf, 0.0), 2, r"w must be finite, got 1 NaN"),
    ],
)
def test_bad_input_raises(x, w, stride, message):
    with pytest.raises(ValueError, match=message):
        conv_transpose2d(x, w, stride=stride)


@pytest.mark.parametrize(
    "b, message",
    [
        (np.zeros(3), r"b must have shape \(2,\) to match w's C_out, got \(3,\)"),
        (np.zeros((2, 1)), r"b must have 1 dimensions \(C_out,\), got shape \(2, 1\)"),
        (np.zeros(2, np.float32), "dtypes must match, got x=float64, b=float32"),
        (np.array([0.0, np.nan]), r"b must be finite, got 1 NaN or infinite value\(s\)"),
    ],
)
def test_bad_bias_raises(b, message):
    with pytest.raises(ValueError, match=message):
        conv_transpose2d(X, W, b)


def test_stride_may_be_a_numpy_integer(rng):
    x, w = rng.normal(size=(1, 3, 4, 4)), rng.normal(size=(3, 2, 2, 2))
    np.testing.assert_array_equal(conv_transpose2d(x, w, stride=np.int64(2))[0], conv_transpose2d(x, w, stride=2)[0])


def test_non_finite_input_is_not_rejected_and_stays_where_it_lands(rng):
    # The checking policy (reference/_checks.py): an activation's NaN reaches exactly the outputs it is stamped on.
    x, w = rng.normal(size=(1, 3, 4, 4)), rng.normal(size=(3, 2, 2, 2))
    x[0, 1, 2, 3] = np.nan
    y, _ = conv_transpose2d(x, w)
    expected = np.zeros(y.shape, bool)
    expected[0, :, 4:6, 6:8] = True  # pixel (2, 3) stamps the 2x2 block at (4, 6) of every output channel
    np.testing.assert_array_equal(np.isnan(y), expected)


@pytest.mark.parametrize(
    "dy, message",
    [
        (np.zeros((1, 2, 8, 7)), r"dy must have the output shape \(1, 2, 8, 8\), got \(1, 2, 8, 7\)"),
        (np.zeros((1, 2, 8, 8), np.float32), "dtypes must match, got dy=float32, x=float64"),
    ],
)
def test_bad_upstream_gradient_raises(dy, message):
    with pytest.raises(ValueError, match=message):
        conv_transpose2d_backward(dy, conv_transpose2d(X, W)[1])


def test_the_backward_takes_only_a_conv_transpose2d_cache():
    from unet_from_scratch.reference.conv import conv2d

    with pytest.raises(ValueError, match="cache must be the one conv_transpose2d returned, got the cache of conv2d"):
        conv_transpose2d_backward(np.zeros((1, 2, 8, 8)), conv2d(X, np.zeros((2, 3, 1, 1)))[1])
