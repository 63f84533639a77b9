"""The fused Triton loss against the NumPy reference, the torch composition and finite differences.

On a CPU-only machine the kernels run under Triton's interpreter (tests/conftest.py sets TRITON_INTERPRET=1), which
runs programs one after another: shapes stay at most 2x16x13x13, a few programs per launch. On a GPU the same tests
run the compiled kernels. Run them alone with ``pytest -m triton``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("triton")

from tests.helpers import assert_close, numerical_gradient  # noqa: E402
from unet_from_scratch.kernels import fused_loss  # noqa: E402
from unet_from_scratch.kernels.fused_loss import combined_loss  # noqa: E402
from unet_from_scratch.nn.losses import combined_loss_torch  # noqa: E402
from unet_from_scratch.reference import losses as reference  # noqa: E402

pytestmark = pytest.mark.triton

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"

# Per dtype: (loss rtol, gradient rtol, gradient atol relative to max|expected gradient|) against float64 oracles
# fed the same (already rounded) logits, so only the kernel's own rounding is measured.
# - float32: every sum is float32 over at most 2·16·13·13 terms (relative error ~ eps·sqrt(terms) ~ 1e-6); the
#   gradient combines a few such sums, and 1 - p_t loses digits where p_t is near 1.
# - float16: the sums are still float32 (same loss tolerance); the gradient is rounded to float16 at the end
#   (half an ulp = 2**-11 ≈ 4.9e-4 relative), and small entries fall into float16's subnormal range.
# - bfloat16 (GPU only): the gradient is rounded to 8 mantissa bits (half an ulp = 2**-9 ≈ 2e-3).
TOLERANCE = {
    torch.float32: dict(loss_rtol=1e-5, grad_rtol=1e-4, grad_atol=5e-6),
    torch.float16: dict(loss_rtol=1e-5, grad_rtol=2e-3, grad_atol=1e-3),
    torch.bfloat16: dict(loss_rtol=1e-5, grad_rtol=1e-2, grad_atol=8e-3),
}
DTYPES = [
    torch.float32,
    torch.float16,
    pytest.param(
        torch.bfloat16,
        marks=pytest.mark.skipif(not CUDA, reason="bfloat16 runs on the GPU only: the interpreter works in NumPy, "
                                 "which has no bfloat16"),
    ),
]  # fmt: skip


@st.composite
def loss_cases(draw):
    """One call of the loss: shapes with size-1 and odd dimensions, optional weights, layout and parameters.

    Big arrays are filled from a drawn seed (hypothesis still replays and shrinks it). Logits in [-4, 4] keep
    p_t between ~3e-4 and 1 - 3e-4 for C = 2, where float32 is meaningful for every term.
    """
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 16))
    h, w = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return dict(
        logits=rng.uniform(-4, 4, size=(n, c, h, w)),
        target=rng.integers(0, c, size=(n, h, w)),
        pixel_weights=rng.uniform(0, 3, size=(n, h, w)) if draw(st.booleans()) else None,
        class_weights=rng.uniform(0.1, 2, size=c) if draw(st.booleans()) else None,
        alpha=draw(st.sampled_from([0.25, 1.0])),
        gamma=draw(st.sampled_from([2.0, 1.5, 0.5, 0.0])),
        smooth=draw(st.sampled_from([1.0, 0.5])),
        include_background=draw(st.booleans()),
        coefficients=draw(st.sampled_from([(0.4, 0.4, 0.2), (1.0, 0.5, 2.0)])),
        channels_last=draw(st.booleans()),
    )


def _params(case):
    return {k: case[k] for k in ("alpha", "gamma", "smooth", "include_background", "coefficients")}


def _tensors(case, dtype):
    """Torch inputs on the test device: logits in ``dtype`` (channels-last if drawn), int64 target, float32 weights."""
    logits = torch.tensor(case["logits"], dtype=dtype, device=DEVICE)
    if case["channels_last"]:
        logits = logits.to(memory_format=torch.channels_last)
    weights = [
        None if case[k] is None else torch.tensor(case[k], dtype=torch.float32, device=DEVICE)
        for k in ("pixel_weights", "class_weights")
    ]
    return logits, torch.tensor(case["target"], device=DEVICE), *weights


def _loss_and_grad(fn, logits, *args, **kwargs):
    logits = logits.detach().clone().requires_grad_(True)
    loss = fn(logits, *args, **kwargs)
    loss.backward()
    return loss.detach(), logits.grad


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _assert_grads_close(actual, expected, tol, name):
    expected = np.asarray(expected)
    assert_close(_numpy(actual) if isinstance(actual, torch.Tensor) else actual, expected, kind="grad", name=name,
                 rtol=tol["grad_rtol"], atol=tol["grad_atol"] * np.abs(expected).max())  # fmt: skip


@pytest.mark.parametrize("dtype", DTYPES)
@settings(deadline=None)
@given(case=loss_cases())
def test_fused_loss_matches_reference_and_torch(case, dtype):
    tol = TOLERANCE[dtype]
    logits, target, pixel_weights, class_weights = _tensors(case, dtype)
    loss, grad = _loss_and_grad(combined_loss, logits, target, pixel_weights, class_weights, **_params(case))
    assert loss.dtype == torch.float32 and loss.shape == ()
    layout = torch.channels_last if case["channels_last"] else torch.contiguous_format
    assert grad.dtype == dtype and grad.is_contiguous(memory_format=layout), "the gradient keeps the logits' layout"

    # The NumPy reference in float64, on the logits as the kernel saw them (rounded to dtype) and float32 weights.
    ref_loss, ref_grad = reference.combined_loss(
        _numpy(logits), case["target"], *(None if x is None else _numpy(x) for x in (pixel_weights, class_weights)),
        **_params(case),
    )  # fmt: skip
    assert_close(_numpy(loss), np.float64(ref_loss), name="loss vs reference", rtol=tol["loss_rtol"], atol=1e-6)
    _assert_grads_close(grad, ref_grad, tol, "dlogits vs reference")

    # The torch composition on the same tensors, differentiated by autograd.
    torch_loss, torch_grad = _loss_and_grad(
        combined_loss_torch, logits, target, pixel_weights, class_weights, **_params(case)
    )
    assert_close(_numpy(loss), _numpy(torch_loss), name="loss vs torch", rtol=tol["loss_rtol"], atol=1e-6)
    _assert_grads_close(grad, _numpy(torch_grad), tol, "dlogits vs torch")


def test_fused_loss_gradient_matches_finite_differences():
    """dL/dlogits against centred differences of the loss itself, in float64 through the torch composition (the
    kernel has no float64 path): an oracle that shares no gradient formula with the kernel."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, size=(2, 3, 2, 3))
    target = rng.integers(0, 3, size=(2, 2, 3))
    pixel_weights, class_weights = rng.uniform(0.5, 2, size=(2, 2, 3)), np.array([0.5, 1.0, 2.0])
    params = dict(gamma=1.5, coefficients=(1.0, 1.0, 1.0))
    t, pw, cw = (torch.from_numpy(a).to(DEVICE) for a in (target, pixel_weights, class_weights))

    def loss64(z):
        return combined_loss_torch(torch.from_numpy(z).to(DEVICE), t, pw, cw, **params).item()

    numeric = numerical_gradient(loss64, x)
    logits = torch.tensor(x, dtype=torch.float32, device=DEVICE)
    _, grad = _loss_and_grad(combined_loss, logits, t, pw.float(), cw.float(), **params)
    # float32 inputs (rounded by ~6e-8 relative) and float32 arithmetic against a float64 difference quotient.
    _assert_grads_close(grad, numeric, dict(grad_rtol=1e-4, grad_atol=1e-5), "dlogits vs finite differences")


