"""flash_attention against the NumPy reference and torch's scaled_dot_product_attention: values and dq, dk, dv.

On a CPU-only machine the kernels run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), which
executes programs one after another: shapes stay tiny (seq ≤ 40, 16x16 tiles, a few dozen programs per launch).
On a GPU the same tests run compiled, with autotuned tiles.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.helpers import assert_close, seeded_arrays
from tests.torch_attention import naive_attention
from unet_from_scratch.kernels import triton_runs_on
from unet_from_scratch.reference.attention import (
    scaled_dot_product_attention,
    scaled_dot_product_attention_backward,
)

pytest.importorskip("triton")  # Linux-only

from unet_from_scratch.kernels import attention  # noqa: E402
from unet_from_scratch.kernels.attention import flash_attention  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        not triton_runs_on(torch.empty(0, device=DEVICE)),
        reason="Triton runs neither on a GPU nor under TRITON_INTERPRET=1",
    ),
]

# Relative to max|expected| (see tests/helpers.py), per dtype, for outputs and gradients alike:
# - float32: every tl.dot is IEEE float32 (no TF32), so only summation order differs from the float64 reference:
#   errors ~1e-6 seen; the project's float32 table applies.
# - float16: the output is rounded to float16 (half an ulp, 2**-11 ≈ 4.9e-4 relative) and P and dS are rounded to
#   float16 before their tensor-core products: ~6e-4 seen against float64 and against torch in float16.
# - bfloat16: the same with a 7-bit mantissa, 16x coarser (2**-8 ≈ 3.9e-3 half an ulp).
TOLERANCES = {
    torch.float32: dict(forward=dict(rtol=1e-4, atol=1e-5), grad=dict(rtol=1e-3, atol=5e-5)),
    torch.float16: dict(forward=dict(rtol=2e-3, atol=2e-3), grad=dict(rtol=3e-3, atol=3e-3)),
    torch.bfloat16: dict(forward=dict(rtol=1.6e-2, atol=1.6e-2), grad=dict(rtol=2.4e-2, atol=2.4e-2)),
}


def run(fn, arrays, dtype, scale):
    """``fn(q, k, v, scale)`` on ``DEVICE`` in ``dtype``, backpropagating ``dout``: (out, [dq, dk, dv]) as float64."""
    q, k, v, dout = (torch.tensor(a, dtype=dtype, device=DEVICE) for a in arrays)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, scale)
    out.backward(dout)
    as_numpy = lambda t: t.detach().double().cpu().numpy()  # noqa: E731
    return as_numpy(out), [as_numpy(t.grad) for t in (q, k, v)]


def reference(arrays, dtype, scale):
    """The NumPy reference in float64 on exactly the values the kernel sees (rounded to ``dtype`` first)."""
    q, k, v, dout = (torch.tensor(a, dtype=dtype).double().numpy() for a in arrays)
    out, cache = scaled_dot_product_attention(q, k, v, scale)
    return out, list(scaled_dot_product_attention_backward(dout, cache))


def assert_all_close(actual, expected, dtype, oracle):
    tol = TOLERANCES[dtype]
    assert_close(actual[0], expected[0], dtype=np.float64, name=f"out vs {oracle}", **tol["forward"])
    for name, a, e in zip(("dq", "dk", "dv"), actual[1], expected[1]):
        assert_close(a, e, dtype=np.float64, name=f"{name} vs {oracle}", **tol["grad"])


@st.composite
def problems(draw, dtypes=(torch.float32, torch.float16), max_seq=40):
    """(batch, heads, seq, head_dim) with size-1 dims, odd and non-power-of-two seq, head_dim 16, 24 (padded to
    32 inside the kernel) and 64; q, k, v, dout in [-2, 2]; a dtype and a scale (None = 1/√head_dim)."""
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 2)),
        draw(st.integers(1, max_seq)),
        draw(st.sampled_from([16, 24, 64])),
    )
    arrays = [draw(seeded_arrays(shape, bound=2.0)) for _ in range(4)]
    return arrays, draw(st.sampled_from(dtypes)), draw(st.one_of(st.none(), st.floats(0.05, 0.5)))


def _fixed(shape, dtype, scale=None, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-2, 2, size=shape) for _ in range(4)], dtype, scale


@given(problems())
@example(_fixed((1, 1, 1, 16), torch.float32))  # one query, one key: the weight is exactly 1
@example(_fixed((1, 2, 40, 24), torch.float16, scale=0.3))  # three tiles, the last one half masked
@example(_fixed((1, 1, 5, 128), torch.float32))  # the largest head_dim
@example(([np.random.default_rng(s).uniform(-2, 2, size=(1, 1, 5, 64)) for s in (0, 0, 1, 1)], torch.float16, None))
# q = k, dout = v at head_dim 64: float16's largest gradient error among the draws seen
@settings(deadline=None, max_examples=20)  # the interpreter: 0.2-1 s per example on 2 shared cores
def test_matches_reference_and_torch(problem):
    arrays, dtype, scale = problem
    flash = run(lambda q, k, v, s: flash_attention(q, k, v, scale=s), arrays, dtype, scale)
    sdpa = run(lambda q, k, v, s: F.scaled_dot_product_attention(q, k, v, scale=s), arrays, dtype, scale)
    expected = reference(arrays, dtype, scale)
    assert_all_close(flash, sdpa, dtype, "torch SDPA")
    # Against the float64 reference a half-precision gradient is only as good as its dtype allows: the backward's
    # row term delta = Σ_d dout·out reads the output rounded to float16, an error that grows with head_dim and
    # |dout|·|out| (3.7e-3 in dq for q = k at head_dim 64, where torch's own SDPA is off by exactly as much). So in
    # float16 each gradient may be off by twice what SDPA's is, where that exceeds the table's tolerance.
    if dtype == torch.float16:
        for name, a, e, t in zip(("dq", "dk", "dv"), flash[1], expected[1], sdpa[1]):
            allowed = max(TOLERANCES[dtype]["grad"]["atol"], 2 * float(np.max(np.abs(t - e))))
            assert_close(a, e, dtype=np.float64, name=f"{name} vs NumPy reference", rtol=3e-3, atol=allowed)
        assert_close(flash[0], expected[0], dtype=np.float64, name="out vs NumPy reference",
                     **TOLERANCES[dtype]["forward"])  # fmt: skip
    else:
        assert_all_close(flash, expected, dtype, "NumPy reference")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="tl.dot in bfloat16 is wrong under Triton's interpreter")
@given(problems(dtypes=(torch.bfloat16,)))
@settings(deadline=None, max_examples=20)  # each new seq length is autotuned once on the GPU
def test_bfloat16_matches_reference_on_gpu(problem):
    arrays, dtype, scale = problem
    flash = run(lambda q, k, v, s: flash_attention(q, k, v, scale=s), arrays, dtype, scale)
    assert_all_close(flash, reference(arrays, dtype, scale), dtype, "NumPy reference")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="sizes that exercise the autotuned GPU tiles")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 3, 1000, 128), (1, 2, 4097, 64), (3, 1, 257, 40)])
def test_large_shapes_match_reference_on_gpu(shape, dtype):
    arrays = _fixed(shape, dtype)[0]
    flash = run(lambda q, k, v, s: flash_attention(q, k, v, scale=s), arrays, dtype, None)
    assert_all_close(flash, reference(arrays, dtype, None), dtype, "NumPy reference")


def test_the_benchmarks_call_matches_the_reference_and_the_naive_baseline():
    # benchmarks/test_attention.py times flash_attention(q, k, v), default scale, on the tokens of a square map,
    # against naive_attention: the kernel must compute there what the reference and the baseline compute.
    arrays, dtype, _ = _fixed((1, 2, 5 * 5, 64), torch.float32, seed=3)
    flash = run(lambda q, k, v, s: flash_attention(q, k, v), arrays, dtype, None)
    assert_all_close(flash, reference(arrays, dtype, 64**-0.5), dtype, "NumPy reference, scale 1/8")
    assert_all_close(flash, run(naive_attention, arrays, dtype, None), dtype, "naive torch baseline")


# The padded key rows of dK and dV overflow here and are discarded; NumPy reports it under the interpreter.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp2", "ignore:invalid value encountered in matmul")
def test_uniformly_very_negative_scores():
    # Softmax ignores a shift of all scores; here all are ≈ -100 (≈ -148 in base 2), so any exp2(-lse) that
    # escaped a mask would overflow float32 (max ≈ 2**128) and turn a gradient into NaN. seq 20: 12 padded keys.
    rng = np.random.default_rng(0)
    shape = (1, 1, 20, 16)
    q = 2.0 + rng.uniform(-0.1, 0.1, size=shape)
    k = -2.0 + rng.uniform(-0.1, 0.1, size=shape)
    arrays = [q, k, rng.uniform(-2, 2, size=shape), rng.uniform(-2, 2, size=shape)]
    flash = run(lambda q, k, v, s: flash_attention(q, k, v, scale=s), arrays, torch.float32, 1.6)
    expected = reference(arrays, torch.float32, 1.6)
    # Scores of magnitude 100 carry float32 rounding of ~1e-5 each, which the softmax passes on to the weights
    # as relative errors of that size: 10x the float32 table.
    assert_close(flash[0], expected[0], dtype=np.float64, name="out", rtol=1e-3, atol=1e-4)
    for name, a, e in zip(("dq", "dk", "dv"), flash[1], expected[1]):
        assert_close(a, e, dtype=np.float64, name=name, rtol=1e-3, atol=1e-4)


def test_strided_inputs():
    # q, k, v as views with the heads and seq axes swapped in memory (as a model's reshapes produce them).
    arrays, dtype, scale = _fixed((1, 17, 2, 16), torch.float32)
    swapped = [a.transpose(0, 2, 1, 3) for a in arrays]  # (1, 2, 17, 16) values
    flash = run(
        lambda q, k, v, s: flash_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), s).transpose(1, 2),
        arrays,
        dtype,
        scale,
    )
    expected = reference(swapped, dtype, scale)
    untranspose = lambda a: a.transpose(0, 2, 1, 3)  # noqa: E731
    assert_all_close(flash, (untranspose(expected[0]), [untranspose(g) for g in expected[1]]), dtype, "reference")


def test_saves_nothing_of_size_seq_squared():
    batch, heads, seq, head_dim = 1, 1, 40, 16
    q, k, v = (torch.randn(batch, heads, seq, head_dim, device=DEVICE, requires_grad=True) for _ in range(3))
    out = flash_attention(q, k, v)
    saved = out.grad_fn.saved_tensors
    assert max(t.numel() for t in saved) == batch * heads * seq * head_dim  # q, k, v, out; the lse is smaller
    assert sum(t.numel() for t in saved) == 4 * q.numel() + batch * heads * seq


def _qkv(shape=(1, 1, 4, 16), dtype=torch.float32):
    return [torch.randn(shape, dtype=dtype, device=DEVICE) for _ in range(3)]


def _with(index, value):
    q, k, v = _qkv()
    out = [q, k, v]
    out[index] = value
    return out


BAD = {
    "not a tensor": ([np.zeros((1, 1, 4, 16), np.float32), *_qkv()[1:]], {}, "torch.Tensor"),
    "3-D": (_with(0, torch.zeros(1, 4, 16, device=DEVICE)), {}, "4-D"),
    "float64": ([t.double() for t in _qkv()], {}, "float32, float16 or bfloat16"),
    "int": (_with(2, torch.zeros(1, 1, 4, 16, dtype=torch.int32, device=DEVICE)), {}, "float32, float16 or bfloat16"),
    "mixed dtypes": (_with(1, torch.zeros(1, 1, 4, 16, dtype=torch.float16, device=DEVICE)), {}, "same dtype"),
    "mismatched seq": (_with(1, torch.zeros(1, 1, 5, 16, device=DEVICE)), {}, "same shape"),
    "mismatched heads": (_with(2, torch.zeros(1, 2, 4, 16, device=DEVICE)), {}, "same shape"),
    "empty": (_qkv((1, 1, 0, 16)), {}, "non-empty"),
    "head_dim 8": (_qkv((1, 1, 4, 8)), {}, r"head_dim must be in \[16, 128\]"),
    "head_dim 256": (_qkv((1, 1, 4, 256)), {}, r"head_dim must be in \[16, 128\]"),
    "nan": (_with(1, torch.full((1, 1, 4, 16), float("nan"), device=DEVICE)), {}, "finite"),
    "inf": (_with(2, torch.full((1, 1, 4, 16), float("inf"), device=DEVICE)), {}, "finite"),
    "-inf": (_with(0, torch.full((1, 1, 4, 16), float("-inf"), device=DEVICE)), {}, "finite"),
    "scale nan": (_qkv(), dict(scale=float("nan")), "scale"),
    "scale tensor": (_qkv(), dict(scale=torch.tensor(0.5)), "scale"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_inputs_raise_before_any_launch(case, monkeypatch):
    (q, k, v), kwargs, match = case

    def launch(*args):
        raise AssertionError("a kernel was launched")

    monkeypatch.setattr(attention, "_forward", launch)
    with pytest.raises(ValueError, match=match):
        flash_attention(q, k, v, **kwargs)


def test_cpu_tensors_without_the_interpreter_raise(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        flash_attention(*(torch.zeros(1, 1, 4, 16) for _ in range(3)))
