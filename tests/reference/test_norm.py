"""batch_norm against F.batch_norm (training and eval, running statistics included) and autograd, finite
differences, torch's one-value-per-channel error and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.helpers import (
    assert_close,
    assert_matches_finite_differences,
    assert_matches_torch,
    float_dtypes,
    seeded_arrays,
    to_torch,
)
from unet_from_scratch.reference.norm import batch_norm, batch_norm_backward


@st.composite
def norm_cases(draw):
    """(x, gamma, beta, running_mean, running_var, dy, momentum): batch 1-3, channels 1-8, sizes 1-24."""
    dtype = draw(float_dtypes)
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 8))
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    x = draw(seeded_arrays((n, c, h, w), dtype))
    gamma, beta, running_mean = (draw(seeded_arrays((c,), dtype)) for _ in range(3))
    running_var = draw(seeded_arrays((c,), dtype, bound=1.0)) ** 2 + dtype(0.1)
    dy = draw(seeded_arrays((n, c, h, w), dtype))
    momentum = draw(st.sampled_from([0.1, 0.0, 0.5, 1.0]))
    return x, gamma, beta, running_mean, running_var, dy, momentum


def check_against_torch(case, training):
    """Forward, the three gradients and the running statistics after the call, ours against torch's."""
    x, gamma, beta, running_mean, running_var, dy, momentum = case
    our_mean, our_var = running_mean.copy(), running_var.copy()
    torch_mean, torch_var = to_torch(running_mean), to_torch(running_var)

    def ours(x, gamma, beta, dout):
        y, cache = batch_norm(x, gamma, beta, our_mean, our_var, training=training, momentum=momentum)
        return y, list(batch_norm_backward(dout, cache))

    def theirs(x, gamma, beta):
        return F.batch_norm(x, torch_mean, torch_var, gamma, beta, training=training, momentum=momentum)

    # Per-dtype defaults: the statistics are sums of M = N*H*W <= 1728 terms, the gradients two more such sums.
    # They hold because seeded_arrays spreads each channel over [-4, 4]. A nearly constant float32 channel is
    # ill-conditioned for any implementation: the rounding of its mean (~1e-7 * |x|) is multiplied by
    # 1/sqrt(var + eps), up to 316, and torch's and our results then each sit ~1e-4 from the float64 answer.
    assert_matches_torch(ours, theirs, [x, gamma, beta], wrt=[0, 1, 2], dout=dy, names=["dx", "dgamma", "dbeta"])
    assert_close(our_mean, torch_mean.numpy(), name="running_mean")
    assert_close(our_var, torch_var.numpy(), name="running_var")
    if not training:
        np.testing.assert_array_equal(our_mean, running_mean)
        np.testing.assert_array_equal(our_var, running_var)


@settings(deadline=None)
@given(norm_cases())
def test_training_matches_torch(case):
    x = case[0]
    assume(x.shape[0] * x.shape[2] * x.shape[3] > 1)  # one value per channel is an error, tested below
    check_against_torch(case, training=True)


@settings(deadline=None)
@given(norm_cases())
def test_eval_matches_torch(case):
    check_against_torch(case, training=False)


def test_running_statistics_hand_worked():
    # One channel, values 1..4: mean 2.5, biased variance 1.25, unbiased 5/3.
    x = np.arange(1.0, 5.0).reshape(1, 1, 2, 2)
    mean, var = np.array([1.0]), np.array([2.0])
    y, _ = batch_norm(x, np.ones(1), np.zeros(1), mean, var, momentum=0.1)
    np.testing.assert_allclose(mean, [0.9 * 1.0 + 0.1 * 2.5])
    np.testing.assert_allclose(var, [0.9 * 2.0 + 0.1 * 5 / 3])
    np.testing.assert_allclose(y.ravel(), (np.arange(1.0, 5.0) - 2.5) / np.sqrt(1.25 + 1e-5))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 2, 2), (1, 2, 3, 1), (3, 1, 1, 2)])
def test_backward_matches_finite_differences(shape, training, rng):
    x = rng.normal(size=shape)
    c = shape[1]
    gamma, beta, mean = rng.normal(size=c), rng.normal(size=c), rng.normal(size=c)
    var = rng.uniform(0.5, 2.0, size=c)
    dy = rng.normal(size=shape)

    def forward(x, gamma, beta):
        # Copies: each call of a training forward would otherwise move the running statistics.
        return batch_norm(x, gamma, beta, mean.copy(), var.copy(), training=training)[0]

    _, cache = batch_norm(x, gamma, beta, mean.copy(), var.copy(), training=training)
    dx, dgamma, dbeta = batch_norm_backward(dy, cache)
    assert_matches_finite_differences(dx, lambda z: forward(z, gamma, beta), x, dy, name="dx")
    assert_matches_finite_differences(dgamma, lambda z: forward(x, z, beta), gamma, dy, name="dgamma")
    assert_matches_finite_differences(dbeta, lambda z: forward(x, gamma, z), beta, dy, name="dbeta")