def test_fused_loss_with_all_weights_zero_has_no_cross_entropy_term():
    """Σw = 0: the cross-entropy term and its gradient are 0 (the contract), where torch's own would be 0/0."""
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng.uniform(-2, 2, size=(1, 4, 5, 7)), dtype=torch.float32, device=DEVICE)
    target = torch.tensor(rng.integers(0, 4, size=(1, 5, 7)), device=DEVICE)
    zeros = torch.zeros(1, 5, 7, device=DEVICE)
    loss, grad = _loss_and_grad(combined_loss, logits, target, zeros)
    ref_loss, ref_grad = reference.combined_loss(_numpy(logits), _numpy(target).astype(np.int64), _numpy(zeros))
    assert_close(_numpy(loss), np.float64(ref_loss), name="loss", rtol=1e-5, atol=1e-6)
    _assert_grads_close(grad, ref_grad, TOLERANCE[torch.float32], "dlogits")
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("target_dtype", [torch.uint8, torch.int32])
def test_fused_loss_takes_any_integer_target(target_dtype):
    """Labels are loaded in their own dtype and widened in the kernel: the same loss and gradient as int64."""
    rng = np.random.default_rng(4)
    logits = torch.tensor(rng.normal(size=(1, 3, 5, 6)), dtype=torch.float32, device=DEVICE)
    target = torch.tensor(rng.integers(0, 3, size=(1, 5, 6)), device=DEVICE)
    expected, got = (_loss_and_grad(combined_loss, logits, t) for t in (target, target.to(target_dtype)))
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])


def test_fused_loss_is_deterministic():
    """Partial sums are written per program and added in a fixed order (no atomics): bitwise equal reruns."""
    rng = np.random.default_rng(3)
    logits = torch.tensor(rng.normal(size=(2, 5, 13, 11)), dtype=torch.float32, device=DEVICE)
    target = torch.tensor(rng.integers(0, 5, size=(2, 13, 11)), device=DEVICE)
    first, second = (_loss_and_grad(combined_loss, logits, target) for _ in range(2))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


# %%
# Bad input: a one-line ValueError before any kernel launches.


