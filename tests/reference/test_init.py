"""he_normal and glorot_uniform: moments within statistical bounds, the same distribution as torch.nn.init, bad input;
fan_in against the incoming connections torch's convolutions actually sum.

Bounds are 5 standard errors: for n independent draws with standard deviation s, the sample mean has standard
error s / sqrt(n), and the sample standard deviation of a normal about s / sqrt(2 n) (the delta method on
Var[sample variance] = 2 s^4 / (n - 1)). A correct sampler leaves the bound with probability ~6e-7 per check,
and the seeds are fixed, so these tests cannot flake; a wrong std by 1% is > 5 standard errors at these n.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from unet_from_scratch.reference.init import TRUNCATED_STD, fan_in, fans, glorot_uniform, he_normal

# (shape, fan_in): a 3x3 convolution from 1 channel (the U-Net's first layer), 64 and 512 channels; enough output
# channels for ~3e5 draws each.
CASES = [((32768, 1, 3, 3), 9), ((512, 64, 3, 3), 576), ((64, 512, 3, 3), 4608)]


def assert_moments(w, mean, std, kurtosis=3.0):
    """Sample mean and std of ``w`` within 5 standard errors of ``mean`` and ``std``.

    The sample variance of a distribution with kurtosis k has variance (k - 1) std^4 / n, so the sample std's
    standard error is std * sqrt((k - 1) / (4 n)) (3 for a normal, giving std / sqrt(2 n))."""
    n = w.size
    sample = w.astype(np.float64)
    assert abs(sample.mean() - mean) < 5 * std / math.sqrt(n), f"mean {sample.mean()} vs {mean}"
    assert abs(sample.std() - std) < 5 * std * math.sqrt((kurtosis - 1) / (4 * n)), f"std {sample.std()} vs {std}"


@pytest.mark.parametrize("shape, fan_in", CASES)
def test_he_normal_has_mean_zero_and_std_sqrt_2_over_fan_in(shape, fan_in):
    w = he_normal(shape, np.random.default_rng(1))
    assert w.shape == shape and w.dtype == np.float32
    assert_moments(w, 0.0, math.sqrt(2.0 / fan_in))


def truncated_normal_kurtosis(a):
    """Kurtosis of a standard normal truncated to [-a, a] (scipy.stats.truncnorm, an independent formula)."""
    return float(stats.truncnorm(-a, a).stats(moments="k")) + 3.0


def test_truncated_std_constant_is_the_std_of_a_normal_cut_at_two():
    assert TRUNCATED_STD == pytest.approx(stats.truncnorm(-2, 2).std(), rel=1e-15)


@pytest.mark.parametrize("shape, fan_in", CASES)
def test_truncated_he_normal_keeps_the_std_and_cuts_at_two_scale_units(shape, fan_in):
    w = he_normal(shape, np.random.default_rng(2), truncated=True, dtype=np.float64)
    std = math.sqrt(2.0 / fan_in)
    assert_moments(w, 0.0, std, kurtosis=truncated_normal_kurtosis(2.0))  # ~2.37: a tighter bound than a normal's
    scale = std / TRUNCATED_STD
    assert np.abs(w).max() <= 2 * scale
    assert np.abs(w).max() > 1.99 * scale  # the cut is at 2 scale units, not tighter


def test_fan_in_can_be_given(rng):
    w = he_normal((300, 400), rng, fan_in=50, dtype=np.float64)
    assert_moments(w, 0.0, math.sqrt(2.0 / 50))


@pytest.mark.parametrize("shape, fan_in", CASES)
def test_he_normal_matches_torch_kaiming_normal(shape, fan_in):
    ours = he_normal(shape, np.random.default_rng(3))
    torch.manual_seed(3)
    theirs = torch.nn.init.kaiming_normal_(torch.empty(shape), mode="fan_in", nonlinearity="relu").numpy()
    assert stats.ks_2samp(ours.ravel(), theirs.ravel()).pvalue > 0.01
    # The same test tells a 3% error in the std apart (p far below 0.01): it has the power to fail.
    assert stats.ks_2samp(1.03 * ours.ravel(), theirs.ravel()).pvalue < 0.01


def test_truncated_he_normal_matches_torch_trunc_normal():
    shape, fan_in = CASES[1]
    scale = math.sqrt(2.0 / fan_in) / TRUNCATED_STD
    ours = he_normal(shape, np.random.default_rng(4), truncated=True)
    torch.manual_seed(4)
    theirs = torch.nn.init.trunc_normal_(torch.empty(shape), std=scale, a=-2 * scale, b=2 * scale).numpy()
    assert stats.ks_2samp(ours.ravel(), theirs.ravel()).pvalue > 0.01
    untruncated = he_normal(shape, np.random.default_rng(4))
    assert stats.ks_2samp(untruncated.ravel(), theirs.ravel()).pvalue < 0.01  # the cut shows


def test_fans_follow_torch():
    for shape in [(64, 3, 3, 3), (10, 20), (8, 4, 2, 3, 5)]:
        expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
        assert fans(shape) == expected


# (kind, weight shape, stride, groups, C_in): convolutions and transposed convolutions, square and not, grouped,
# kernels the stride divides (the U-Net's 2x2 stride 2: n = C_in) and one it does not (3x3 stride 2: 9/4 per channel).
FAN_CASES = [
    ("conv", (8, 3, 3, 3), 1, 1, 3),
    ("conv", (8, 2, 3, 3), 1, 2, 4),
    ("conv", (5, 7, 1, 1), 1, 1, 7),
    ("conv_transpose", (6, 4, 2, 2), 2, 1, 6),
    ("conv_transpose", (6, 4, 3, 3), 2, 1, 6),
    ("conv_transpose", (6, 2, 2, 2), 1, 1, 6),
    ("conv_transpose", (6, 2, 2, 2), 2, 3, 6),
    ("conv_transpose", (4, 3, 2, 3), (2, 3), 1, 4),
]


@pytest.mark.parametrize("kind, shape, stride, groups, c_in", FAN_CASES, ids=str)
def test_fan_in_is_the_number_of_inputs_an_output_sums(kind, shape, stride, groups, c_in):
    # All-ones weights on an all-ones input: each output pixel is the count of (channel, tap) pairs it sums. A
    # transposed convolution's count varies with the pixel's phase when the stride does not divide the kernel, so
    # the count averaged over whole periods of the fully covered interior is what fan_in states.
    x, w = torch.ones(1, c_in, 12, 12, dtype=torch.float64), torch.ones(shape, dtype=torch.float64)
    if kind == "conv":
        counts = torch.nn.functional.conv2d(x, w, groups=groups)
    else:
        counts = torch.nn.functional.conv_transpose2d(x, w, stride=stride, groups=groups)
        (kh, kw), (sh, sw) = shape[2:], (stride, stride) if isinstance(stride, int) else stride
        counts = counts[..., kh : kh + 3 * sh, kw : kw + 3 * sw]  # 3 periods, inside the rows all stamps reach
    assert math.isclose(fan_in(kind, shape, stride, groups), counts.mean().item(), rel_tol=1e-12)


def test_fan_in_of_the_up_convolution_is_c_in_not_torchs():
    shape = (1024, 512, 2, 2)  # the paper's deepest up-convolution, 1024 -> 512 channels
    assert fan_in("conv_transpose", shape, stride=2) == 1024 and isinstance(fan_in("conv_transpose", shape, 2), int)
    assert torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))[0] == 512 * 4  # half He's variance
    assert fan_in("conv", (64, 3, 3, 3)) == fans((64, 3, 3, 3))[0] == 27


@pytest.mark.parametrize(
    "args, message",
    [
        (("linear", (4, 3)), r"kind must be one of \('conv', 'conv_transpose'\), got 'linear'"),
        (("conv", (5,)), r"fans need a weight shape of at least 2 dimensions"),
        (("conv_transpose", (4, 3)), r"a conv_transpose weight has shape \(C_in, C_out / groups, \*kernel\)"),
        (("conv_transpose", (4, 3, 2, 2), 0), r"stride must be a positive int or 2 positive ints, got 0"),
        (("conv_transpose", (4, 3, 2, 2), (2, 2, 2)), r"stride must be a positive int or 2 positive ints"),
        (("conv_transpose", (4, 3, 2, 2), 2, 3), r"groups must be a positive int dividing C_in = 4, got 3"),
        (("conv_transpose", (4, -3, 2, 2)), r"shape must be a tuple of non-negative ints"),
    ],
)
def test_bad_fan_in_input_raises(args, message):
    with pytest.raises(ValueError, match=message):
        fan_in(*args)


def test_glorot_uniform_matches_torch_xavier_uniform():
    shape = (256, 128, 3, 3)
    ours = glorot_uniform(shape, np.random.default_rng(5))
    torch.manual_seed(5)
    theirs = torch.nn.init.xavier_uniform_(torch.empty(shape)).numpy()
    assert stats.ks_2samp(ours.ravel(), theirs.ravel()).pvalue > 0.01
    fan_in, fan_out = 128 * 9, 256 * 9
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(ours).max() <= limit
    assert_moments(ours, 0.0, limit / math.sqrt(3.0), kurtosis=1.8)  # U(-a, a): std a / sqrt(3), kurtosis 9/5


def test_same_seed_same_weights():
    a = he_normal((4, 3, 3, 3), np.random.default_rng(7), truncated=True)
    b = he_normal((4, 3, 3, 3), np.random.default_rng(7), truncated=True)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shape=(5,)), r"fans need a weight shape of at least 2 dimensions \(C_out, C_in, ...\), got \(5,\)"),
        (dict(shape=(4, -1, 3)), r"shape must be a tuple of non-negative ints, got \(4, -1, 3\)"),
        (dict(shape=(4, 2.5)), r"shape must be a tuple of non-negative ints, got \(4, 2.5\)"),
        (dict(shape=(4, 3), fan_in=0), "fan_in must be a positive number, got 0"),
        (dict(shape=(4, 3), fan_in=-9), "fan_in must be a positive number, got -9"),
        (dict(shape=(4, 3), fan_in=float("nan")), "fan_in must be a positive number, got nan"),
        (dict(shape=(4, 3), fan_in=float("inf")), "fan_in must be a positive number, got inf"),
        (dict(shape=(4, 3), fan_in="9"), "fan_in must be a positive number, got '9'"),
        (dict(shape=(4, 3), dtype=np.int32), "dtype must be float32 or float64, got int32"),
        (dict(shape=(4, 3), rng=np.random.RandomState(0)), "rng must be a numpy.random.Generator, got RandomState"),
        (dict(shape=(4, 0)), r"fan_in must be a positive number, got 0"),
    ],
)
def test_bad_he_normal_input_raises(kwargs, message):
    kwargs.setdefault("rng", np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        he_normal(**kwargs)


def test_bad_glorot_uniform_input_raises(rng):
    with pytest.raises(ValueError, match=r"fans need a weight shape of at least 2 dimensions"):
        glorot_uniform((5,), rng)
    with pytest.raises(ValueError, match=r"glorot_uniform needs a non-empty weight shape, got \(0, 0\)"):
        glorot_uniform((0, 0), rng)
    with pytest.raises(ValueError, match="rng must be a numpy.random.Generator, got int"):
        glorot_uniform((3, 3), 0)
