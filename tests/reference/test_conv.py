"""conv2d, relu and conv2d_relu, forward and backward, against F.conv2d / F.relu and autograd, finite differences,
each other (the methods of the correlation core) and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import unet_from_scratch.reference.conv as conv
from tests.helpers import (
    assert_close,
    assert_matches_finite_differences,
    assert_matches_torch,
    float_arrays,
    float_dtypes,
    seeded_arrays,
    torch_forward_backward,
)
from unet_from_scratch.reference.conv import (
    METHODS,
    conv2d,
    conv2d_backward,
    conv2d_relu,
    conv2d_relu_backward,
    correlate,
    correlate_weight_gradient,
    relu,
    relu_backward,
)

PADDINGS = ["valid", "same", 0, 1, 2]

# torch notes that "same" with an even kernel pads a copy of the input: true, and what we compare against.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths:UserWarning")


# The torch statements of the functions under test; benchmarks/test_conv.py times these same baselines.
def torch_conv2d(x, w, b, padding="valid"):
    return F.conv2d(x, w, b, padding=padding)


def torch_conv2d_relu(x, w, b, padding="valid"):
    return F.relu(F.conv2d(x, w, b, padding=padding))


def total_padding(padding, k):
    """Rows (or columns) that ``padding`` adds in all, for a kernel of size k."""
    if padding == "valid":
        return 0
    if padding == "same":
        return k - 1
    return 2 * padding


def seeded_grid(shape, dtype, step):
    """A strategy for arrays of multiples of ``step`` in [-3 step, 3 step]: with a power-of-two step every
    product and sum of the small convolutions below is exact in float32, so our pre-activations equal torch's
    bit for bit and both take the same side of every ReLU kink (zeros included, which happen often)."""
    return st.integers(0, 2**32 - 1).map(
        lambda seed: (np.random.default_rng(seed).integers(-3, 4, size=shape) * step).astype(dtype)
    )


@st.composite
def conv_cases(draw, grid=False, max_size=24, kernel=None):
    """(x, w, b, dy, padding): batch 1-3, channels 1-8, sizes 1-max_size, kernels 1-5 (kh, kw apart; or
    ``kernel``), every padding mode, both dtypes; sizes never below the kernel under 'valid'-like padding."""
    dtype = draw(float_dtypes)
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kh, kw = kernel or (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    padding = draw(st.sampled_from(PADDINGS))
    h = draw(st.integers(max(1, kh - total_padding(padding, kh)), max_size))
    w = draw(st.integers(max(1, kw - total_padding(padding, kw)), max_size))
    h_out, w_out = h + total_padding(padding, kh) - kh + 1, w + total_padding(padding, kw) - kw + 1
    if grid:
        x = draw(seeded_grid((n, c_in, h, w), dtype, 0.5))
        weight = draw(seeded_grid((c_out, c_in, kh, kw), dtype, 0.125))
        b = draw(seeded_grid((c_out,), dtype, 0.125))
    else:
        x = draw(seeded_arrays((n, c_in, h, w), dtype))
        weight = draw(seeded_arrays((c_out, c_in, kh, kw), dtype, bound=1.0))
        b = draw(seeded_arrays((c_out,), dtype))
    dy = draw(seeded_arrays((n, c_out, h_out, w_out), dtype))
    return x, weight, b, dy, padding


def ours_conv2d(padding, method="auto"):
    def run(x, w, b, dout):
        y, cache = conv2d(x, w, b, padding, method=method)
        return y, list(conv2d_backward(dout, cache))  # the backward takes the forward's method from the cache

    return run


def ours_conv2d_relu(padding, method="auto"):
    def run(x, w, b, dout):
        y, cache = conv2d_relu(x, w, b, padding, method=method)
        return y, list(conv2d_relu_backward(dout, cache))

    return run


# An output sums C_in * kh * kw <= 200 products, a dx entry C_out * kh * kw <= 200, a dw or db entry
# N * H_out * W_out <= 3 * 28 * 28: within the ~10^4 terms the per-dtype defaults of tests/helpers.TOLERANCES
# are written for.
@settings(deadline=None)
@given(conv_cases())
def test_conv2d_matches_torch(case):
    x, w, b, dy, padding = case
    assert_matches_torch(
        ours_conv2d(padding),
        lambda x, w, b: torch_conv2d(x, w, b, padding),
        [x, w, b],
        wrt=[0, 1, 2],
        dout=dy,
        names=["dx", "dw", "db"],
    )


# Every method but "winograd", which takes 3x3 kernels only (its own tests follow these).
ANY_KERNEL_METHODS = tuple(m for m in METHODS if m != "winograd")


# The textbook form stays callable by name, beside the fast ones: every method, forward and backward, is torch's.
# Winograd F(2x2, 3x3) takes 3x3 kernels only; its dx goes through the same method (taken from the cache), and its
# float32 rounding stays in the class of the other methods' tolerances (4-5e-7 of max|y| on 64-128 channels).
LAYERS = {"conv2d": (ours_conv2d, torch_conv2d), "conv2d_relu": (ours_conv2d_relu, torch_conv2d_relu)}


@settings(deadline=None, max_examples=200)  # 2 layers x 5 methods: about 20 draws each
@given(st.data(), st.sampled_from(sorted(LAYERS)))
def test_every_method_of_conv2d_and_conv2d_relu_matches_torch(data, layer):
    method = data.draw(st.sampled_from(METHODS + ("auto",)), label="method")
    kernel = (3, 3) if method == "winograd" else None
    # conv2d_relu on grid values (seeded_grid): both sides take the same side of every ReLU kink
    x, w, b, dy, padding = data.draw(conv_cases(grid=layer == "conv2d_relu", max_size=13, kernel=kernel), label="case")
    ours, theirs = LAYERS[layer]
    assert_matches_torch(
        ours(padding, method),
        lambda x, w, b: theirs(x, w, b, padding),
        [x, w, b],
        wrt=[0, 1, 2],
        dout=dy,
        names=["dx", "dw", "db"],
    )


def winograd_tile(d, g):
    """One 2x2 output block from one 4x4 input tile ``d`` and one 3x3 filter ``g``, as the paper writes it:
    A^T [(G g G^T) * (B^T d B)] A."""
    bt, gm, at = conv.WINOGRAD_BT, conv.WINOGRAD_G, conv.WINOGRAD_AT
    return at @ ((gm @ g @ gm.T) * (bt @ d @ bt.T)) @ at.T


def test_winograd_matrices_give_the_correlation_of_a_tile(rng):
    d, g = rng.normal(size=(4, 4)), rng.normal(size=(3, 3))
    direct = np.array([[np.sum(d[r : r + 3, s : s + 3] * g) for s in range(2)] for r in range(2)])
    np.testing.assert_allclose(winograd_tile(d, g), direct, rtol=1e-12, atol=1e-12)
    # and the sliced transforms of correlate_winograd are these matrices, tile by tile (one channel, 4 tiles)
    x, w = rng.normal(size=(1, 1, 6, 6)), rng.normal(size=(1, 1, 3, 3))
    ours = correlate(x, w, method="winograd")[0, 0]
    for t in range(2):
        for u in range(2):
            block = winograd_tile(x[0, 0, 2 * t : 2 * t + 4, 2 * u : 2 * u + 4], w[0, 0])
            np.testing.assert_allclose(ours[2 * t : 2 * t + 2, 2 * u : 2 * u + 2], block, rtol=1e-12, atol=1e-12)


def winograd_weight_tile(d, dy):
    """One 4x4 input tile ``d``'s share in the 3x3 weight gradient of a 2x2 block of outputs ``dy``, the forward's
    identity read backwards (``weight_gradient_winograd``): G^T [(A dy A^T) * (B^T d B)] G."""
    bt, gm, at = conv.WINOGRAD_BT, conv.WINOGRAD_G, conv.WINOGRAD_AT
    return gm.T @ ((at.T @ dy @ at) * (bt @ d @ bt.T)) @ gm


def test_winograd_weight_gradient_of_a_tile_is_the_correlation_of_input_and_output_gradient(rng):
    d, dy = rng.normal(size=(4, 4)), rng.normal(size=(2, 2))
    direct = np.array([[np.sum(d[i : i + 2, j : j + 2] * dy) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(winograd_weight_tile(d, dy), direct, rtol=1e-12, atol=1e-12)
    # and weight_gradient_winograd sums exactly these shares, tile by tile (one channel, 4 tiles)
    x, dy = rng.normal(size=(1, 1, 6, 6)), rng.normal(size=(1, 1, 4, 4))
    shares = np.zeros((3, 3))
    for t in range(2):
        for u in range(2):
            tile, block = x[0, 0, 2 * t : 2 * t + 4, 2 * u : 2 * u + 4], dy[0, 0, 2 * t : 2 * t + 2, 2 * u : 2 * u + 2]
            shares += winograd_weight_tile(tile, block)
    np.testing.assert_allclose(conv.weight_gradient_winograd(x, dy)[0, 0], shares, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["windows", "shifted", "winograd"])
@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (1, 1, 1, 1), (2, 0, 1, 3)])
def test_weight_gradient_pads_like_a_padded_copy(method, pads, rng):
    # The backward hands the forward's padding to correlate_weight_gradient (winograd writes it into its parity
    # planes); odd and even output sizes.
    for size in [(5, 4), (8, 9)]:
        x = rng.normal(size=(2, 3, *size))
        h_out, w_out = size[0] + pads[0] + pads[1] - 2, size[1] + pads[2] + pads[3] - 2
        dy = rng.normal(size=(2, 4, h_out, w_out))
        dw = correlate_weight_gradient(x, dy, method=method, pads=pads)
        expected = conv.weight_gradient_windows(conv._pad(x, *pads), dy)
        assert_close(dw, expected, kind="grad", name=f"dw[{method}], pads {pads}, size {size}")


@pytest.mark.parametrize("small_chunks", [False, True])
def test_a_nan_stays_in_its_channel_under_winograd(small_chunks, rng, monkeypatch):
    # As in every sum, a NaN in x reaches only what reads it: the outputs of every channel (all read channel 1),
    # but the weight gradient of channel 1 alone. Winograd's transforms run over all channels at once, with tiles
    # that are computed and dropped; none of them may carry channel 1's NaN into another channel's dw.
    if small_chunks:
        monkeypatch.setattr(conv, "CHUNK_BYTES", 1)
        monkeypatch.setattr(conv, "WINOGRAD_MIN_TILES", 1)
    for size in [(8, 8), (7, 9)]:
        x = rng.normal(size=(3, 3, *size))
        for row, col in [(0, 0), (size[0] - 1, size[1] - 1), (3, 2)]:
            bad = x.copy()
            bad[1, 1, row, col] = np.nan
            y, cache = conv2d(bad, rng.normal(size=(4, 3, 3, 3)), None, "same", method="winograd")
            _, dw, _ = conv2d_backward(rng.normal(size=y.shape), cache)
            assert np.isnan(dw[:, 1]).any(), (size, row, col)
            assert np.isfinite(dw[:, [0, 2]]).all(), (size, row, col)


@pytest.mark.parametrize("padding", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("size", [(3, 3), (4, 7), (9, 6)])
def test_winograd_pads_as_it_splits_the_input_like_a_padded_copy(padding, size, rng):
    # The padding is written into winograd's parity planes, not copied first; 3 and 4 make the backward's dx
    # padding negative (a crop). Odd and even sizes, forward and backward, against the plain definition.
    x, w = rng.normal(size=(2, 3, *size)), rng.normal(size=(4, 3, 3, 3))
    y, cache = conv2d(x, w, None, padding, method="winograd")
    y_plain, cache_plain = conv2d(x, w, None, padding, method="windows")
    assert_close(y, y_plain)
    dy = rng.normal(size=y.shape)
    for ours, plain in zip(conv2d_backward(dy, cache), conv2d_backward(dy, cache_plain)):
        assert_close(ours, plain, kind="grad")


def test_winograd_needs_a_3x3_kernel(rng):
    x, w = rng.normal(size=(1, 2, 6, 6)), rng.normal(size=(2, 2, 3, 2))
    with pytest.raises(ValueError, match="method 'winograd' needs a 3x3 kernel, got 3x2"):
        conv2d(x, w, None, "same", method="winograd")
    with pytest.raises(ValueError, match="method 'winograd' needs a 3x3 kernel, got 3x2"):
        correlate(x, w, method="winograd")
    _, cache = conv2d(x, w, None, "same")
    with pytest.raises(ValueError, match="method 'winograd' needs a 3x3 kernel, got 3x2"):
        conv2d_backward(np.zeros((1, 2, 6, 6)), cache, method="winograd")
    with pytest.raises(ValueError, match="method 'winograd' needs a 3x3 kernel, got 3x2"):
        correlate_weight_gradient(x, np.zeros((1, 2, 4, 5)), method="winograd")


def test_a_backward_method_overrides_the_forwards(rng):
    x = rng.uniform(-1, 1, size=(2, 3, 6, 5))
    w, dy = rng.uniform(-1, 1, size=(4, 3, 3, 3)), rng.uniform(-1, 1, size=(2, 4, 6, 5))
    _, cache = conv2d(x, w, None, "same", method="shifted")
    for ours, plain in zip(conv2d_backward(dy, cache), conv2d_backward(dy, cache, method="windows")):
        assert_close(ours, plain, kind="grad")
    with pytest.raises(ValueError, match="method must be one of"):
        conv2d_backward(dy, cache, method="fft")


@settings(deadline=None)
@given(conv_cases(grid=True))
def test_conv2d_relu_matches_torch(case):
    x, w, b, dy, padding = case
    assert_matches_torch(
        ours_conv2d_relu(padding),
        lambda x, w, b: torch_conv2d_relu(x, w, b, padding),
        [x, w, b],
        wrt=[0, 1, 2],
        dout=dy,
        names=["dx", "dw", "db"],
    )


@settings(deadline=None)
@given(st.data())
def test_relu_matches_torch(data):
    # Elementwise, no sums: exact agreement is expected, so the forward/grad tolerances are only a formality.
    # Hypothesis draws exact zeros (and -0.0) often, so the kink convention is compared too.
    dtype = data.draw(float_dtypes)
    shape = data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple))
    x = data.draw(float_arrays(shape, dtype))
    dy = data.draw(float_arrays(shape, dtype))
    def ours(x, dout):
        y, cache = relu(x)
        return y, [relu_backward(dout, cache)]

    assert_matches_torch(ours, F.relu, [x], wrt=[0], dout=dy)


def test_relu_gradient_is_zero_at_the_kink():
    # Torch's convention (threshold_backward keeps dy only where x > 0); the derivative is undefined at 0.
    x, dy = np.array([-1.0, 0.0, -0.0, 1.0]), np.full(4, 5.0)
    _, (torch_dx,) = torch_forward_backward(F.relu, [x], dout=dy, wrt=[0])
    np.testing.assert_array_equal(torch_dx, [0.0, 0.0, 0.0, 5.0])
    np.testing.assert_array_equal(relu_backward(dy, relu(x)[1]), torch_dx)


@st.composite
def correlation_cases(draw, kernel=None):
    """(x, w, b, dy) for the valid correlation core: x already padded, sizes 1-24, kernels 1-5 (or ``kernel``)."""
    dtype = draw(float_dtypes)
    n, c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kh, kw = kernel or (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    h, w = draw(st.integers(kh, 24)), draw(st.integers(kw, 24))
    x = draw(seeded_arrays((n, c_in, h, w), dtype))
    weight = draw(seeded_arrays((c_out, c_in, kh, kw), dtype, bound=1.0))
    b = draw(seeded_arrays((c_out,), dtype))
    dy = draw(seeded_arrays((n, c_out, h - kh + 1, w - kw + 1), dtype))
    return x, weight, b, dy


def torch_weight_gradient(x, w, dy):
    """F.conv2d's weight gradient: the oracle for the weight gradient of the correlation core."""
    tx, tw = torch.from_numpy(x), torch.from_numpy(w).requires_grad_()
    F.conv2d(tx, tw).backward(torch.from_numpy(dy))
    return tw.grad.numpy()