def _good_inputs(n=2, c=3, h=4, w=5):
    return dict(
        logits=torch.zeros(n, c, h, w, device=DEVICE),
        target=torch.zeros(n, h, w, dtype=torch.int64, device=DEVICE),
        pixel_weights=torch.ones(n, h, w, device=DEVICE),
        class_weights=torch.ones(c, device=DEVICE),
    )


def _with(**changes):
    inputs = _good_inputs()
    inputs.update(changes)
    return inputs


def _nan_at(tensor):
    tensor = tensor.clone()
    tensor.view(-1)[3] = float("nan")
    return tensor


BAD_INPUTS = {
    "logits 3-D": (_with(logits=torch.zeros(3, 4, 5, device=DEVICE)), "4-D"),
    "logits float64": (_with(logits=torch.zeros(2, 3, 4, 5, dtype=torch.float64, device=DEVICE)), "float32, float16"),
    "logits integer": (_with(logits=torch.zeros(2, 3, 4, 5, dtype=torch.int32, device=DEVICE)), "float32, float16"),
    # A batch without pixels: the mean over no pixel is 0/0 (the reference refuses it with the same words).
    "N = 0": (
        _with(
            logits=torch.zeros(0, 3, 4, 5, device=DEVICE),
            target=torch.zeros(0, 4, 5, dtype=torch.int64, device=DEVICE),
            pixel_weights=torch.ones(0, 4, 5, device=DEVICE),
        ),
        r"^logits must hold at least one pixel and one class, got shape \(0, 3, 4, 5\)$",
    ),
    "H = 0": (
        _with(
            logits=torch.zeros(2, 3, 0, 5, device=DEVICE),
            target=torch.zeros(2, 0, 5, dtype=torch.int64, device=DEVICE),
            pixel_weights=None,
        ),
        r"^logits must hold at least one pixel and one class, got shape \(2, 3, 0, 5\)$",
    ),
    "W = 0": (
        _with(
            logits=torch.zeros(2, 3, 4, 0, device=DEVICE),
            target=torch.zeros(2, 4, 0, dtype=torch.int64, device=DEVICE),
            pixel_weights=None,
        ),
        "at least one pixel",
    ),
    "17 classes": (_with(logits=torch.zeros(2, 17, 4, 5, device=DEVICE), class_weights=None), "1 to 16 classes"),
    "logits NaN": (_with(logits=_nan_at(torch.zeros(2, 3, 4, 5, device=DEVICE))), "finite"),
    "logits inf": (_with(logits=torch.full((2, 3, 4, 5), float("inf"), device=DEVICE)), "finite"),
    "target float": (_with(target=torch.zeros(2, 4, 5, device=DEVICE)), "integer"),
    "target shape": (_with(target=torch.zeros(2, 5, 4, dtype=torch.int64, device=DEVICE)), "(N, H, W)"),
    "target negative": (_with(target=torch.full((2, 4, 5), -1, device=DEVICE)), r"\[0, 3\)"),
    "target = C": (_with(target=torch.full((2, 4, 5), 3, device=DEVICE)), r"\[0, 3\)"),
    "pixel_weights shape": (_with(pixel_weights=torch.ones(2, 4, device=DEVICE)), "pixel_weights"),
    "pixel_weights negative": (_with(pixel_weights=-torch.ones(2, 4, 5, device=DEVICE)), "pixel_weights"),
    "pixel_weights NaN": (_with(pixel_weights=_nan_at(torch.ones(2, 4, 5, device=DEVICE))), "pixel_weights"),
    "class_weights shape": (_with(class_weights=torch.ones(4, device=DEVICE)), "class_weights"),
    "class_weights integer": (_with(class_weights=torch.ones(3, dtype=torch.int64, device=DEVICE)), "class_weights"),
}  # fmt: skip


@pytest.fixture
def no_launch(monkeypatch):
    """Replace the kernels by objects that fail the test if anything launches them."""

    class Unlaunchable:
        def __getitem__(self, grid):
            raise AssertionError("a kernel was launched before the inputs were checked")

    for name in ("_loss_partials", "_loss_combine", "_loss_backward"):
        monkeypatch.setattr(fused_loss, name, Unlaunchable())


@pytest.mark.parametrize("inputs, message", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_inputs_raise_before_any_launch(no_launch, inputs, message):
    with pytest.raises(ValueError, match=message):
        combined_loss(**inputs)


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(gamma=-1.0), "gamma"),
        (dict(smooth=-0.5), "smooth"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(alpha=True), "alpha"),
        (dict(coefficients=(0.5, 0.5)), "coefficients"),
        (dict(coefficients=(0.5, 0.5, float("inf"))), "coefficients"),
    ],
)
def test_bad_parameters_raise_before_any_launch(no_launch, params, message):
    with pytest.raises(ValueError, match=message):
        combined_loss(**_good_inputs(), **params)


@pytest.mark.skipif(CUDA, reason="CPU tensors without the interpreter: only meaningful where the tests use the CPU")
def test_cpu_tensors_without_the_interpreter_raise(no_launch, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="CUDA tensors"):
        combined_loss(**_good_inputs())
