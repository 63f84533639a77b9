"""dropout and its backward: kept fraction and expectation within binomial bounds, independent mask entries, the
kept value torch.nn.Dropout keeps, identity in evaluation, the gradient by finite differences, bad input.

Bounds are 5 standard errors of a binomial: the kept count of n values is Binomial(n, 1 - p), so the kept
fraction has standard error sqrt(p (1 - p) / n). Seeds are fixed, so a correct sampler never leaves them.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tests.helpers import assert_close, assert_matches_finite_differences
from unet_from_scratch.reference.dropout import dropout, dropout_backward

N = 200_000
PS = [0.1, 0.5, 0.8]


def kept_fraction_bound(p, n):
    return 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keeps_one_minus_p_and_scales_the_kept_by_one_over_one_minus_p(p, dtype):
    x = np.random.default_rng(1).uniform(0.5, 2.0, size=(4, 5, 100, 100)).astype(dtype)
    y, cache = dropout(x, p, np.random.default_rng(2))
    mask = cache["mask"]
    assert y.dtype == dtype and y.shape == x.shape and mask.dtype == np.bool_ and mask.shape == x.shape
    assert abs(mask.mean() - (1 - p)) < kept_fraction_bound(p, N)
    assert_close(y[mask], x[mask] / (1 - p), name="kept values")
    assert np.all(y[~mask] == 0)


@pytest.mark.parametrize("p", PS)
def test_expectation_is_preserved(p):
    # The mean of y over n values of 1 is (kept count) / (n (1 - p)): standard error sqrt(p / ((1 - p) n)).
    y, _ = dropout(np.ones(N), p, np.random.default_rng(3))
    assert abs(y.mean() - 1.0) < 5 * math.sqrt(p / ((1 - p) * N))


@pytest.mark.parametrize("p", PS)
def test_mask_entries_are_independent_and_kept_values_are_torchs(p):
    # Disjoint pairs of neighbours along each axis: for independent Bernoulli(1 - p) entries the four outcomes
    # (kept, kept), (kept, dropped), (dropped, kept), (dropped, dropped) have probabilities q², qp, pq, p²
    # (q = 1 - p). A mask repeated along an axis, or one drawn per row, fails this chi-square test.
    x = np.ones((64, 64, 50), np.float32)
    y, cache = dropout(x, p, np.random.default_rng(4))
    mask = cache["mask"]
    q = 1 - p
    for axis in range(3):
        along = np.moveaxis(mask, axis, 0)
        first, second = along[0::2].ravel(), along[1::2].ravel()
        observed = [np.sum(first & second), np.sum(first & ~second), np.sum(~first & second), np.sum(~first & ~second)]
        expected = np.array([q * q, q * p, p * q, p * p]) * first.size
        assert stats.chisquare(observed, expected).pvalue > 1e-4, f"axis {axis}: {observed} vs {expected}"
    # The kept value is 1 / (1 - p) rounded to float32 as torch rounds it.
    torch_kept = torch.nn.Dropout(p).train()(torch.ones(10_000)).numpy()
    np.testing.assert_array_equal(np.unique(y[mask]), np.unique(torch_kept[torch_kept != 0]))


@pytest.mark.parametrize("p, training", [(0.5, False), (0.0, True), (0.0, False)])
def test_evaluation_and_p_zero_are_the_identity(p, training, rng):
    x = rng.normal(size=(2, 3, 4, 5))
    y, cache = dropout(x, p, rng, training=training)
    np.testing.assert_array_equal(y, x)
    assert cache["mask"].all() and cache["mask"].shape == x.shape
    dy = rng.normal(size=x.shape)
    np.testing.assert_array_equal(dropout_backward(dy, cache), dy)
    torch_eval = torch.nn.Dropout(p).train(training)(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(y, torch_eval)


@pytest.mark.parametrize("p", PS)
def test_backward_routes_through_the_mask_finite_differences(p, rng):
    # The mask depends only on the generator, not on x: re-seeding it each call fixes the mask, and dropout
    # becomes a linear function of x whose gradient finite differences measure.
    x = rng.normal(size=(2, 3, 4))
    dy = rng.normal(size=x.shape)
    _, cache = dropout(x, p, np.random.default_rng(5))
    mask = cache["mask"]
    assert 0 < mask.sum() < mask.size  # kept and dropped values both present
    dx = dropout_backward(dy, cache)
    assert_matches_finite_differences(dx, lambda z: dropout(z, p, np.random.default_rng(5))[0], x, dy, name="dx")
    assert np.all(dx[~mask] == 0)


def test_dtype_is_kept(rng):
    for dtype in (np.float32, np.float64):
        y, cache = dropout(np.ones(10, dtype), 0.5, rng)
        assert y.dtype == dtype
        assert dropout_backward(np.ones(10, dtype), cache).dtype == dtype


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "0.5", True, None])
def test_p_outside_zero_one_raises(p, rng):
    with pytest.raises(ValueError, match=r"p must be a number in \[0, 1\), got"):
        dropout(np.ones(3), p, rng)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda rng: dropout(np.ones(3, np.int64), 0.5, rng), "x must be float32 or float64, got int64"),
        (lambda rng: dropout([1.0, 2.0], 0.5, rng), "x must be a numpy array, got list"),
        (lambda rng: dropout(np.ones(3), 0.5, 0), "rng must be a numpy.random.Generator, got int"),
        (
            lambda rng: dropout_backward(np.ones(3), np.ones(3, bool)),
            "cache must be the one dropout returned, got ndarray",
        ),
        (
            lambda rng: dropout_backward(np.ones(3), dropout(np.ones(4), 0.5, rng)[1]),
            r"dy must have the output shape \(4,\), got \(3,\)",
        ),
        (
            lambda rng: dropout_backward(np.ones(3, np.int32), dropout(np.ones(3), 0.5, rng)[1]),
            "dy must be float32 or float64",
        ),
    ],
)
def test_bad_input_raises(call, message, rng):
    with pytest.raises(ValueError, match=message):
        call(rng)
