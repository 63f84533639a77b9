"""The NumPy attention against torch's scaled_dot_product_attention (values and autograd) and finite differences."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import (
    assert_close,
    assert_matches_finite_differences,
    assert_matches_torch,
    float_dtypes,
    varied_float_arrays,
)
from tests.torch_attention import naive_attention
from unet_from_scratch.reference.attention import (
    scaled_dot_product_attention,
    scaled_dot_product_attention_backward,
)


def reference_forward_backward(q, k, v, scale, dout):
    out, cache = scaled_dot_product_attention(q, k, v, scale)
    return out, list(scaled_dot_product_attention_backward(dout, cache))


@st.composite
def attention_problems(draw):
    """q (B, H, n, d), k (B, H, m, d), v (B, H, m, dv), dout (B, H, n, dv) and a scale (None = 1/√d).

    Values in [-2, 2], all different within each array (``varied_float_arrays``: no query whose scores are all
    equal, where the softmax is uniform and a wrong dS would go unseen): with d ≤ 6 and scale ≤ 1.5 the scores stay within ±36, peaked enough to exercise the
    stable softmax, not so peaked that every weight is exactly 0 or 1.
    """
    dtype = draw(float_dtypes)
    b, h = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    n, m = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    d, dv = draw(st.integers(1, 6)), draw(st.integers(1, 5))
    shapes = ((b, h, n, d), (b, h, m, d), (b, h, m, dv), (b, h, n, dv))  # q, k, v, dout
    arrays = [draw(varied_float_arrays(shape, dtype, bound=2.0)) for shape in shapes]
    scale = draw(st.one_of(st.none(), st.floats(0.05, 1.5)))
    return (*arrays, scale)


@given(attention_problems())
@settings(deadline=None)
def test_matches_torch_values_and_gradients(problem):
    q, k, v, dout, scale = problem
    assert_matches_torch(
        lambda q, k, v, scale, dout: reference_forward_backward(q, k, v, scale, dout),
        lambda q, k, v, scale: F.scaled_dot_product_attention(q, k, v, scale=scale),
        [q, k, v, scale],
        wrt=(0, 1, 2),
        dout=dout,
        names=["dq", "dk", "dv"],
    )


@given(attention_problems())
@settings(deadline=None, max_examples=10)
def test_matches_the_naive_torch_baseline(problem):
    # benchmarks/test_attention.py times naive_attention against the reference and the kernel: the reference's
    # values and gradients agree with it too, so the benchmark compares the same function.
    q, k, v, dout, scale = problem
    assert_matches_torch(
        lambda q, k, v, scale, dout: reference_forward_backward(q, k, v, scale, dout),
        naive_attention,
        [q, k, v, scale],
        wrt=(0, 1, 2),
        dout=dout,
        names=["dq", "dk", "dv"],
    )


def test_matches_finite_differences(rng):
    q, k, v = (rng.normal(size=(1, 2, 3, 4)) for _ in range(3))
    dout = rng.normal(size=(1, 2, 3, 4))
    scale = 0.7
    _, cache = scaled_dot_product_attention(q, k, v, scale)
    dq, dk, dv = scaled_dot_product_attention_backward(dout, cache)
    assert_matches_finite_differences(dq, lambda x: scaled_dot_product_attention(x, k, v, scale)[0], q, dout, name="dq")
    assert_matches_finite_differences(dk, lambda x: scaled_dot_product_attention(q, x, v, scale)[0], k, dout, name="dk")
    assert_matches_finite_differences(dv, lambda x: scaled_dot_product_attention(q, k, x, scale)[0], v, dout, name="dv")


def test_zero_queries_average_the_values(rng):
    # All scores 0 -> uniform weights 1/m: each output row is the mean of the value rows.
    q = np.zeros((2, 1, 3, 4))
    k, v = rng.normal(size=(2, 1, 5, 4)), rng.normal(size=(2, 1, 5, 6))
    out, _ = scaled_dot_product_attention(q, k, v)
    assert_close(out, np.broadcast_to(v.mean(axis=2, keepdims=True), out.shape), name="out")


def test_huge_scores_stay_finite():
    # Scores of ±1e4 overflow a naive exp; the stable softmax picks the larger key exactly.
    q = np.full((1, 1, 1, 1), 100.0)
    k = np.array([100.0, -100.0]).reshape(1, 1, 2, 1)
    v = np.array([3.0, 5.0]).reshape(1, 1, 2, 1)
    out, _ = scaled_dot_product_attention(q, k, v, scale=1.0)
    assert out.item() == 3.0


@pytest.mark.parametrize(
    "q, k, v, scale, match",
    [
        (np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), None, "4 dimensions"),
        (np.zeros((1, 1, 2, 3), np.int64), np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 3)), None, "float32 or float64"),
        (np.zeros((1, 1, 2, 3), np.float32), np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 3)), None, "dtypes must match"),
        (np.zeros((1, 1, 2, 3)), np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)), None, "batch, heads"),
        (np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 4)), np.zeros((1, 1, 2, 3)), None, "head_dim"),
        (np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 4, 3)), None, "one value per key"),
        (np.full((1, 1, 2, 3), np.nan), np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 3)), None, "finite"),
        (np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 3)), np.zeros((1, 1, 2, 3)), float("inf"), "scale"),
    ],
)
def test_bad_inputs_raise(q, k, v, scale, match):
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(q, k, v, scale)


def test_backward_rejects_wrong_dout_shape():
    _, cache = scaled_dot_product_attention(*(np.zeros((1, 1, 2, 3)) for _ in range(3)))
    with pytest.raises(ValueError, match="output's shape"):
        scaled_dot_product_attention_backward(np.zeros((1, 1, 3, 3)), cache)


def _qkv(q_shape=(1, 1, 2, 3), k_shape=(1, 1, 2, 3), v_shape=(1, 1, 2, 3), dtype=np.float64):
    return np.zeros(q_shape, dtype), np.zeros(k_shape, dtype), np.zeros(v_shape, dtype)


def test_head_dim_zero_raises():
    # The default scale 1/sqrt(d) has no value at d = 0 (it was a ZeroDivisionError).
    with pytest.raises(ValueError, match=r"q and k must have head_dim >= 1, got q \(1, 1, 2, 0\)"):
        scaled_dot_product_attention(*_qkv((1, 1, 2, 0), (1, 1, 2, 0)))


def test_no_keys_raises():
    with pytest.raises(ValueError, match=r"k and v must hold at least one key .* got k \(1, 1, 0, 3\)"):
        scaled_dot_product_attention(*_qkv(k_shape=(1, 1, 0, 3), v_shape=(1, 1, 0, 3)))


def test_no_queries_and_an_empty_batch_give_empty_outputs_like_torch():
    for shapes in (((1, 1, 0, 3), (1, 1, 2, 3), (1, 1, 2, 4)), ((0, 2, 3, 3), (0, 2, 2, 3), (0, 2, 2, 4))):
        q, k, v = (np.zeros(shape) for shape in shapes)
        out, _ = scaled_dot_product_attention(q, k, v)
        assert out.shape == tuple(F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v))).shape)


def test_scores_that_overflow_raise_instead_of_nan():
    # Finite float64 inputs of 1e200 make scores of 1e400: infinite, and the softmax gave NaN (torch does too).
    q, k, v = (np.full((1, 1, 2, 3), 1e200) for _ in range(3))
    assert torch.isnan(F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)))).all()
    with pytest.raises(ValueError, match="the scores scale · q kᵀ must be finite, got 4 that overflow float64"):
        scaled_dot_product_attention(q, k, v)
    # float32 overflows far sooner: 1e20 squared is beyond its 3.4e38.
    with pytest.raises(ValueError, match="overflow float32"):
        scaled_dot_product_attention(*(np.full((1, 1, 2, 3), 1e20, np.float32) for _ in range(3)))
    # Large but representable scores are fine: the stable softmax picks the larger key exactly.
    out, _ = scaled_dot_product_attention(
        np.full((1, 1, 1, 1), 1e150), np.array([1e150, -1e150]).reshape(1, 1, 2, 1), np.array([3.0, 5.0]).reshape(1, 1, 2, 1)
    )
    assert out.item() == 3.0


@pytest.mark.parametrize("scale, match", [(True, "scale must be a real number"), (float("nan"), "scale must be finite")])
def test_scale_must_be_a_real_number(scale, match):
    with pytest.raises(ValueError, match=match):
        scaled_dot_product_attention(*_qkv(), scale=scale)
