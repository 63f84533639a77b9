"""SelfAttention2d: shapes, the torch backend against the block written out by hand, the Triton backend against
the torch one, gradients, and the checks on its arguments."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.helpers import assert_close
from unet_from_scratch import kernels
from unet_from_scratch.nn.attention import SelfAttention2d


def written_out(block: SelfAttention2d, x: torch.Tensor) -> torch.Tensor:
    """The block as one torch statement per line of its docstring, from its parameters."""
    n, c, h, w = x.shape
    heads, d = block.num_heads, c // block.num_heads
    hn = F.group_norm(x, math.gcd(32, c), block.norm.weight, block.norm.bias, eps=1e-5)
    tokens = F.conv2d(hn, block.qkv.weight, block.qkv.bias).reshape(n, 3 * c, h * w)  # (N, 3C, HW)
    q, k, v = (tokens[:, i * c : (i + 1) * c].reshape(n, heads, d, h * w).transpose(2, 3) for i in range(3))
    a = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(d), dim=-1) @ v  # (N, heads, HW, d)
    a = a.transpose(2, 3).reshape(n, c, h, w)
    return x + F.conv2d(a, block.proj.weight, block.proj.bias)


@pytest.mark.parametrize("shape, heads", [((2, 32, 5, 7), 8), ((1, 48, 1, 1), 3), ((3, 8, 4, 4), 1)])
def test_output_keeps_the_input_shape(shape, heads):
    x = torch.randn(shape)
    assert SelfAttention2d(shape[1], heads, backend="torch")(x).shape == shape


@pytest.mark.parametrize("shape, heads", [((2, 32, 5, 7), 4), ((1, 24, 3, 2), 3), ((2, 16, 1, 6), 1)])
def test_torch_backend_matches_the_written_out_block(shape, heads):
    block = SelfAttention2d(shape[1], heads, backend="torch").double()
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, expected = block(x), written_out(block, x_ref)
    dout = torch.randn_like(out)
    out.backward(dout)
    grads = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    expected.backward(dout)
    assert_close(out.detach().numpy(), expected.detach().numpy(), name="out")
    assert_close(x.grad.numpy(), x_ref.grad.numpy(), kind="grad", name="dx")
    for (name, p), g in zip(block.named_parameters(), grads):
        assert_close(g.numpy(), p.grad.numpy(), kind="grad", name=name)


@pytest.mark.triton
def test_triton_backend_matches_torch_backend():
    pytest.importorskip("triton")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not kernels.triton_runs_on(torch.empty(0, device=device)):
        pytest.skip("Triton runs neither on a GPU nor under TRITON_INTERPRET=1 here")
    # 32 channels in 2 heads of 16; 5x7 = 35 tokens: three 16-token tiles, the last one mostly padding.
    torch_block = SelfAttention2d(32, num_heads=2, backend="torch").to(device)
    triton_block = SelfAttention2d(32, num_heads=2, backend="triton").to(device)
    triton_block.load_state_dict(torch_block.state_dict())
    x = torch.randn(1, 32, 5, 7, device=device)
    dout = torch.randn_like(x)
    results = []
    for block in (torch_block, triton_block):
        xi = x.clone().requires_grad_()
        out = block(xi)
        out.backward(dout)
        results.append([out.detach(), xi.grad] + [p.grad for p in block.parameters()])
    names = ["out", "dx"] + [name for name, _ in torch_block.named_parameters()]
    # float32 both ways (the kernel's tl.dot is IEEE float32), summed in different orders: the float32 table.
    for name, ours, theirs in zip(names, results[1], results[0]):
        kind = "forward" if name == "out" else "grad"
        assert_close(ours.cpu().numpy(), theirs.cpu().numpy(), kind=kind, name=name)


def test_auto_backend_never_runs_the_interpreter_on_cpu(monkeypatch):
    if kernels.HAS_TRITON:
        from unet_from_scratch.kernels import attention

        def refuse(*args, **kwargs):
            raise AssertionError("the Triton kernel ran on CPU tensors")

        monkeypatch.setattr(attention, "flash_attention", refuse)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    block = SelfAttention2d(32, num_heads=2)
    x = torch.randn(1, 32, 3, 3)
    assert_close(block(x).detach().numpy(), written_out(block, x).detach().numpy(), name="out")


def test_every_parameter_gets_a_gradient():
    block = SelfAttention2d(16, num_heads=2, backend="torch")
    x = torch.randn(2, 16, 4, 5, requires_grad=True)
    (block(x) * torch.randn(2, 16, 4, 5)).sum().backward()
    for name, p in [("x", x), *block.named_parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} gets a zero gradient"


def test_dropout_acts_in_training_only():
    block = SelfAttention2d(16, num_heads=2, dropout=0.5, backend="torch")
    x = torch.randn(2, 16, 4, 4)
    expected = (written_out(block, x) - x).detach().numpy()
    block.eval()
    assert_close((block(x) - x).detach().numpy(), expected, name="eval")
    block.train()
    residual = (block(x) - x).detach().numpy()
    kept = residual != 0
    assert kept.any() and not kept.all()
    # Inverted dropout: what is kept is scaled by 1 / (1 - p) = 2.
    assert_close(residual[kept], 2 * expected[kept], name="kept")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(channels=30, num_heads=8), "channels=30, num_heads=8"),
        (dict(channels=16, num_heads=0), "positive"),
        (dict(channels=16, num_heads=2, backend="cuda"), "backend"),
        (dict(channels=16, num_heads=2, dropout=1.0), "dropout"),
        (dict(channels=16, num_heads=2, dropout=float("nan")), "dropout must be finite"),
        (dict(channels=16, num_heads=2, dropout=-0.1), "dropout must be finite"),
        (dict(channels=16.0, num_heads=2), "channels must be a positive integer"),
        (dict(channels=16, num_heads=True), "num_heads must be a positive integer"),
        (dict(channels=16, num_heads=2, backend="triton"), r"\[16, 128\], got 16/2 = 8"),
        (dict(channels=512, num_heads=2, backend="triton"), r"\[16, 128\], got 512/2 = 256"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    if kwargs.get("backend") == "triton" and not kernels.HAS_TRITON:
        match = "triton package"
    with pytest.raises(ValueError, match=match):
        SelfAttention2d(**kwargs)


@pytest.mark.parametrize("shape", [(1, 16, 4), (1, 8, 4, 4)])
def test_bad_input_shape_raises(shape):
    with pytest.raises(ValueError, match=r"\(N, 16, H, W\)"):
        SelfAttention2d(16, num_heads=2, backend="torch")(torch.randn(shape))


def test_a_float64_input_to_a_float32_block_is_cast_to_float32():
    block = SelfAttention2d(16, num_heads=2, backend="torch").eval()
    x = torch.randn(1, 16, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)  # was a dtype error inside the GroupNorm
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, block(x.float()), rtol=0, atol=0)
    with pytest.raises(ValueError, match="^x must be a real"):
        block(x > 0)


def test_float64_runs_on_the_torch_path_under_auto():
    # float64 is outside the kernel's dtypes: "auto" must fall back to torch on any device.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(1, 16, 3, 3, dtype=torch.float64, device=device)
    block = SelfAttention2d(16, num_heads=1).double().to(device)
    assert_close(block(x).detach().cpu().numpy(), written_out(block, x).detach().cpu().numpy(), name="out")


@pytest.mark.skipif(not (torch.cuda.is_available() and kernels.HAS_TRITON), reason="needs CUDA and Triton")
def test_auto_backend_runs_the_kernel_on_cuda(monkeypatch):
    from unet_from_scratch.kernels import attention

    calls = []
    spy = lambda *args: calls.append(args) or F.scaled_dot_product_attention(*args)  # noqa: E731
    monkeypatch.setattr(attention, "flash_attention", spy)
    SelfAttention2d(32, num_heads=2).cuda()(torch.randn(1, 32, 3, 3, device="cuda"))
    assert len(calls) == 1
