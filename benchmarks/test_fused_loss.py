"""The combined segmentation loss, forward+backward: the fused Triton kernel against torch, eager and compiled.

GPU groups (skipped without CUDA): N=16, C=2 and C=8, 512x512, float32 and bfloat16 logits, int64 targets, a
float32 weight map and class weights (the U-Net paper's setting). Each test times one forward and the backward to
the logits, synchronised. ``extra_info`` records the bytes the step must move at the least (the fused kernel's
traffic: logits, targets and weight map read twice, the gradient written once), the bandwidth that achieves at
the median time and its fraction of the GPU's peak (H100 SXM: 3.35 TB/s), so the three implementations are
compared on the same compulsory bytes. All run with ``validate=False`` (the value checks are a separate read of
the inputs and a host synchronisation, and ``torch.compile`` cannot trace them); "fused, checked" measures the
default, checked call.

CPU group: the eager torch composition against the NumPy reference at N=4, C=2, 128x128, float32.

    pytest benchmarks/test_fused_loss.py --benchmark-group-by=group --benchmark-columns=min,median,max,rounds
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from unet_from_scratch.nn.losses import combined_loss_torch
from unet_from_scratch.reference.losses import combined_loss as reference_combined_loss

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU benchmark: needs CUDA")

# Peak DRAM bandwidth by device name, for the fraction reported; other GPUs report bytes/s alone.
PEAK_BYTES_PER_S = {"H100 80GB HBM3": 3.35e12, "H100 SXM": 3.35e12, "H200": 4.8e12, "H100 PCIe": 2.0e12}


def _fused(*args, **kwargs):
    from unet_from_scratch.kernels.fused_loss import combined_loss  # Triton is Linux-only

    return combined_loss(*args, **kwargs)


@functools.cache
def _compiled():
    return torch.compile(combined_loss_torch)


IMPLEMENTATIONS = {
    "fused (triton)": lambda *args: _fused(*args, validate=False),
    "fused (triton), checked": lambda *args: _fused(*args),
    "torch eager": lambda *args: combined_loss_torch(*args, validate=False),
    "torch.compile": lambda *args: _compiled()(*args, validate=False),
}


def _compulsory_bytes(logits: torch.Tensor, target: torch.Tensor, pixel_weights: torch.Tensor) -> int:
    """Forward reads logits, targets and weights; backward reads them again and writes the gradient."""
    inputs = logits.nbytes + target.nbytes + pixel_weights.nbytes
    return 2 * inputs + logits.nbytes


def _peak_bandwidth(name: str) -> float | None:
    return next((peak for key, peak in PEAK_BYTES_PER_S.items() if key in name), None)


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("classes", [2, 8])
@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_gpu_forward_backward(benchmark, name, classes, dtype):
    n, side = 16, 512
    logits = torch.randn(n, classes, side, side, device="cuda", dtype=dtype, requires_grad=True)
    target = torch.randint(0, classes, (n, side, side), device="cuda")
    pixel_weights = torch.rand(n, side, side, device="cuda") + 0.5
    class_weights = torch.linspace(0.5, 2.0, classes, device="cuda")
    fn = IMPLEMENTATIONS[name]

    def step():
        (grad,) = torch.autograd.grad(fn(logits, target, pixel_weights, class_weights), logits)
        torch.cuda.synchronize()
        return grad

    for _ in range(3):  # warm-up: Triton compiles and autotunes, torch.compile traces, torch picks its kernels
        step()
    device = torch.cuda.get_device_name()
    moved = _compulsory_bytes(logits, target, pixel_weights)
    benchmark.group = f"combined loss fwd+bwd N=16 C={classes} 512x512 {str(dtype).removeprefix('torch.')}"
    benchmark.extra_info.update(device=device, compulsory_bytes=moved, torch=torch.__version__, cuda=torch.version.cuda)
    grad = benchmark(step)
    assert grad.shape == logits.shape and grad.dtype == dtype

    if benchmark.stats is not None:  # None under --benchmark-disable
        achieved = moved / benchmark.stats.stats.median
        benchmark.extra_info["achieved_GB_per_s"] = round(achieved / 1e9, 1)
        peak = _peak_bandwidth(device)
        if peak is not None:
            benchmark.extra_info["fraction_of_peak_bandwidth"] = round(achieved / peak, 3)
    try:
        import triton

        benchmark.extra_info["triton"] = triton.__version__
    except ImportError:
        pass


CPU_SHAPE = (4, 2, 128, 128)


@pytest.fixture
def cpu_inputs(rng):
    n, c, h, w = CPU_SHAPE
    return (
        rng.standard_normal(CPU_SHAPE).astype(np.float32),
        rng.integers(0, c, size=(n, h, w)),
        rng.uniform(0.5, 1.5, size=(n, h, w)).astype(np.float32),
        np.array([0.5, 2.0], dtype=np.float32),
    )


@pytest.mark.benchmark(group="combined loss fwd+bwd cpu N=4 C=2 128x128 float32")
def test_cpu_numpy_reference(benchmark, cpu_inputs):
    loss, dlogits = benchmark(reference_combined_loss, *cpu_inputs)
    assert dlogits.shape == CPU_SHAPE and np.isfinite(loss)


@pytest.fixture(params=[1, None], ids=["1 thread", "default threads"])
def torch_threads(request):
    """torch's intra-op thread count for one test, restored after: NumPy's elementwise ops use one thread, torch
    a pool whose threads wait on each other when the cores are shared; both are measured."""
    default = torch.get_num_threads()
    torch.set_num_threads(request.param or default)
    yield torch.get_num_threads()
    torch.set_num_threads(default)


@pytest.mark.benchmark(group="combined loss fwd+bwd cpu N=4 C=2 128x128 float32")
def test_cpu_torch_eager(benchmark, cpu_inputs, torch_threads):
    logits, target, pixel_weights, class_weights = (torch.from_numpy(a) for a in cpu_inputs)
    logits.requires_grad_(True)

    def step():
        return torch.autograd.grad(combined_loss_torch(logits, target, pixel_weights, class_weights), logits)[0]

    benchmark.extra_info["torch_threads"] = torch_threads
    assert benchmark(step).shape == CPU_SHAPE
