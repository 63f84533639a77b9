"""The torch loss path (``combined_loss_torch``, ``CombinedLoss``) against the NumPy reference and finite differences,
and the backend dispatch of ``CombinedLoss``.

The fused Triton kernel has its own tests (tests/kernels/test_fused_loss.py); here it appears only where the
module hands it the work.
"""

from __future__ import annotations

import re
import types

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_close, assert_matches_finite_differences, assert_matches_torch, float_dtypes
from unet_from_scratch.nn import losses
from unet_from_scratch.nn.losses import CombinedLoss, combined_loss_torch
from unet_from_scratch.reference import losses as reference


@st.composite
def loss_cases(draw, dtype=None):
    """Inputs of one call as NumPy arrays: N 1-2, C 1-8, H and W 1-9, optional weights (zeros allowed), parameters."""
    dtype = draw(float_dtypes) if dtype is None else dtype
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 8))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return dict(
        logits=rng.uniform(-4, 4, size=(n, c, h, w)).astype(dtype),
        target=rng.integers(0, c, size=(n, h, w)),
        pixel_weights=rng.uniform(0, 3, size=(n, h, w)).astype(dtype) if draw(st.booleans()) else None,
        class_weights=rng.uniform(0, 2, size=c).astype(dtype) if draw(st.booleans()) else None,
        params=dict(
            alpha=draw(st.sampled_from([0.25, 1.0])),
            gamma=draw(st.sampled_from([2.0, 1.5, 0.5, 0.0])),
            smooth=draw(st.sampled_from([1.0, 0.5])),
            include_background=draw(st.booleans()),
            coefficients=draw(st.sampled_from([(0.4, 0.4, 0.2), (1.0, 0.5, 2.0)])),
        ),
    )


def _reference(params):
    """The NumPy reference in the ``assert_matches_torch`` form: (loss, [dlogits])."""

    def ours(logits, target, pixel_weights, class_weights, dout):
        loss, dlogits = reference.combined_loss(logits, target, pixel_weights, class_weights, **params)
        return loss, [dlogits]

    return ours


@settings(deadline=None)
@given(case=loss_cases())
def test_combined_loss_torch_matches_reference(case):
    """Value and autograd gradient against the hand-derived NumPy gradient, float32 and float64 (the helpers'
    per-dtype tolerances: the two sum the same terms in different orders)."""
    assert_matches_torch(
        _reference(case["params"]),
        lambda *tensors: combined_loss_torch(*tensors, **case["params"]),
        [case["logits"], case["target"], case["pixel_weights"], case["class_weights"]],
        wrt=[0],
        names=["dlogits"],
    )


@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_combined_loss_torch_gradient_matches_finite_differences(gamma):
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, size=(2, 3, 2, 3))
    target = torch.from_numpy(rng.integers(0, 3, size=(2, 2, 3)))
    pixel_weights = torch.from_numpy(rng.uniform(0.5, 2, size=(2, 2, 3)))
    class_weights = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    params = dict(gamma=gamma, coefficients=(1.0, 1.0, 1.0))
    logits = torch.from_numpy(x).requires_grad_(True)
    combined_loss_torch(logits, target, pixel_weights, class_weights, **params).backward()
    assert_matches_finite_differences(
        logits.grad.numpy(),
        lambda z: combined_loss_torch(torch.from_numpy(z), target, pixel_weights, class_weights, **params).numpy(),
        x,
        name="dlogits",
    )


@pytest.mark.parametrize(
    "dtype, grad_rtol",
    [
        (torch.float16, 2e-3),  # the gradient is rounded to float16 at the end: half an ulp is 2**-11
        (torch.bfloat16, 1e-2),  # ... and to bfloat16's 8 mantissa bits: half an ulp is 2**-9
    ],
)
def test_combined_loss_torch_on_half_precision_logits_computes_in_float32(dtype, grad_rtol):
    rng = np.random.default_rng(2)
    logits = torch.tensor(rng.uniform(-4, 4, size=(2, 5, 6, 7)), dtype=dtype, requires_grad=True)
    target = rng.integers(0, 5, size=(2, 6, 7))
    loss = combined_loss_torch(logits, torch.from_numpy(target))
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == dtype
    # The reference in float64 on the already rounded logits: the loss differs only by float32 summation.
    ref_loss, ref_grad = reference.combined_loss(logits.detach().double().numpy(), target)
    assert_close(loss.detach().numpy(), np.float32(ref_loss), name="loss", rtol=1e-5, atol=1e-6)
    assert_close(logits.grad.double().numpy(), ref_grad, kind="grad", name="dlogits",
                 rtol=grad_rtol, atol=grad_rtol * np.abs(ref_grad).max())  # fmt: skip


