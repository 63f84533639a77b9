"""max_pool2d and its backward against F.max_pool2d and autograd, finite differences, ties and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_matches_finite_differences, assert_matches_torch, float_dtypes, seeded_arrays
from unet_from_scratch.reference.pool import max_pool2d, max_pool2d_backward


def ours(k):
    def run(x, dout):
        y, cache = max_pool2d(x, k)
        return y, [max_pool2d_backward(dout, cache)]

    return run


def theirs(k):
    return lambda t: F.max_pool2d(t, k)


@st.composite
def pool_cases(draw, values=None):
    """(x, dy, k): batch 1-3, channels 1-8, kernel 1-4, height and width from k to 24 (odd sizes included)."""
    dtype = draw(float_dtypes)
    k = draw(st.integers(1, 4))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 8))
    h, w = draw(st.integers(k, 24)), draw(st.integers(k, 24))
    x = draw(values((n, c, h, w), dtype) if values else seeded_arrays((n, c, h, w), dtype))
    dy = draw(seeded_arrays((n, c, h // k, w // k), dtype))
    return x, dy, k


def few_values(shape, dtype):
    """Integers in {-1, 0, 1} as floats: most windows hold a tie for their maximum."""
    return st.integers(0, 2**32 - 1).map(lambda s: np.random.default_rng(s).integers(-1, 2, size=shape).astype(dtype))


# Max-pooling selects values and routes gradients without arithmetic, so torch and we must agree exactly in both
# dtypes: zero tolerance.
EXACT = dict(forward_tol=dict(rtol=0, atol=0), grad_tol=dict(rtol=0, atol=0))


@settings(deadline=None)
@given(pool_cases())
def test_max_pool2d_matches_torch(case):
    x, dy, k = case
    assert_matches_torch(ours(k), theirs(k), [x], wrt=[0], dout=dy, names=["dx"], **EXACT)


@settings(deadline=None)
@given(pool_cases(values=few_values))
def test_ties_route_the_gradient_like_torch(case):
    x, dy, k = case
    assert_matches_torch(ours(k), theirs(k), [x], wrt=[0], dout=dy, names=["dx"], **EXACT)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_all_zero_input_sends_each_gradient_to_the_window_top_left(dtype):
    x = np.zeros((1, 2, 5, 4), dtype)
    dy = np.arange(1, 9, dtype=dtype).reshape(1, 2, 2, 2)
    dx = max_pool2d_backward(dy, max_pool2d(x)[1])
    expected = np.zeros_like(x)
    expected[:, :, 0:4:2, 0:4:2] = dy  # the first entry of every 2x2 window; row 4 fills no window
    np.testing.assert_array_equal(dx, expected)
    t = torch.zeros(1, 2, 5, 4, dtype=torch.from_numpy(x).dtype, requires_grad=True)
    F.max_pool2d(t, 2).backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(dx, t.grad.numpy())


def test_hand_worked_example():
    x = np.array([[[[1, 5, 2, 0], [3, 4, 8, 8], [0, 0, 7, 1], [6, 0, 1, 9]]]], dtype=np.float64)
    y, cache = max_pool2d(x)
    np.testing.assert_array_equal(y, [[[[5, 8], [6, 9]]]])
    dx = max_pool2d_backward(np.array([[[[10.0, 20.0], [30.0, 40.0]]]]), cache)
    # The 8 in row 1 is tied: the first one (column 2) takes the gradient.
    np.testing.assert_array_equal(dx, [[[[0, 10, 0, 0], [0, 0, 20, 0], [0, 0, 0, 0], [30, 0, 0, 40]]]])


@pytest.mark.parametrize("shape, k", [((1, 1, 4, 4), 2), ((2, 3, 5, 3), 2), ((1, 2, 7, 6), 3), ((1, 1, 3, 2), 1)])
def test_backward_matches_finite_differences(shape, k, rng):
    # Distinct values 0.25 apart: a +-1e-6 nudge never changes which entry is a window's maximum.
    x = rng.permutation(np.prod(shape)).reshape(shape) * 0.25
    dy = rng.uniform(-1, 1, size=(shape[0], shape[1], shape[2] // k, shape[3] // k))
    dx = max_pool2d_backward(dy, max_pool2d(x, k)[1])
    assert_matches_finite_differences(dx, lambda z: max_pool2d(z, k)[0], x, dy, name="dx")


@pytest.mark.parametrize("hw", [(1, 1), (1, 5), (5, 1)])
def test_input_smaller_than_the_kernel_raises_like_torch(hw):
    x = np.zeros((1, 1, *hw))
    with pytest.raises(RuntimeError, match="Output size is too small"):
        F.max_pool2d(torch.from_numpy(x), 2)
    with pytest.raises(ValueError, match=r"input height and width must be >= kernel_size 2 \(output size would be 0\)"):
        max_pool2d(x)


@pytest.mark.parametrize(
    "x, kernel_size, message",
    [
        (np.zeros((2, 4, 4)), 2, r"x must have 4 dimensions \(N, C, H, W\), got shape \(2, 4, 4\)"),
        (np.zeros((1, 1, 4, 4), np.int64), 2, "x must be float32 or float64, got int64"),
        (np.zeros((1, 1, 4, 4), np.float16), 2, "x must be float32 or float64, got float16"),
        ([[[[1.0]]]], 1, "x must be a numpy array, got list"),
        (np.zeros((1, 1, 4, 4)), 0, "kernel_size must be a positive integer, got 0"),
        (np.zeros((1, 1, 4, 4)), 2.0, "kernel_size must be a positive integer, got 2.0"),
        (np.zeros((1, 1, 4, 4)), True, "kernel_size must be a positive integer, got True"),
        (np.full((1, 1, 4, 4), np.nan), 2, r"x must not contain NaN, got 16 NaN value\(s\)"),
    ],
)
def test_bad_input_raises(x, kernel_size, message):
    with pytest.raises(ValueError, match=message):
        max_pool2d(x, kernel_size)


def test_infinities_are_ordered_like_other_values():
    x = np.array([-np.inf, -np.inf, -np.inf, 1.0, np.inf, 0.0, 0.0, 0.0]).reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(max_pool2d(x)[0], F.max_pool2d(torch.from_numpy(x), 2).numpy())


@pytest.mark.parametrize(
    "dy, message",
    [
        (np.zeros((1, 1, 2, 3)), r"dy must have the output shape \(1, 1, 2, 2\), got \(1, 1, 2, 3\)"),
        (np.zeros((1, 1, 2, 2), np.float32), "dtypes must match, got dy=float32, x=float64"),
        (np.zeros((1, 2, 2)), r"dy must have 4 dimensions \(N, C, H_out, W_out\), got shape \(1, 2, 2\)"),
    ],
)
def test_bad_upstream_gradient_raises(dy, message):
    with pytest.raises(ValueError, match=message):
        max_pool2d_backward(dy, max_pool2d(np.zeros((1, 1, 5, 4)))[1])


def test_the_backward_takes_only_a_max_pool2d_cache():
    with pytest.raises(ValueError, match="cache must be the one max_pool2d returned, got ndarray"):
        max_pool2d_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 4, 4)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_gradient_reaches_only_the_maximum_of_its_window(bad):
    # The fast backward multiplies dy by a 0/1 mask (NaN * 0 is NaN); a non-finite dy takes the argmax form.
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    _, cache = max_pool2d(x)
    dx = max_pool2d_backward(np.array([[[[bad]]]]), cache)
    tx = torch.from_numpy(x).requires_grad_()
    F.max_pool2d(tx, 2).backward(torch.full((1, 1, 1, 1), bad, dtype=torch.float64))
    np.testing.assert_array_equal(dx, tx.grad.numpy())
    np.testing.assert_array_equal(dx, [[[[0.0, bad], [0.0, 0.0]]]])  # the first maximum in row-major order
