"""The losses of reference/losses.py against torch: autograd on torch statements of the same formulas
(tests/torch_losses.py), torch's own F.cross_entropy / F.binary_cross_entropy_with_logits / softmax, float64 finite
differences of every gradient, extreme logits and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from tests.helpers import (
    assert_close,
    assert_matches_finite_differences,
    assert_matches_torch,
    float_dtypes,
    to_torch,
    varied_float_arrays,
)
from tests.torch_losses import (
    torch_bce_with_logits,
    torch_combined_loss,
    torch_cross_entropy,
    torch_dice_loss,
    torch_focal_loss,
    torch_sigmoid_focal_loss,
)
from unet_from_scratch.reference.losses import (
    bce_with_logits,
    combined_loss,
    cross_entropy,
    dice_loss,
    focal_loss,
    log_softmax,
    sigmoid_focal_loss,
    softmax,
)

GAMMAS = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.5])  # 0 (plain CE), below 1 (a singular power), the usual 2
ALPHAS = st.sampled_from([0.25, 0.8, 1.0])
SIGMOID_ALPHAS = st.sampled_from([0.25, 0.8, -1.0])  # -1: torchvision's "no alpha weighting"


@st.composite
def batches(draw, min_classes=2, max_classes=5, max_side=7, dtype=None):
    """(logits (N, C, H, W), target (N, H, W) int64): N 1-2, C as asked, H and W 1-max_side, logits in [-4, 4],
    all different (``varied_float_arrays``: no pixel with a uniform softmax)."""
    dtype = draw(float_dtypes) if dtype is None else dtype
    n, c = draw(st.integers(1, 2)), draw(st.integers(min_classes, max_classes))
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    logits = draw(varied_float_arrays((n, c, h, w), dtype, bound=4.0))
    target = draw(hnp.arrays(np.int64, (n, h, w), elements=st.integers(0, c - 1)))
    return logits, target


def positive_arrays(shape, dtype):
    """Weights in [0.125, 10]: positive, so that no draw has a zero weight sum (torch's NaN case, tested apart)."""
    width = 32 if np.dtype(dtype) == np.float32 else 64
    return hnp.arrays(np.dtype(dtype), shape, elements=st.floats(0.125, 10.0, width=width))


@st.composite
def weighted_batches(draw, max_side=7, dtype=None):
    """A batch plus optional pixel weights, class weights and ignore_index (in range or not), with at least one
    pixel counted."""
    logits, target = draw(batches(max_side=max_side, dtype=dtype))
    n, c, h, w = logits.shape
    pixel_weights = draw(st.none() | positive_arrays((n, h, w), logits.dtype))
    class_weights = draw(st.none() | positive_arrays((c,), logits.dtype))
    ignore_index = draw(st.none() | st.integers(0, c - 1) | st.sampled_from([-1, 255]))
    if ignore_index is not None:
        ignored = draw(hnp.arrays(bool, (n, h, w)))
        ignored.flat[0] = False
        target = np.where(ignored, ignore_index, target)
        if target.flat[0] == ignore_index:
            target.flat[0] = (ignore_index + 1) % c
    return logits, target, pixel_weights, class_weights, ignore_index


def ours(loss_fn, **kwargs):
    """Adapt ``loss_fn(logits, target, *rest, **kwargs) -> (loss, dlogits)`` to assert_matches_torch's ``ours``."""

    def run(logits, target, *rest_and_dout):
        loss, dlogits = loss_fn(logits, target, *rest_and_dout[:-1], **kwargs)
        return loss, [dlogits]

    return run


def theirs(torch_fn, **kwargs):
    return lambda *tensors: torch_fn(*tensors, **kwargs)


# softmax and log_softmax -------------------------------------------------------------------------------------


@settings(deadline=None)
@given(batches(min_classes=1))
def test_softmax_and_log_softmax_match_torch(batch):
    logits, _ = batch
    assert_close(softmax(logits), torch.softmax(to_torch(logits), 1).numpy(), name="softmax")
    assert_close(log_softmax(logits), torch.log_softmax(to_torch(logits), 1).numpy(), name="log_softmax")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_is_stable_for_logits_of_1e4(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype)[:, :, None, None]
    for ours_fn, torch_fn in ((softmax, torch.softmax), (log_softmax, torch.log_softmax)):
        out = ours_fn(logits)
        assert out.dtype == dtype and np.all(np.isfinite(out))
        assert_close(out, torch_fn(to_torch(logits), 1).numpy(), name=ours_fn.__name__)
    # exact values: log p of -2e4 and -1e4 for logits that far below the maximum; three equal logits share 1/3
    assert_close(log_softmax(logits)[0, :, 0, 0], np.array([0.0, -2e4, -1e4]), dtype=dtype)
    assert_close(softmax(logits)[1, :, 0, 0], np.full(3, 1 / 3), dtype=dtype)


# each loss against its torch statement -------------------------------------------------------------------------


def binary(batch):
    """One-channel logits (N, 1, H, W) and a target in {0, 1}, from a C = 2 draw."""
    logits, target = batch
    return np.ascontiguousarray(logits[:, :1]), target


@settings(deadline=None)
@given(batches(min_classes=2, max_classes=2))
def test_bce_with_logits_matches_torch(batch):
    assert_matches_torch(ours(bce_with_logits), torch_bce_with_logits, list(binary(batch)), wrt=[0])


@settings(deadline=None)
@given(weighted_batches())
def test_cross_entropy_matches_torch_statement(case):
    logits, target, pixel_weights, class_weights, ignore_index = case
    assert_matches_torch(
        ours(cross_entropy, ignore_index=ignore_index),
        theirs(torch_cross_entropy, ignore_index=ignore_index),
        [logits, target, pixel_weights, class_weights],
        wrt=[0],
    )


@settings(deadline=None)
@given(weighted_batches())
def test_cross_entropy_matches_F_cross_entropy(case):
    """torch's own loss: class weights and ignore_index (no pixel weights: F.cross_entropy has none)."""
    logits, target, _, class_weights, ignore_index = case
    torch_ignore = -100 if ignore_index is None else ignore_index  # -100: torch's "nothing ignored"
    assert_matches_torch(
        ours(cross_entropy, ignore_index=ignore_index),
        lambda x, t, _, cw: F.cross_entropy(x, t, weight=cw, ignore_index=torch_ignore),
        [logits, target, None, class_weights],
        wrt=[0],
    )


@settings(deadline=None)
@given(batches(), ALPHAS, GAMMAS)
def test_focal_loss_matches_torch(batch, alpha, gamma):
    assert_matches_torch(
        ours(focal_loss, alpha=alpha, gamma=gamma),
        theirs(torch_focal_loss, alpha=alpha, gamma=gamma),
        list(batch),
        wrt=[0],
    )


@settings(deadline=None)
@given(batches(min_classes=2, max_classes=2), SIGMOID_ALPHAS, GAMMAS)
def test_sigmoid_focal_loss_matches_torchvision_semantics(batch, alpha, gamma):
    logits, target = binary(batch)
    assert_matches_torch(
        ours(sigmoid_focal_loss, alpha=alpha, gamma=gamma),
        theirs(torch_sigmoid_focal_loss, alpha=alpha, gamma=gamma),
        [logits, target],
        wrt=[0],
    )


@settings(deadline=None)
@given(batches(min_classes=1), st.sampled_from([1.0, 1e-3, 0.0]), st.booleans())
def test_dice_loss_matches_torch(batch, smooth, include_background):
    assert_matches_torch(
        ours(dice_loss, smooth=smooth, include_background=include_background),
        theirs(torch_dice_loss, smooth=smooth, include_background=include_background),
        list(batch),
        wrt=[0],
    )


@settings(deadline=None)
@given(weighted_batches(), st.sampled_from([(0.4, 0.4, 0.2), (1.0, 0.0, 0.0), (0.0, 0.5, 2.0)]))
def test_combined_loss_matches_torch(case, coefficients):
    logits, target, pixel_weights, class_weights, ignore_index = case
    target = np.where((target < 0) | (target >= logits.shape[1]), 0, target)  # no ignore_index in combined_loss
    assert_matches_torch(
        ours(combined_loss, coefficients=coefficients),
        theirs(torch_combined_loss, coefficients=coefficients),
        [logits, target, pixel_weights, class_weights],
        wrt=[0],
    )


def test_focal_loss_with_gamma_0_and_alpha_1_is_cross_entropy(rng):
    logits = rng.normal(size=(2, 4, 5, 3))
    target = rng.integers(0, 4, size=(2, 5, 3))
    for ours_value, ce_value in zip(focal_loss(logits, target, alpha=1.0, gamma=0.0), cross_entropy(logits, target)):
        assert_close(ours_value, ce_value)


# the gradients against float64 finite differences ---------------------------------------------------------------

FD_CASES = {
    "cross_entropy": lambda x, t, plain_t, pw, cw, ii: cross_entropy(x, t, pw, cw, ignore_index=ii),
    "focal_loss": lambda x, t, plain_t, pw, cw, ii: focal_loss(x, plain_t, alpha=0.8, gamma=0.5),
    "dice_loss": lambda x, t, plain_t, pw, cw, ii: dice_loss(x, plain_t, smooth=0.5),
    "dice_loss_with_background": lambda x, t, plain_t, pw, cw, ii: dice_loss(x, plain_t, include_background=True),
    "combined_loss": lambda x, t, plain_t, pw, cw, ii: combined_loss(x, plain_t, pw, cw, gamma=1.5),
}


@pytest.mark.parametrize("name", FD_CASES)
@settings(deadline=None, max_examples=10)
@given(case=weighted_batches(max_side=4, dtype=np.float64))
def test_gradients_match_finite_differences(name, case):
    logits, target, pixel_weights, class_weights, ignore_index = case
    plain_target = np.where((target < 0) | (target >= logits.shape[1]), 0, target)  # for the losses without ignore
    loss_fn = FD_CASES[name]
    args = (target, plain_target, pixel_weights, class_weights, ignore_index)
    _, dlogits = loss_fn(logits, *args)
    assert_matches_finite_differences(dlogits, lambda x: loss_fn(x, *args)[0], logits, name=name)


@pytest.mark.parametrize("loss_fn", [bce_with_logits, sigmoid_focal_loss])
@settings(deadline=None, max_examples=10)
@given(batch=batches(min_classes=2, max_classes=2, max_side=4, dtype=np.float64))
def test_binary_gradients_match_finite_differences(loss_fn, batch):
    logits, target = binary(batch)
    _, dlogits = loss_fn(logits, target)
    assert_matches_finite_differences(dlogits, lambda x: loss_fn(x, target)[0], logits, name=loss_fn.__name__)


# edge cases ------------------------------------------------------------------------------------------------------


def test_cross_entropy_with_every_pixel_ignored_is_zero_where_torch_gives_nan():
    logits = np.arange(2 * 3 * 2 * 2, dtype=np.float64).reshape(2, 3, 2, 2)
    target = np.full((2, 2, 2), 255)
    loss, dlogits = cross_entropy(logits, target, ignore_index=255)
    assert loss == 0 and not np.any(dlogits)
    assert torch.isnan(F.cross_entropy(to_torch(logits), to_torch(target), ignore_index=255))
    loss, dlogits = cross_entropy(logits, np.zeros((2, 2, 2), int), pixel_weights=np.zeros((2, 2, 2)))
    assert loss == 0 and not np.any(dlogits)


EXTREME_CASES = [
    (cross_entropy, torch_cross_entropy, 3),
    (focal_loss, torch_focal_loss, 3),
    (dice_loss, torch_dice_loss, 3),
    (combined_loss, torch_combined_loss, 3),
    (bce_with_logits, torch_bce_with_logits, 1),
    (sigmoid_focal_loss, torch_sigmoid_focal_loss, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss_fn, torch_fn, classes", EXTREME_CASES, ids=[c[0].__name__ for c in EXTREME_CASES])
def test_losses_are_finite_and_match_torch_at_logits_of_1e4(loss_fn, torch_fn, classes, dtype, rng):
    """Saturated softmax and sigmoid: probabilities of exactly 0 and 1, log-probabilities of -2e4."""
    logits = rng.choice([-1e4, 0.0, 1e4], size=(2, classes, 3, 4)).astype(dtype)
    target = rng.integers(0, max(classes, 2), size=(2, 3, 4))
    loss, dlogits = loss_fn(logits, target)
    assert np.isfinite(loss) and np.all(np.isfinite(dlogits))
    assert loss.dtype == dtype and dlogits.dtype == dtype
    assert_matches_torch(ours(loss_fn), torch_fn, [logits, target], wrt=[0])


# bad input -------------------------------------------------------------------------------------------------------

GOOD_LOGITS = np.zeros((2, 3, 4, 5), np.float32)
GOOD_TARGET = np.zeros((2, 4, 5), np.int64)
NAN_LOGITS = GOOD_LOGITS.copy()
NAN_LOGITS[1, 2, 3, 4] = np.nan
INF_LOGITS = GOOD_LOGITS.copy()
INF_LOGITS[0, 0, 0, 0] = -np.inf
BAD_INPUTS = [
    ("logits 3-D", dict(logits=GOOD_LOGITS[0]), "logits must have 4 dimensions"),
    ("integer logits", dict(logits=GOOD_LOGITS.astype(int)), "logits must be float32 or float64"),
    ("float target", dict(target=GOOD_TARGET.astype(np.float32)), "target must be an integer array"),
    ("target shape", dict(target=GOOD_TARGET[:, :3]), r"target must have shape \(N, H, W\) = \(2, 4, 5\)"),
    ("label = C", dict(target=GOOD_TARGET + 3), r"target labels must lie in \[0, 3\)"),
    ("label < 0", dict(target=GOOD_TARGET - 1), r"target labels must lie in \[0, 3\)"),
    ("NaN logits", dict(logits=NAN_LOGITS), "logits must be finite, got 1 NaN or infinite"),
    ("inf logits", dict(logits=INF_LOGITS), "logits must be finite"),
]
WEIGHT_INPUTS = [
    ("pixel_weights shape", dict(pixel_weights=np.ones((2, 4, 4))), r"pixel_weights must have shape \(2, 4, 5\)"),
    ("negative pixel_weights", dict(pixel_weights=-np.ones((2, 4, 5))), "pixel_weights must be non-negative"),
    ("NaN pixel_weights", dict(pixel_weights=np.full((2, 4, 5), np.nan)), "pixel_weights must be finite"),
    ("integer pixel_weights", dict(pixel_weights=np.ones((2, 4, 5), int)), "pixel_weights must be float32 or float64"),
    ("class_weights shape", dict(class_weights=np.ones(2)), r"class_weights must have shape \(3,\)"),
    ("negative class_weights", dict(class_weights=np.array([1.0, -1.0, 1.0])), "class_weights must be non-negative"),
    ("inf class_weights", dict(class_weights=np.array([1.0, np.inf, 1.0])), "class_weights must be finite"),
]


def _call(loss_fn, changes):
    args = dict(logits=GOOD_LOGITS, target=GOOD_TARGET)
    args.update(changes)
    return loss_fn(**args)


@pytest.mark.parametrize("loss_fn", [cross_entropy, focal_loss, dice_loss, combined_loss])
@pytest.mark.parametrize("what, changes, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_logits_or_target_raise(loss_fn, what, changes, message):
    with pytest.raises(ValueError, match=message):
        _call(loss_fn, changes)


@pytest.mark.parametrize("loss_fn", [cross_entropy, combined_loss])
@pytest.mark.parametrize("what, changes, message", WEIGHT_INPUTS, ids=[b[0] for b in WEIGHT_INPUTS])
def test_bad_weights_raise(loss_fn, what, changes, message):
    with pytest.raises(ValueError, match=message):
        _call(loss_fn, changes)


@pytest.mark.parametrize(
    "loss_fn, changes, message",
    [
        (focal_loss, dict(gamma=-1.0), "gamma must be finite and ≥ 0"),
        (focal_loss, dict(alpha=float("nan")), "alpha must be finite"),
        (sigmoid_focal_loss, dict(logits=GOOD_LOGITS[:, :1], gamma=-0.5), "gamma must be finite and ≥ 0"),
        (dice_loss, dict(smooth=-1.0), "smooth must be finite and ≥ 0"),
        (combined_loss, dict(coefficients=(1.0, 1.0)), "coefficients must be three numbers"),
        (combined_loss, dict(coefficients=(1.0, np.nan, 1.0)), "coefficients must be finite"),
        (bce_with_logits, dict(), r"binary loss must have one channel \(N, 1, H, W\), got shape \(2, 3, 4, 5\)"),
        (bce_with_logits, dict(logits=GOOD_LOGITS[:, :1], target=GOOD_TARGET + 2), r"must lie in \[0, 2\)"),
        (sigmoid_focal_loss, dict(logits=NAN_LOGITS[:, 2:]), "logits must be finite"),
        (cross_entropy, dict(target=GOOD_TARGET + 7, ignore_index=255), r"\(or ignore_index=255\)"),
    ],
)
def test_bad_parameters_raise(loss_fn, changes, message):
    with pytest.raises(ValueError, match=message):
        _call(loss_fn, changes)


ALL_LOSSES = [bce_with_logits, sigmoid_focal_loss, cross_entropy, focal_loss, dice_loss, combined_loss]


@pytest.mark.parametrize("loss_fn", ALL_LOSSES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(0, 4, 5), (2, 0, 5), (2, 4, 0)], ids=["N=0", "H=0", "W=0"])
def test_a_batch_without_pixels_raises_instead_of_nan(loss_fn, shape):
    # A mean over no pixel is 0/0: torch returns NaN here (F.binary_cross_entropy_with_logits on an empty batch).
    n, h, w = shape
    classes = 1 if loss_fn in (bce_with_logits, sigmoid_focal_loss) else 3
    logits, target = np.zeros((n, classes, h, w)), np.zeros((n, h, w), np.int64)
    assert torch.isnan(F.binary_cross_entropy_with_logits(torch.zeros(n, 1, h, w), torch.zeros(n, 1, h, w)))
    with pytest.raises(ValueError, match=rf"logits must hold at least one pixel and one class, got shape \({n}, "):
        loss_fn(logits, target)


def test_logits_without_classes_raise():
    with pytest.raises(ValueError, match="at least one pixel and one class"):
        cross_entropy(np.zeros((2, 0, 4, 5)), np.zeros((2, 4, 5), np.int64))


@pytest.mark.parametrize("fn", [softmax, log_softmax], ids=lambda f: f.__name__)
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_softmax_refuses_non_finite_values(fn, bad):
    # softmax([inf, 0]) would be inf - inf = NaN in every entry of the row (torch gives [nan, nan] too).
    x = np.array([[bad, 0.0, 1.0], [0.0, 1.0, 2.0]])
    with pytest.raises(ValueError, match=r"x must be finite, got 1 NaN or infinite value\(s\)"):
        fn(x, axis=1)


@pytest.mark.parametrize("fn", [softmax, log_softmax], ids=lambda f: f.__name__)
def test_softmax_axis_is_checked_and_an_empty_class_axis_refused(fn, rng):
    with pytest.raises(ValueError, match=r"x must hold at least one class along axis 1, got shape \(2, 0, 3\)"):
        fn(np.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match=r"axis must lie in \[-3, 3\) for x of shape \(2, 4, 3\), got 3"):
        fn(np.zeros((2, 4, 3)), axis=3)
    with pytest.raises(ValueError, match="axis must be an integer, got 1.0"):
        fn(np.zeros((2, 4, 3)), axis=1.0)
    # Any other axis, negative ones and NumPy integers included, against torch; an empty batch axis is fine.
    x = rng.normal(size=(2, 4, 3))
    torch_fn = torch.softmax if fn is softmax else torch.log_softmax
    for axis in (0, np.int64(2), -1):
        assert_close(fn(x, axis=axis), torch_fn(to_torch(x), int(axis)).numpy(), name=f"axis {axis}")
    assert fn(np.zeros((0, 4, 3))).shape == (0, 4, 3)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(gamma=True), "gamma must be a real number, got True"),
        (dict(alpha="0.25"), "alpha must be a real number, got '0.25'"),
        (dict(gamma=np.float32(2.0)), None),  # NumPy scalars are numbers
    ],
)
def test_scalar_parameters_are_real_numbers(changes, message):
    if message is None:
        loss, _ = _call(focal_loss, changes)
        assert np.isfinite(loss)
        return
    with pytest.raises(ValueError, match=message):
        _call(focal_loss, changes)