def test_combined_loss_torch_with_all_weights_zero_drops_the_cross_entropy_term():
    """Σw = 0: the contract's 0 (torch's own weighted cross-entropy would be 0/0 = NaN)."""
    rng = np.random.default_rng(3)
    logits = rng.uniform(-2, 2, size=(1, 3, 4, 5))
    target = rng.integers(0, 3, size=(1, 4, 5))
    params = dict(pixel_weights=np.zeros((1, 4, 5)))
    assert_matches_torch(
        lambda z, t, pw, dout: (lambda r: (r[0], [r[1]]))(reference.combined_loss(z, t, pw)),
        combined_loss_torch,
        [logits, target, params["pixel_weights"]],
        wrt=[0],
    )


# %%
# The module


def test_combined_loss_module_matches_reference():
    rng = np.random.default_rng(4)
    logits = rng.uniform(-4, 4, size=(2, 4, 5, 6))
    target = rng.integers(0, 4, size=(2, 5, 6))
    pixel_weights = rng.uniform(0.5, 3, size=(2, 5, 6))
    class_weights = np.array([0.2, 1.0, 1.5, 3.0])
    params = dict(alpha=0.5, gamma=1.5, smooth=0.5, include_background=True, coefficients=(0.3, 0.3, 0.4))
    module = CombinedLoss(torch.from_numpy(class_weights), **params, backend="torch").double()
    assert_matches_torch(
        lambda z, t, pw, dout: (lambda r: (r[0], [r[1]]))(reference.combined_loss(z, t, pw, class_weights, **params)),
        module,
        [logits, target, pixel_weights],
        wrt=[0],
    )


def test_combined_loss_module_keeps_class_weights_as_a_buffer():
    module = CombinedLoss(torch.tensor([0.5, 2.0]))
    assert torch.equal(module.state_dict()["class_weights"], torch.tensor([0.5, 2.0]))
    assert "class_weights" not in dict(module.named_parameters())
    assert module.double().class_weights.dtype == torch.float64


