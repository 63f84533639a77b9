"""Attention forward+backward: the flash kernel against torch's scaled_dot_product_attention and naive attention.

GPU groups (skipped without CUDA): U-Net bottleneck shapes, batch 16, 8 heads, 32x32 and 64x64 positions as tokens,
head_dim 64 and 128, bfloat16. Each test times one forward and the backward for q, k and v, synchronised, and
records the peak memory that step allocates beyond its inputs (``torch.cuda.max_memory_allocated``) in
``extra_info["peak_extra_MiB"]``: naive attention holds the (seq × seq) weights, flash attention O(seq).

CPU group: the NumPy reference against torch's SDPA at a small shape, forward+backward, so the file measures
something on any machine.

    pytest benchmarks/test_attention.py --benchmark-group-by=group --benchmark-columns=min,median,max,rounds
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.torch_attention import naive_attention
from unet_from_scratch.reference.attention import (
    scaled_dot_product_attention,
    scaled_dot_product_attention_backward,
)

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU benchmark: needs CUDA")


def _flash(q, k, v):
    from unet_from_scratch.kernels.attention import flash_attention  # Triton is Linux-only

    return flash_attention(q, k, v)


IMPLEMENTATIONS = {
    "flash (triton)": _flash,
    "torch sdpa": F.scaled_dot_product_attention,
    "naive torch": naive_attention,
}


@gpu
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("side", [32, 64])
@pytest.mark.parametrize("name", IMPLEMENTATIONS)
def test_gpu_forward_backward(benchmark, name, side, head_dim):
    batch, heads, seq = 16, 8, side * side
    q, k, v, dout = (torch.randn(batch, heads, seq, head_dim, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    fn = IMPLEMENTATIONS[name]

    def step():
        grads = torch.autograd.grad(fn(q, k, v), (q, k, v), dout)
        torch.cuda.synchronize()
        return grads

    step()  # warm-up: Triton compiles and autotunes here, torch picks its kernels
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    benchmark.extra_info["peak_extra_MiB"] = round((torch.cuda.max_memory_allocated() - before) / 2**20, 1)
    benchmark.extra_info["device"] = torch.cuda.get_device_name()
    benchmark.group = f"attention fwd+bwd bf16 (16, 8, {side}x{side}, {head_dim})"
    benchmark(step)


def _cpu_shape(smoke):
    return (1, 2, 64, 32) if smoke else (2, 4, 256, 32)


@pytest.mark.benchmark(group="attention fwd+bwd cpu float32")
def test_cpu_numpy_reference(benchmark, rng, smoke):
    q, k, v, dout = (rng.standard_normal(_cpu_shape(smoke)).astype(np.float32) for _ in range(4))

    def step():
        _, cache = scaled_dot_product_attention(q, k, v)
        return scaled_dot_product_attention_backward(dout, cache)

    dq, dk, dv = benchmark(step)
    assert dq.shape == dk.shape == dv.shape == q.shape


@pytest.mark.benchmark(group="attention fwd+bwd cpu float32")
def test_cpu_torch_sdpa(benchmark, smoke):
    q, k, v, dout = (torch.randn(_cpu_shape(smoke)) for _ in range(4))
    q, k, v = (t.requires_grad_() for t in (q, k, v))

    dq, dk, dv = benchmark(lambda: torch.autograd.grad(F.scaled_dot_product_attention(q, k, v), (q, k, v), dout))
    assert dq.shape == dk.shape == dv.shape == q.shape