@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (1, 1, 1, 1)])
def test_one_value_per_channel_in_training_raises_like_torch(shape):
    x = np.ones(shape)
    c = shape[1]
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        F.batch_norm(torch.from_numpy(x), None, None, training=True)
    with pytest.raises(ValueError, match=r"expected more than 1 value per channel when training, got input shape"):
        batch_norm(x, np.ones(c), np.zeros(c), np.zeros(c), np.ones(c), training=True)
    # In eval the running statistics normalise, so one value is fine (as in torch).
    y, _ = batch_norm(x, np.ones(c), np.zeros(c), np.zeros(c), np.ones(c), training=False)
    expected = F.batch_norm(to_torch(x), to_torch(np.zeros(c)), to_torch(np.ones(c)))
    assert_close(y, expected.numpy())


@pytest.mark.parametrize("training", [True, False])
def test_empty_batch_leaves_running_statistics_alone_like_torch(training, rng):
    # N = 0: no statistics to take. torch returns an empty output and leaves the running statistics as they were;
    # averaging the NaN mean of no value into them would spoil them for good.
    x = np.zeros((0, 3, 4, 4))
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
    torch_x = to_torch(x, requires_grad=True)
    gamma, beta = to_torch(rng.normal(size=3), requires_grad=True), to_torch(rng.normal(size=3), requires_grad=True)
    torch_mean, torch_var = to_torch(mean), to_torch(var)
    expected = F.batch_norm(torch_x, torch_mean, torch_var, gamma, beta, training=training, momentum=0.1)
    expected.backward(torch.zeros_like(expected))

    ours_mean, ours_var = mean.copy(), var.copy()
    y, cache = batch_norm(x, gamma.detach().numpy(), beta.detach().numpy(), ours_mean, ours_var, training=training)
    assert y.shape == tuple(expected.shape) == x.shape
    np.testing.assert_array_equal(ours_mean, torch_mean.numpy())
    np.testing.assert_array_equal(ours_var, torch_var.numpy())
    np.testing.assert_array_equal(ours_mean, mean)
    dx, dgamma, dbeta = batch_norm_backward(np.zeros_like(x), cache)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dgamma, gamma.grad.numpy())
    np.testing.assert_array_equal(dbeta, beta.grad.numpy())


def call(x=None, gamma=None, beta=None, mean=None, var=None, **kwargs):
    """batch_norm on a valid (2, 3, 4, 4) float64 problem with any one argument replaced."""
    c = 3
    return batch_norm(
        np.zeros((2, c, 4, 4)) if x is None else x,
        np.ones(c) if gamma is None else gamma,
        np.zeros(c) if beta is None else beta,
        np.zeros(c) if mean is None else mean,
        np.ones(c) if var is None else var,
        **kwargs,
    )


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(x=np.zeros((2, 3, 4))), r"x must have 4 dimensions \(N, C, H, W\), got shape \(2, 3, 4\)"),
        (dict(x=np.zeros((2, 3, 4, 4), np.int64)), "x must be float32 or float64, got int64"),
        (dict(gamma=np.ones(4)), r"gamma must have shape \(3,\) for x with 3 channels, got \(4,\)"),
        (dict(beta=np.zeros((3, 1))), r"beta must have 1 dimensions \(C,\), got shape \(3, 1\)"),
        (dict(mean=np.zeros(2)), r"running_mean must have shape \(3,\) for x with 3 channels, got \(2,\)"),
        (dict(var=np.ones(3, np.float32)), "dtypes must match, got x=float64, .*running_var=float32"),
        (dict(x=np.full((2, 3, 4, 4), np.nan)), r"x must be finite, got 96 NaN or infinite value\(s\)"),
        (dict(mean=np.array([0.0, np.nan, 0.0])), r"running_mean must be finite, got 1 NaN or infinite value\(s\)"),
        (dict(var=np.array([1.0, np.inf, 1.0])), r"running_var must be finite, got 1 NaN or infinite value\(s\)"),
        (dict(var=np.array([1.0, -0.5, 1.0])), "running_var must be >= 0, got min -0.5"),
        (dict(momentum=1.5), "momentum must be finite and ≥ 0.0 and ≤ 1.0, got 1.5"),
        (dict(momentum=float("nan")), "momentum must be finite"),
        (dict(momentum=True), "momentum must be a real number, got True"),
        (dict(eps=0.0), "eps must be finite and > 0.0, got 0.0"),
    ],
)
def test_bad_input_raises(arguments, message):
    with pytest.raises(ValueError, match=message):
        call(**arguments)


def test_bad_input_leaves_running_statistics_alone():
    mean, var = np.zeros(3), np.ones(3)
    with pytest.raises(ValueError):
        call(x=np.full((2, 3, 4, 4), np.nan), mean=mean, var=var)
    np.testing.assert_array_equal(mean, 0)
    np.testing.assert_array_equal(var, 1)


@pytest.mark.parametrize(
    "dy, message",
    [
        (np.zeros((2, 3, 4, 5)), r"dy must have the forward input's shape \(2, 3, 4, 4\), got \(2, 3, 4, 5\)"),
        (np.zeros((2, 3, 4, 4), np.float32), "dtypes must match, got dy=float32, x=float64"),
        (np.zeros((2, 3, 4)), r"dy must have 4 dimensions \(N, C, H, W\), got shape \(2, 3, 4\)"),
    ],
)
def test_bad_upstream_gradient_raises(dy, message):
    _, cache = call()
    with pytest.raises(ValueError, match=message):
        batch_norm_backward(dy, cache)