def test_combined_loss_module_trains_a_layer():
    """forward and backward through a 1x1 convolution: the loss falls after a few SGD steps on a fixed batch."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    target = (x[:, 0] > 0).long()
    layer = torch.nn.Conv2d(3, 2, kernel_size=1)
    loss_fn = CombinedLoss(torch.tensor([1.0, 2.0]))
    losses_seen = []
    for _ in range(5):
        layer.zero_grad()
        loss = loss_fn(layer(x), target, torch.ones(2, 8, 8))
        loss.backward()
        with torch.no_grad():  # plain SGD by hand: importing torch.optim costs seconds
            for parameter in layer.parameters():
                parameter -= 0.5 * parameter.grad
        losses_seen.append(loss.item())
    assert all(g is not None and torch.isfinite(g).all() for g in (layer.weight.grad, layer.bias.grad))
    assert losses_seen[-1] < losses_seen[0]


# %%
# Backend dispatch


def _fake_cuda_logits(dtype=torch.float32, classes=2):
    """Stands in for CUDA logits (N, C, H, W) on a machine without a GPU: only what the dispatch reads."""
    return types.SimpleNamespace(is_cuda=True, dtype=dtype, shape=(1, classes, 3, 3), dim=lambda: 4)


@pytest.mark.parametrize(
    "backend, has_triton, on_cuda, expected",
    [
        ("auto", True, True, True),  # the GPU path
        ("auto", True, False, False),  # CPU tensors: never the slow interpreter by default
        ("auto", False, True, False),  # no triton installed (macOS, Windows): torch even on CUDA
        ("torch", True, True, False),
        ("triton", True, False, True),
    ],
)
def test_backend_dispatch(monkeypatch, backend, has_triton, on_cuda, expected):
    monkeypatch.setattr(losses, "HAS_TRITON", has_triton)
    logits = _fake_cuda_logits() if on_cuda else torch.zeros(1, 2, 3, 3)
    assert CombinedLoss(backend=backend).uses_triton(logits) is expected


@pytest.mark.parametrize("dtype, classes", [(torch.float64, 2), (torch.float32, 17)])
def test_auto_falls_back_to_torch_where_the_kernel_cannot_run(monkeypatch, dtype, classes):
    # The kernel takes float32/16/bf16 logits of at most 16 classes; "auto" must not choose it and then raise.
    monkeypatch.setattr(losses, "HAS_TRITON", True)
    assert CombinedLoss().uses_triton(_fake_cuda_logits(dtype, classes)) is False
    assert CombinedLoss().uses_triton(_fake_cuda_logits(torch.bfloat16, 16)) is True


def test_auto_backend_on_cpu_runs_the_torch_path(monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return combined_loss_torch(*args, **kwargs)

    monkeypatch.setattr(losses, "combined_loss_torch", spy)
    logits, target = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 4, 4))
    loss = CombinedLoss()(logits, target)
    assert len(calls) == 1 and torch.equal(loss, combined_loss_torch(logits, target))


@pytest.mark.triton
def test_triton_backend_matches_torch_backend():
    """The module's two paths agree (the kernel runs under the interpreter on CPU, compiled on CUDA)."""
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rng = np.random.default_rng(5)
    logits = torch.tensor(rng.normal(size=(2, 3, 7, 5)), dtype=torch.float32, device=device)
    target = torch.tensor(rng.integers(0, 3, size=(2, 7, 5)), device=device)
    pixel_weights = torch.tensor(rng.uniform(0, 2, size=(2, 7, 5)), dtype=torch.float32, device=device)
    results = []
    for backend in ("triton", "torch"):
        module = CombinedLoss(torch.tensor([0.5, 1.0, 2.0]), gamma=1.5, backend=backend).to(device)
        z = logits.clone().requires_grad_(True)
        loss = module(z, target, pixel_weights)
        loss.backward()
        results.append((loss.detach().cpu().numpy(), z.grad.cpu().numpy()))
    (loss, grad), (torch_loss, torch_grad) = results
    assert_close(loss, torch_loss, name="loss")
    assert_close(grad, torch_grad, kind="grad", name="dlogits", atol=5e-6 * np.abs(torch_grad).max())


def test_unknown_backend_raises():
    with pytest.raises(ValueError, match="backend"):
        CombinedLoss(backend="cuda")


