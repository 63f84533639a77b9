"""The NumPy losses against torch on the CPU, forward + backward to the logits.

N=8, C=2 and C=8 (one channel for the binary losses), 256x256, float32, targets int64; cross-entropy and the
combined loss with a weight map and class weights. torch runs with one thread, as NumPy's element-wise operations
do. The torch side is autograd on the torch statements of tests/torch_losses.py (the test oracles), and torch's own
fused functions where there is one (F.cross_entropy per pixel, weighted; F.binary_cross_entropy_with_logits).

    pytest benchmarks/test_losses.py --benchmark-group-by=group --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests import torch_losses
from unet_from_scratch.reference import losses

FULL_SIZE, SMOKE_SIZE = (8, 256, 256), (1, 16, 16)  # (N, H, W); the smoke size keeps CI's single pass quick

# name -> (NumPy loss, torch statement, extra arguments: "weights" for the weight map and class weights, "binary"
# for one-channel logits).
LOSSES = {
    "cross_entropy": (losses.cross_entropy, torch_losses.torch_cross_entropy, "weights"),
    "focal_loss": (losses.focal_loss, torch_losses.torch_focal_loss, ""),
    "dice_loss": (losses.dice_loss, torch_losses.torch_dice_loss, ""),
    "combined_loss": (losses.combined_loss, torch_losses.torch_combined_loss, "weights"),
    "bce_with_logits": (losses.bce_with_logits, torch_losses.torch_bce_with_logits, "binary"),
    "sigmoid_focal_loss": (losses.sigmoid_focal_loss, torch_losses.torch_sigmoid_focal_loss, "binary"),
}


def _native_weighted_cross_entropy(x, t, pixel_weights, class_weights):
    """F.cross_entropy per pixel (torch's fused log-softmax + NLL), weighted by the weight map and class weights."""
    weight = pixel_weights * class_weights[t]
    return (F.cross_entropy(x, t, reduction="none") * weight).sum() / weight.sum()


# torch's own functions, where they exist: the same value as the statement, with native kernels.
TORCH_NATIVE = {
    "cross_entropy": _native_weighted_cross_entropy,
    "bce_with_logits": lambda x, t: F.binary_cross_entropy_with_logits(x[:, 0], t.to(x.dtype)),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _inputs(rng, name, classes, smoke):
    """NumPy inputs of loss ``name``: logits, target and, for the weighted losses, pixel and class weights."""
    n, h, w = SMOKE_SIZE if smoke else FULL_SIZE
    binary = LOSSES[name][2] == "binary"
    logits = rng.standard_normal((n, 1 if binary else classes, h, w)).astype(np.float32)
    target = rng.integers(0, 2 if binary else classes, size=(n, h, w))
    if LOSSES[name][2] != "weights":
        return [logits, target]
    pixel_weights = rng.uniform(1.0, 10.0, size=(n, h, w)).astype(np.float32)
    class_weights = np.linspace(0.5, 2.0, classes, dtype=np.float32)
    return [logits, target, pixel_weights, class_weights]


def _torch_step(fn, inputs):
    """A function that runs fn forward and backward to the logits on torch copies of ``inputs``."""
    logits, *rest = (torch.from_numpy(a) for a in inputs)
    logits.requires_grad_(True)

    def step():
        (grad,) = torch.autograd.grad(fn(logits, *rest), logits)
        return grad

    return step


def _group(name, classes, smoke):
    n, h, w = SMOKE_SIZE if smoke else FULL_SIZE
    channels = 1 if LOSSES[name][2] == "binary" else classes
    return f"{name} fwd+bwd cpu N={n} C={channels} {h}x{w} float32"


CASES = [(name, classes) for name in LOSSES for classes in ((2,) if LOSSES[name][2] == "binary" else (2, 8))]


@pytest.mark.parametrize("name, classes", CASES)
def test_numpy(benchmark, rng, smoke, name, classes):
    inputs = _inputs(rng, name, classes, smoke)
    benchmark.group = _group(name, classes, smoke)
    loss, dlogits = benchmark(LOSSES[name][0], *inputs)
    assert np.isfinite(loss) and dlogits.shape == inputs[0].shape and dlogits.dtype == np.float32


@pytest.mark.parametrize("name, classes", CASES)
def test_torch_statement(benchmark, rng, smoke, name, classes):
    inputs = _inputs(rng, name, classes, smoke)
    benchmark.group = _group(name, classes, smoke)
    grad = benchmark(_torch_step(LOSSES[name][1], inputs))
    np.testing.assert_allclose(grad.numpy(), LOSSES[name][0](*inputs)[1], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("name, classes", [case for case in CASES if case[0] in TORCH_NATIVE])
def test_torch_native(benchmark, rng, smoke, name, classes):
    inputs = _inputs(rng, name, classes, smoke)
    benchmark.group = _group(name, classes, smoke)
    grad = benchmark(_torch_step(TORCH_NATIVE[name], inputs))
    np.testing.assert_allclose(grad.numpy(), LOSSES[name][0](*inputs)[1], rtol=1e-3, atol=1e-6)
