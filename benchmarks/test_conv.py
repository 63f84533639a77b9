"""The NumPy convolution against torch on the CPU: conv2d_relu forward and conv2d backward, float32.

Shapes: every 3x3 convolution of the paper's U-Net on a 572x572 input (batch 1, valid padding: each convolution
trims a pixel per side, each 2x2 pooling halves, each up-convolution doubles and takes half the channels before
the skip's are concatenated), then training-sized batches with "same" padding. torch runs on as many threads as
NumPy's BLAS (threadpoolctl, else 2), so both sides have the same cores.

The training-sized batches are also timed with ``method="winograd"`` (Winograd F(2x2, 3x3)), which "auto" takes
only when NumPy's BLAS runs one thread (``OPENBLAS_NUM_THREADS=1``; ``choose_method``), in the same groups.

Before any timing, one untimed forward pass over every shape brings OpenBLAS to its steady state (``steady_state``).
With benchmarks disabled (CI) every case runs once at a small size (channels <= 8, sides <= 16, batch <= 2) and
is checked against torch.
"""

import numpy as np
import pytest
import torch

from tests.helpers import assert_close
from tests.reference.test_conv import torch_conv2d, torch_conv2d_relu
from unet_from_scratch.reference.conv import conv2d, conv2d_backward, conv2d_relu
from unet_from_scratch.reference.init import he_normal

pytestmark = pytest.mark.usefixtures("same_threads_as_numpy")  # benchmarks/conftest.py


def unet_conv_shapes(size=572, base=64, depth=5):
    """(N, C_in, C_out, H, padding) of each 3x3 convolution of the paper's U-Net on a size x size input."""
    shapes, widths = [], []
    c_in, h = 1, size
    for level in range(depth):  # contracting path: two convolutions per level, then 2x2 max-pooling
        c_out = base * 2**level
        shapes += [(1, c_in, c_out, h, "valid"), (1, c_out, c_out, h - 2, "valid")]
        c_in, h = c_out, h - 4
        widths.append(h)
        h //= 2
    h = widths[-1]
    for level in reversed(range(depth - 1)):  # expansive path: up-convolution, crop-and-concatenate, two convolutions
        c_out, h = base * 2**level, 2 * h
        shapes += [(1, 2 * c_out, c_out, h, "valid"), (1, c_out, c_out, h - 2, "valid")]
        h -= 4
    return shapes


TRAINING_SHAPES = [(16, 1, 64, 64, "same"), (16, 64, 64, 64, "same"), (16, 128, 128, 32, "same")]
SHAPES = unet_conv_shapes() + TRAINING_SHAPES


def shape_id(shape):
    n, c_in, c_out, h, padding = shape
    return f"N{n} {c_in}->{c_out} {h}x{h} {padding}"


@pytest.fixture(scope="module", autouse=True)
def steady_state(request):
    """One untimed forward pass over every shape before any timing, as a training process has made by its
    second step. OpenBLAS (0.3.31 here) runs the matmuls of a fresh process up to 2x slower until it has run
    some larger ones: on the benchmark machine a plain (64, 64) @ (64, 8000) ``np.matmul`` runs at 27 GFLOP/s
    before and 63 after a single (512, 512) @ (512, 4000) product. pytest-benchmark's warm-up rounds repeat
    one shape and do not lift it."""
    if not request.config.getoption("benchmark_disable"):
        for shape in SHAPES:
            x, w, b, _, padding = case(shape, smoke=False)
            conv2d_relu(x, w, b, padding)


def case(shape, smoke):
    """Seeded float32 (x, w, b, dy, padding); the U-Net's He-normal weights."""
    n, c_in, c_out, h, padding = shape
    if smoke:
        n, c_in, c_out, h = min(n, 2), min(c_in, 8), min(c_out, 8), min(h, 16)
    rng = np.random.default_rng(h * 1009 + c_in)
    x = rng.standard_normal((n, c_in, h, h), dtype=np.float32)
    w = he_normal((c_out, c_in, 3, 3), rng)
    b = rng.uniform(-0.1, 0.1, size=c_out).astype(np.float32)
    h_out = h if padding == "same" else h - 2
    dy = rng.standard_normal((n, c_out, h_out, h_out), dtype=np.float32)
    return x, w, b, dy, padding


ROUNDS = 5  # minutes in all at full size; the minimum of a few rounds resists a shared machine's noise


def impls(shapes):
    """(shape, impl) pairs: NumPy ("auto") and torch for every shape, NumPy's winograd for the training batches."""
    pairs = [(shape, impl) for shape in shapes for impl in ("numpy", "torch")]
    return pairs + [(shape, "numpy winograd") for shape in TRAINING_SHAPES]


def impl_id(value):
    return shape_id(value) if isinstance(value, tuple) else value


@pytest.mark.parametrize("shape, impl", impls(SHAPES), ids=impl_id)
def test_conv2d_relu_forward(benchmark, smoke, shape, impl):
    x, w, b, _, padding = case(shape, smoke)
    benchmark.group = f"conv2d_relu forward {shape_id(shape)}"
    if impl.startswith("numpy"):
        method = "winograd" if impl == "numpy winograd" else "auto"
        y, _ = benchmark.pedantic(
            conv2d_relu, args=(x, w, b, padding), kwargs=dict(method=method), rounds=ROUNDS, warmup_rounds=1
        )
    else:
        tx, tw, tb = map(torch.from_numpy, (x, w, b))
        with torch.no_grad():
            y = benchmark.pedantic(torch_conv2d_relu, args=(tx, tw, tb, padding), rounds=ROUNDS, warmup_rounds=1)
        y = y.numpy()
    expected = torch_conv2d_relu(*map(torch.from_numpy, (x, w, b)), padding).numpy()
    assert_close(y, expected, name="conv2d_relu")


@pytest.mark.parametrize("shape, impl", impls(SHAPES), ids=impl_id)
def test_conv2d_backward(benchmark, smoke, shape, impl):
    x, w, b, dy, padding = case(shape, smoke)
    benchmark.group = f"conv2d backward {shape_id(shape)}"
    tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
    ty, tdy = torch_conv2d(tx, tw, tb, padding), torch.from_numpy(dy)

    def torch_backward():
        return torch.autograd.grad(ty, (tx, tw, tb), tdy, retain_graph=True)

    if impl.startswith("numpy"):
        _, cache = conv2d(x, w, b, padding, method="winograd" if impl == "numpy winograd" else "auto")
        grads = benchmark.pedantic(conv2d_backward, args=(dy, cache), rounds=ROUNDS, warmup_rounds=1)
    else:
        grads = [g.numpy() for g in benchmark.pedantic(torch_backward, rounds=ROUNDS, warmup_rounds=1)]
    for name, ours, theirs in zip(["dx", "dw", "db"], grads, torch_backward()):
        assert_close(ours, theirs.numpy(), kind="grad", name=name)