@pytest.mark.parametrize(
    "logits, target, message",
    [
        (torch.zeros(3, 4, 5), torch.zeros(3, 4, 5, dtype=torch.int64), "4-D"),
        (torch.zeros(2, 3, 4, 5), torch.zeros(2, 4, 5), "integer"),
        (torch.zeros(2, 3, 4, 5), torch.zeros(2, 4, 4, dtype=torch.int64), r"\(N, H, W\)"),
        (torch.zeros(2, 3, 4, 5), torch.full((2, 4, 5), 3), r"\[0, 3\)"),
        (torch.full((2, 3, 4, 5), float("nan")), torch.zeros(2, 4, 5, dtype=torch.int64), "finite"),
    ],
)
def test_bad_inputs_raise(logits, target, message):
    with pytest.raises(ValueError, match=message):
        CombinedLoss(backend="torch")(logits, target)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pixel_weights=-torch.ones(2, 4, 5)), "pixel_weights"),
        (dict(pixel_weights=torch.ones(2, 5, 4)), "pixel_weights"),
        (dict(class_weights=torch.ones(4)), "class_weights"),
        (dict(gamma=-2.0), "gamma"),
        (dict(coefficients=(1.0, 1.0)), "coefficients"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        combined_loss_torch(torch.zeros(2, 3, 4, 5), torch.zeros(2, 4, 5, dtype=torch.int64), **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(gamma=-1), "gamma must be a finite number >= 0, got -1"),
        (dict(gamma=float("inf")), "gamma must be a finite number >= 0, got inf"),
        (dict(smooth=-0.5), "smooth must be a finite number >= 0, got -0.5"),
        (dict(alpha=float("nan")), "alpha must be a finite number, got nan"),
        (dict(alpha=True), "alpha must be a finite number, got True"),
        (dict(alpha="0.25"), "alpha must be a finite number, got '0.25'"),
        (dict(coefficients=(1.0, 1.0)), "coefficients must be three finite numbers"),
        (dict(coefficients=(1.0, 1.0, float("nan"))), "coefficients must be three finite numbers"),
        (dict(coefficients=0.5), "coefficients must be three finite numbers"),
    ],
)
def test_bad_parameters_raise_at_construction_with_the_forwards_message(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)) as at_construction:
        CombinedLoss(**kwargs)
    # The same check, word for word, as the functional form runs at every call.
    with pytest.raises(ValueError) as at_call:
        combined_loss_torch(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.int64), **kwargs)
    assert str(at_construction.value) == str(at_call.value)


@pytest.mark.parametrize("class_weights", [[[1.0, 2.0]], [1.0, -1.0], [1.0, float("nan")], "heavy"])
def test_bad_class_weights_raise_at_construction(class_weights):
    with pytest.raises(ValueError, match="^class_weights must be a 1-D array of finite numbers >= 0"):
        CombinedLoss(class_weights)


def test_numpy_parameters_are_accepted():
    module = CombinedLoss(np.array([1.0, 2.0]), alpha=np.float32(0.5), gamma=np.int64(1), coefficients=np.ones(3))
    logits, target = torch.randn(1, 2, 4, 4), torch.randint(0, 2, (1, 4, 4))
    expected = combined_loss_torch(logits, target, class_weights=torch.tensor([1.0, 2.0]), alpha=0.5, gamma=1.0,
                                   coefficients=(1.0, 1.0, 1.0))  # fmt: skip
    torch.testing.assert_close(module(logits, target), expected)


@pytest.mark.parametrize("shape", [(0, 3, 4, 5), (2, 3, 0, 5), (2, 3, 4, 0), (2, 0, 4, 5)])
def test_a_batch_without_pixels_or_classes_is_refused(shape):
    # The mean over no pixel is 0/0: NaN, were it not refused (the reference refuses it with the same words).
    n, c, h, w = shape
    logits, target = torch.zeros(shape), torch.zeros(n, h, w, dtype=torch.int64)
    message = re.escape(f"logits must hold at least one pixel and one class, got shape {shape}")
    with pytest.raises(ValueError, match="^" + message):
        combined_loss_torch(logits, target)
    with pytest.raises(ValueError, match="^" + message):
        CombinedLoss(backend="torch")(logits, target, torch.ones(n, h, w))
    with pytest.raises(ValueError, match=message):
        reference.combined_loss(logits.numpy(), target.numpy())


def test_the_loss_options_are_stated_once():
    from unet_from_scratch.kernels.loss_checks import LossOptions
    from unet_from_scratch.training.config import LossConfig

    assert CombinedLoss().options == LossOptions() == LossOptions(0.25, 2.0, 1.0, False, (0.4, 0.4, 0.2))
    config = LossConfig()
    assert (config.alpha, config.gamma, config.smooth, config.include_background) == (
        LossOptions.alpha, LossOptions.gamma, LossOptions.smooth, LossOptions.include_background,
    )  # fmt: skip
    options = LossOptions(alpha=np.float32(0.5), gamma=np.int64(1), coefficients=np.ones(3))
    assert type(options.alpha) is float and options.coefficients == (1.0, 1.0, 1.0)  # plain values
    with pytest.raises(TypeError, match="unexpected keyword argument 'gama'"):
        combined_loss_torch(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.int64), gama=1.0)