# small_chunks shrinks the row chunks to one row, so chunk boundaries (and the last, shortened chunk of the
# flat methods) are crossed even at these sizes.
# "winograd" (3x3 kernels only) on its own 3x3 cases, beside every other method on any kernel.
@settings(deadline=None)
@given(
    st.one_of(
        st.tuples(correlation_cases(), st.sampled_from(ANY_KERNEL_METHODS)),
        st.tuples(correlation_cases(kernel=(3, 3)), st.just("winograd")),
    ),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_every_correlation_method_matches_torch_and_the_plain_definition(case_and_method, bias, relu, small_chunks):
    (x, w, b, _), method = case_and_method
    b = b if bias else None
    with pytest.MonkeyPatch.context() as mp:
        if small_chunks:
            mp.setattr(conv, "CHUNK_BYTES", 1)
            mp.setattr(conv, "WINOGRAD_MIN_TILES", 1)
        y = correlate(x, w, b, relu=relu, method=method)
    assert y.dtype == x.dtype
    expected = F.conv2d(*(None if a is None else torch.from_numpy(a) for a in (x, w, b)))
    expected = (F.relu(expected) if relu else expected).numpy()
    assert_close(y, expected, name=f"correlate[{method}]")
    assert_close(y, correlate(x, w, b, relu=relu, method="windows"), name=f"correlate[{method}] vs windows")


@settings(deadline=None)
@given(
    st.one_of(
        st.tuples(correlation_cases(), st.sampled_from(["windows", "shifted"])),
        st.tuples(correlation_cases(kernel=(3, 3)), st.just("winograd")),
    ),
    st.booleans(),
)
def test_every_weight_gradient_method_matches_torch_and_the_plain_definition(case_and_method, small_chunks):
    (x, w, _, dy), method = case_and_method
    with pytest.MonkeyPatch.context() as mp:
        if small_chunks:
            mp.setattr(conv, "CHUNK_BYTES", 1)
            mp.setattr(conv, "WINOGRAD_MIN_TILES", 1)
        dw = correlate_weight_gradient(x, dy, method=method)
    assert dw.dtype == x.dtype
    assert_close(dw, torch_weight_gradient(x, w, dy), kind="grad", name=f"correlate_weight_gradient[{method}]")
    assert_close(dw, correlate_weight_gradient(x, dy, method="windows"), kind="grad", name=f"dw[{method}] vs windows")


def test_choose_method_follows_its_measured_rule():
    assert conv.choose_method(1) == conv.choose_method(16, 10**6) == "im2col"  # thin matmuls: always im2col
    assert conv.choose_method(64) == conv.choose_method(64, 10**6) == "shifted"  # the paper's large maps
    assert conv.choose_method(64, 64 * 66) == conv.choose_method(128, 32 * 34, 128) == "im2col"  # small images
    assert conv.choose_method(64, 64 * 66, 1) == conv.choose_method(64, 64 * 66, 32) == "shifted"  # few outputs
    assert conv.choose_method(256, 16 * 18) == "shifted"
    # Winograd: 3x3 kernels, 64 input channels or more, 32 outputs or more, one BLAS thread
    one = dict(kernel=(3, 3), blas_threads=1)
    assert conv.choose_method(64, 64 * 66, 64, **one) == conv.choose_method(256, 10**6, **one) == "winograd"
    assert conv.choose_method(128, 32 * 34, 32, **one) == conv.choose_method(1024, 30 * 32, **one) == "winograd"
    assert conv.choose_method(32, 64 * 66, 64, **one) == "im2col"  # too few input channels
    assert conv.choose_method(64, 64 * 66, 1, **one) == conv.choose_method(64, 64 * 66, 16, **one) == "shifted"
    assert conv.choose_method(64, 64 * 66, 64, kernel=(3, 3), blas_threads=2) == "im2col"  # two threads: not it
    assert conv.choose_method(64, 64 * 66, 64, kernel=(5, 5), blas_threads=1) == "im2col"


@pytest.mark.parametrize("c_in, c_out", [(1, 64), (48, 4), (48, 48)])
def test_auto_method_on_both_sides_of_the_rule_matches_torch(c_in, c_out, rng):
    # The property tests' channels (<= 8) fall on im2col's side of choose_method (C_in < 32); 48 -> 4 crosses
    # it (few outputs: shifted), 48 -> 48 on a small image is im2col, and the backward's dx correlation (C_out
    # channels in, C_in out) crosses the rule the other way.
    x = rng.uniform(-1, 1, size=(2, c_in, 9, 7)).astype(np.float32)
    w = rng.uniform(-0.1, 0.1, size=(c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.uniform(-1, 1, size=c_out).astype(np.float32)
    dy = rng.uniform(-1, 1, size=(2, c_out, 9, 7)).astype(np.float32)
    assert_matches_torch(
        ours_conv2d("same"),
        lambda x, w, b: torch_conv2d(x, w, b, "same"),
        [x, w, b],
        wrt=[0, 1, 2],
        dout=dy,
        names=["dx", "dw", "db"],
    )


@pytest.mark.parametrize("padding", ["same", "valid", 2])
def test_auto_method_at_one_blas_thread_takes_winograd_and_matches_torch(padding, rng):
    # On one thread "auto" takes winograd for 64 -> 64 channels, forward and the backward's dx and dw, both dtypes; the
    # row chunks are cut small so that several are crossed.
    threadpoolctl = pytest.importorskip("threadpoolctl")
    for dtype in (np.float32, np.float64):
        x = rng.uniform(-1, 1, size=(2, 64, 11, 8)).astype(dtype)
        w = rng.uniform(-0.05, 0.05, size=(64, 64, 3, 3)).astype(dtype)
        b = rng.uniform(-1, 1, size=64).astype(dtype)
        dy = rng.uniform(-1, 1, size=conv._output_shape(x, w, conv._padding(padding, 3, 3))).astype(dtype)
        with threadpoolctl.threadpool_limits(1), pytest.MonkeyPatch.context() as mp:
            assert conv.choose_method(64, 9 * 8, 64, (3, 3)) == "winograd"
            mp.setattr(conv, "CHUNK_BYTES", 1)
            mp.setattr(conv, "WINOGRAD_MIN_TILES", 1)
            assert_matches_torch(
                ours_conv2d_relu(padding),
                lambda x, w, b: torch_conv2d_relu(x, w, b, padding),
                [x, w, b],
                wrt=[0, 1, 2],
                dout=dy,
                names=["dx", "dw", "db"],
            )


def test_hand_worked_example():
    # 1 channel, 3x3 input, 2x2 kernel, valid: each output is the dot product of the kernel with one window.
    x = np.arange(9.0).reshape(1, 1, 3, 3)  # [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])  # x[h, v] - x[h + 1, v + 1]
    np.testing.assert_array_equal(conv2d(x, w, np.array([10.0]))[0], [[[[6.0, 6.0], [6.0, 6.0]]]])
    # Even kernel, "same": the extra row and column of padding go at the bottom and right (as in torch).
    same, _ = conv2d(x, w, padding="same")
    np.testing.assert_array_equal(same, [[[[-4.0, -4.0, 2.0], [-4.0, -4.0, 5.0], [6, 7, 8]]]])


PADDING_AND_KERNELS = [("valid", (3, 3)), ("same", (2, 3)), ("same", (3, 3)), (1, (2, 2)), (2, (1, 3)), (0, (3, 1))]


@pytest.mark.parametrize("padding, kernel", PADDING_AND_KERNELS)
def test_conv2d_backward_matches_finite_differences(padding, kernel, rng):
    x = rng.normal(size=(2, 2, 4, 5))
    w = rng.normal(size=(3, 2, *kernel))
    b = rng.normal(size=3)
    y, cache = conv2d(x, w, b, padding)
    dy = rng.normal(size=y.shape)
    dx, dw, db = conv2d_backward(dy, cache)
    assert_matches_finite_differences(dx, lambda z: conv2d(z, w, b, padding)[0], x, dy, name="dx")
    assert_matches_finite_differences(dw, lambda z: conv2d(x, z, b, padding)[0], w, dy, name="dw")
    assert_matches_finite_differences(db, lambda z: conv2d(x, w, z, padding)[0], b, dy, name="db")


@pytest.mark.parametrize("padding, kernel", PADDING_AND_KERNELS)
def test_conv2d_relu_backward_matches_finite_differences(padding, kernel, rng):
    x = rng.normal(size=(2, 2, 4, 5))
    w = rng.normal(size=(3, 2, *kernel))
    b = rng.normal(size=3)
    # Central differences with eps = 1e-6 move a pre-activation by < 1e-4 here; any closer to the kink and
    # the difference would straddle it. The seed keeps every pre-activation farther away (checked, not assumed).
    assert np.min(np.abs(conv2d(x, w, b, padding)[0])) > 1e-3
    y, cache = conv2d_relu(x, w, b, padding)
    assert 0 < np.count_nonzero(y) < y.size  # both sides of the ReLU are exercised
    dy = rng.normal(size=y.shape)
    dx, dw, db = conv2d_relu_backward(dy, cache)
    assert_matches_finite_differences(dx, lambda z: conv2d_relu(z, w, b, padding)[0], x, dy, name="dx")
    assert_matches_finite_differences(dw, lambda z: conv2d_relu(x, z, b, padding)[0], w, dy, name="dw")
    assert_matches_finite_differences(db, lambda z: conv2d_relu(x, w, z, padding)[0], b, dy, name="db")


def test_relu_backward_matches_finite_differences(rng):
    # Values at least 0.1 from the kink, so the centred difference (eps = 1e-6) never straddles it.
    x = rng.uniform(0.1, 2.0, size=(3, 4)) * rng.choice([-1.0, 1.0], size=(3, 4))
    dy = rng.normal(size=(3, 4))
    assert_matches_finite_differences(relu_backward(dy, relu(x)[1]), lambda z: relu(z)[0], x, dy, name="relu")


X = np.zeros((1, 3, 5, 5))
W = np.zeros((2, 3, 3, 3))


@pytest.mark.parametrize(
    "x, w, b, padding, message",
    [
        (np.zeros((3, 5, 5)), W, None, "valid", r"x must have 4 dimensions \(N, C_in, H, W\), got shape \(3, 5, 5\)"),
        (X, np.zeros((2, 3, 3)), None, "valid", r"w must have 4 dimensions \(C_out, C_in, kh, kw\), got shape"),
        (X, np.zeros((2, 4, 3, 3)), None, "valid", r"x has 3 channels but w expects C_in = 4"),
        (X.astype(np.int64), W, None, "valid", "x must be float32 or float64, got int64"),
        ([[[[1.0]]]], W, None, "valid", "x must be a numpy array, got list"),
        (X, W.astype(np.float32), None, "valid", "dtypes must match, got x=float64, w=float32"),
        (X, np.zeros((2, 3, 6, 3)), None, "valid", r"kernel 6x3 is larger than the input 5x5 padded to 5x5"),
        (X, np.zeros((2, 3, 8, 8)), None, 1, r"kernel 8x8 is larger than the input 5x5 padded to 7x7 \(padding=1\)"),
        (X, np.zeros((2, 3, 0, 3)), None, "valid", "w must have a kernel of at least 1x1, got 0x3"),
        (X, W, None, "full", "padding must be 'valid', 'same' or a non-negative int, got 'full'"),
        (X, W, None, -1, "padding must be 'valid', 'same' or a non-negative int, got -1"),
        (X, W, None, 1.5, "padding must be 'valid', 'same' or a non-negative int, got 1.5"),
        (X, W, None, True, "padding must be 'valid', 'same' or a non-negative int, got True"),
        (X, np.full((2, 3, 3, 3), np.nan), None, "valid", r"w must be finite, got 54 NaN or infinite value\(s\)"),
        (X, W, np.zeros(3), "valid", r"b must have shape \(2,\) to match w's C_out, got \(3,\)"),
        (X, W, np.zeros((2, 1)), "valid", r"b must have 1 dimensions \(C_out,\), got shape \(2, 1\)"),
        (X, W, np.zeros(2, np.float32), "valid", "dtypes must match, got x=float64, b=float32"),
        (X, W, np.array([0.0, np.inf]), "valid", r"b must be finite, got 1 NaN or infinite value\(s\)"),
    ],
)
def test_bad_input_raises(x, w, b, padding, message):
    with pytest.raises(ValueError, match=message):
        conv2d(x, w, b, padding)
    with pytest.raises(ValueError, match=message):
        conv2d_relu(x, w, b, padding)


@pytest.mark.parametrize(
    "dy, message",
    [
        (np.zeros((1, 2, 3, 4)), r"dy must have the output shape \(1, 2, 3, 3\), got \(1, 2, 3, 4\)"),
        (np.zeros((1, 2, 3, 3), np.float32), "dtypes must match, got dy=float32, x=float64"),
        (np.zeros((2, 3, 3)), r"dy must have 4 dimensions \(N, C_out, H_out, W_out\), got shape \(2, 3, 3\)"),
    ],
)
def test_bad_upstream_gradient_raises(dy, message):
    with pytest.raises(ValueError, match=message):
        conv2d_backward(dy, conv2d(X, W)[1])
    with pytest.raises(ValueError, match=message.replace("x=float64", "y=float64")):
        conv2d_relu_backward(dy, conv2d_relu(X, W)[1])


def test_a_backward_takes_only_the_cache_of_its_own_forward():
    with pytest.raises(ValueError, match="cache must be the one conv2d returned, got the cache of conv2d_relu"):
        conv2d_backward(np.zeros((1, 2, 3, 3)), conv2d_relu(X, W)[1])
    with pytest.raises(ValueError, match="cache must be the one conv2d_relu returned, got the cache of conv2d"):
        conv2d_relu_backward(np.zeros((1, 2, 3, 3)), conv2d(X, W)[1])
    with pytest.raises(ValueError, match="cache must be the one relu returned, got tuple"):
        relu_backward(np.zeros(3), (np.zeros(3),))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_relu_backward_keeps_a_non_finite_gradient_on_the_units_it_passes(bad):
    # The fast path multiplies dy by the 0/1 mask, and NaN * 0 is NaN: a non-finite dy takes np.where, as torch.
    y, cache = relu(np.array([-1.0, 2.0, 0.0, 3.0], np.float32))
    dy = np.array([bad, 1.0, bad, bad], np.float32)
    expected = torch.ops.aten.threshold_backward(torch.from_numpy(dy), torch.from_numpy(y), 0).numpy()
    np.testing.assert_array_equal(relu_backward(dy, cache), expected)
    np.testing.assert_array_equal(relu_backward(dy, cache), [0.0, 1.0, 0.0, bad])


def test_bad_relu_input_raises():
    with pytest.raises(ValueError, match="x must be float32 or float64, got int64"):
        relu(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"dy must have the output shape \(3,\), got \(4,\)"):
        relu_backward(np.zeros(4), relu(np.zeros(3))[1])
    with pytest.raises(ValueError, match="dtypes must match, got dy=float32, y=float64"):
        relu_backward(np.zeros(3, np.float32), relu(np.zeros(3))[1])


def test_unknown_method_raises():
    methods = r"\('windows', 'im2col', 'shifted', 'winograd'\)"
    with pytest.raises(ValueError, match=rf"method must be one of {methods} or 'auto'"):
        correlate(X, W, method="fft")
    with pytest.raises(ValueError, match="method must be 'windows', 'shifted', 'winograd' or 'auto', got 'im2col'"):
        correlate_weight_gradient(X, np.zeros((1, 2, 3, 3)), method="im2col")
