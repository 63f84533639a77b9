"""2-D convolution and ReLU, forward and backward: the U-Net's 3x3 convolution + ReLU.

Like torch and the paper, "convolution" is a cross-correlation (the kernel is not flipped). With ``xp`` the input
zero-padded by (top, bottom, left, right), stride 1 and torch's weight layout ``w`` (C_out, C_in, kh, kw):

    y[n, o, h, v] = b[o] + sum_{c, i, j} w[o, c, i, j] * xp[n, c, h + i, v + j]
    H_out = H + top + bottom - kh + 1,    W_out = W + left + right - kw + 1

(Goodfellow, Bengio & Courville, "Deep Learning", 2016, Sec. 9.1; ``torch.nn.functional.conv2d``.)
Padding "valid" is none (the paper's choice: each 3x3 convolution trims one pixel per side), "same" keeps
H and W (kh - 1 rows in all: half on top, the extra one of an even kernel at the bottom, as torch does), an int
``p`` pads every side by ``p``.

Backward, reading the sum the other way round (cs231n's conv notes; Dumoulin & Visin 2016, Sec. 4):

    db[o]          = sum_{n, h, v} dy[n, o, h, v]
    dw[o, c, i, j] = sum_{n, h, v} dy[n, o, h, v] * xp[n, c, h + i, v + j]    (x correlated with dy)
    dxp            = dy padded by (kh - 1, kw - 1) on every side, correlated with w flipped in both spatial axes
                     and with C_in and C_out swapped ("full" correlation); dx is dxp without the padding.

How the sums are computed (``METHODS``; all give the same numbers up to rounding, and the tests hold them to
each other and to torch). ``conv2d``, ``conv2d_relu`` and their backwards take ``method=`` by name, so the slow,
clear form runs beside the fast ones:

- "windows", the plain definition, comes first in this file (``correlate_windows``, ``weight_gradient_windows``):
  ``sliding_window_view`` gives every kh x kw window, ``einsum`` does the sum as the formula writes it.
- the two fast methods rest on one observation. In a C-contiguous (C, H, W) image, pixel (h + i, v + j) sits at
  flat index (h * W + v) + (i * W + j): a kernel tap (i, j) is a fixed *shift* s = i * W + j of the flattened
  image. So for every output position q = h * W + v in one contiguous range, tap (i, j) reads the plain
  (C, L) matrix ``x_flat[:, s : s + L]`` -- a strided view, no copy. Positions with v >= W_out (the last
  kw - 1 columns of each row) wrap into the next row; they are computed and dropped, wasting (kw - 1) / W of
  the work (under 1% for the paper's layers, which are at least 30 pixels wide; 6% at 32x32).
- "im2col" copies the kh * kw shifted views, row-chunk by row-chunk, into one (C_in * kh * kw, L) matrix and
  makes one matmul with w as a (C_out, C_in * kh * kw) matrix. The copy costs C_in * kh * kw values per output
  position, shared by the C_out outputs of that position.
- "shifted" makes one (C_out, C_in) @ (C_in, L) matmul per tap on the views themselves and adds them up: no
  copy of the input, but kh * kw passes over the output, and each matmul's inner dimension is only C_in.
- "winograd", for 3x3 kernels only (``correlate_winograd``, after the other methods), is Winograd's minimal
  filtering F(2x2, 3x3) (Lavin & Gray 2016): each 2x2 block of outputs from a 4x4 tile of the input through
  fixed add/subtract transforms and 16 (C_out, C_in) @ (C_in, tiles) matmuls, 4 multiplications per output and
  channel pair instead of 9.

``choose_method`` picks per shape (the rule and the measurements behind it are in its docstring): winograd for
3x3 kernels from 64 input channels and 32 output channels on, when NumPy's BLAS runs one thread; else im2col
below 32 input channels, and up to 128 on the small images of a training batch (at most 128x128) unless the
outputs are at most half the inputs; shifted otherwise. Rows are processed in chunks of a few MiB so the copies
and partial sums stay in cache. The dx of the backward is the same correlation, so it takes the same route; dw
is winograd's where the forward's is (the same tiles, ``weight_gradient_winograd``), else one matmul per tap
with the long (positions) axis as the inner dimension, on a channels-last copy of the input (OpenBLAS runs
these products up to 1.9x faster with a row-major (L, C_in) operand than a transposed one).

More than one core: where NumPy's BLAS runs T > 1 threads, a batch is split into T parts run at once on T
threads, each with BLAS on one thread (``reference/threads.py``): the copies and transforms around the matmuls,
NumPy's own single-threaded code, then run on every core too, and each part picks its method as on one thread.
A single image (the paper's 572x572 tile, a prediction) is not split and runs on BLAS's threads.

What a matmul can reach bounds the direct methods: on the benchmark machine OpenBLAS runs these products at
58-89 GFLOP/s on one thread (float32; (64, 576) @ (576, L) at 65-74), while torch's oneDNN runs a whole N = 16,
64 -> 64 channel 3x3 convolution at 64x64 at about 100 GFLOP/s, so im2col stays 1.3-1.45x behind torch there
for the forward and dx. Winograd's 2.25x fewer multiplications get past that bound: 0.88-1.17x torch's time
for the forward and 0.94-1.16x for dx on the N = 16 batches (one thread, five runs on the shared machine), and
its dw 0.77-0.92x torch's dw where the direct one took 1.08-1.20x; on two threads, with the batch split, the
forward and the whole backward stay within 1.2x of torch's (``benchmarks/README.md``, "NumPy engine").

By the policy of ``reference/_checks.py``: non-finite weights or biases raise ValueError (one turns a whole output
channel into NaN); NaN or infinity in ``x`` or ``dy`` is not rejected: as in any sum, it only reaches the outputs
whose window covers it.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from unet_from_scratch.reference import threads
from unet_from_scratch.reference._checks import check_cache, check_finite, check_float_array, check_same_dtype, is_int

METHODS = ("windows", "im2col", "shifted", "winograd")


# The textbook forms first: every other method is tested against these two.
def correlate_windows(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The plain definition of the valid correlation: ``x`` (N, C_in, H, W), ``w`` (C_out, C_in, kh, kw) ->
    (N, C_out, H - kh + 1, W - kw + 1) in x's dtype, ``y[n, o, h, v] = sum_{c, i, j} w[o, c, i, j] * x[n, c, h + i, v + j]``.

    ``sliding_window_view`` shows every kh x kw window of x without copying it, and one ``einsum`` writes the sum
    as it stands in the formula.
    """
    windows = sliding_window_view(x, w.shape[2:], axis=(2, 3))  # (N, C_in, H_out, W_out, kh, kw), a view
    return np.ascontiguousarray(np.einsum("nchvij,ocij->nohv", windows, w, optimize=True))


def weight_gradient_windows(x: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The plain definition of the correlation's weight gradient: ``x`` (N, C_in, H, W), ``dy``
    (N, C_out, H_out, W_out) -> (C_out, C_in, kh, kw), ``dw[o, c, i, j] = sum_{n, h, v} dy[n, o, h, v] * x[n, c, h + i, v + j]``."""
    kh, kw = x.shape[2] - dy.shape[2] + 1, x.shape[3] - dy.shape[3] + 1
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))  # (N, C_in, H_out, W_out, kh, kw), a view
    return np.einsum("nchvij,nohv->ocij", windows, dy, optimize=True)

# Working set of one chunk of output rows (its im2col columns or input views, and its partial sums), in bytes.
# 2-4 MiB ran fastest on the benchmark machine (8 MiB L3): shorter chunks make short matmuls, longer ones fall
# out of cache. Chunking also bounds im2col's extra memory, kh * kw times the input's if unchunked.
CHUNK_BYTES = 4 * 2**20


def _padding(padding, kh: int, kw: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) zero padding for ``padding`` = "valid" | "same" | a non-negative int."""
    if isinstance(padding, str) and padding in ("valid", "same"):
        if padding == "valid":
            return 0, 0, 0, 0
        return (kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2  # an even kernel's extra row/column: bottom/right
    if is_int(padding) and padding >= 0:
        p = int(padding)
        return p, p, p, p
    raise ValueError(f"padding must be 'valid', 'same' or a non-negative int, got {padding!r}")


def _pad(a: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """``a`` (N, C, H, W) with zeros added on each side; a negative amount crops that side instead."""
    a = a[:, :, max(-top, 0) : a.shape[2] - max(-bottom, 0), max(-left, 0) : a.shape[3] - max(-right, 0)]
    top, bottom, left, right = max(top, 0), max(bottom, 0), max(left, 0), max(right, 0)
    if top == bottom == left == right == 0:
        return np.ascontiguousarray(a)
    n, c, h, w = a.shape
    out = np.zeros((n, c, h + top + bottom, w + left + right), dtype=a.dtype)
    out[:, :, top : top + h, left : left + w] = a
    return out


def _check_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, padding) -> tuple[int, int, int, int]:
    """Validate conv2d's arguments; return the (top, bottom, left, right) padding."""
    check_float_array(x, "x", ndim=4, layout="(N, C_in, H, W)")
    check_float_array(w, "w", ndim=4, layout="(C_out, C_in, kh, kw)")
    check_same_dtype(x=x, w=w)
    c_out, c_in, kh, kw = w.shape
    if x.shape[1] != c_in:
        raise ValueError(f"x has {x.shape[1]} channels but w expects C_in = {c_in} (w is (C_out, C_in, kh, kw))")
    if kh < 1 or kw < 1:
        raise ValueError(f"w must have a kernel of at least 1x1, got {kh}x{kw}")
    check_finite(w, "w")
    if b is not None:
        check_float_array(b, "b", ndim=1, layout="(C_out,)")
        if b.shape != (c_out,):
            raise ValueError(f"b must have shape ({c_out},) to match w's C_out, got {b.shape}")
        check_same_dtype(x=x, b=b)
        check_finite(b, "b")
    top, bottom, left, right = _padding(padding, kh, kw)
    hp, wp = x.shape[2] + top + bottom, x.shape[3] + left + right
    if hp < kh or wp < kw:
        raise ValueError(
            f"kernel {kh}x{kw} is larger than the input {x.shape[2]}x{x.shape[3]} padded to {hp}x{wp} "
            f"(padding={padding!r})"
        )
    return top, bottom, left, right


def _output_shape(x: np.ndarray, w: np.ndarray, pads: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    top, bottom, left, right = pads
    kh, kw = w.shape[2:]
    return x.shape[0], w.shape[0], x.shape[2] + top + bottom - kh + 1, x.shape[3] + left + right - kw + 1


def choose_method(
    c_in: int, positions: int | None = None, c_out: int | None = None, kernel=None, blas_threads: int | None = None
) -> str:
    """The fastest method for a correlation over ``c_in`` input channels, ``positions`` output positions per image
    (H_out * W; None: a large image), ``c_out`` output channels (None: as many as in), a ``kernel`` (kh, kw)
    (None: not known, so not "winograd") and NumPy's BLAS on ``blas_threads`` threads (None: as it runs now).

    "shifted" runs kh * kw matmuls with an inner dimension of C_in and adds each into the partial sums;
    "im2col" copies C_in * kh * kw values per output position for one matmul with an inner dimension of
    C_in * kh * kw, a copy that C_out outputs share. Measured on the benchmark machine (float32, 3x3 kernels):

    - below 32 channels the shifted matmuls are too thin for BLAS and the extra passes over the outputs
      dominate: shifted is 14x slower than im2col at C_in = 1 (572x572) and 1.5-2.2x slower at C_in = 3-16;
    - on large images (the paper's, 2 threads) the two stay within 10-17% from 32 channels on, shifted ahead
      from 48 channels, and shifted needs no copy;
    - on the training step's small images (at most 128x128, one thread) im2col is ahead up to 128 channels:
      1.03-1.8x faster on 11 of 15 layer shapes of the default and the paper-sized U-Net and the N = 16 batches
      (N = 4, 32 -> 64 channels at 32x32: 2.1 ms against 3.7), level or 6-7% behind where the channels halve,
      and 3x behind at 64 -> 1 (the dx of the first layer), where one output shares the whole copy;
    - from 256 channels shifted is ahead on every size (5-8% at 256 and 512 channels, one thread).

    "winograd" (3x3 kernels only) does 4 multiplications per output and channel pair where the others do 9, at
    the cost of its transforms, which grow with C_in + C_out while the matmuls grow with C_in * C_out. Against
    the pick of the rules above (one BLAS thread, thread CPU time, median of 7 alternated pairs; 2026-12-01):

    - from 64 input channels and 32 output channels on it takes 0.61-0.94 of the time on 19 of the 21 shapes
      measured: N = 16, 64 -> 64 at 64x64 50 ms against im2col's 63, N = 16, 128 -> 128 at 32x32 46 against 64,
      the default U-Net's 64- and 128-channel layers at 16x16 to 64x64 0.82-0.94, the paper-sized level's at
      64x64 and 128x128 0.72-0.87, 256 -> 256 at 64x64 and 136x136 0.66 and 0.71, 512 -> 512 at 32x32 0.61,
      1024 -> 1024 at 30x30 0.71, 64 -> 64 at 390x390 0.89; level (1.00) at N = 4, 256 -> 256 at 8x8. The one
      loss: a single 16x16 image at 64 -> 64 channels, 1.49x (0.47 ms against 0.32: too few tiles to pay for
      the per-call overhead);
    - with fewer channels the transforms dominate: 0.77-1.27 at C_in = 32 (1.06-1.27 on 3 of its 5 shapes),
      1.22-1.25 at 16 (2.4 at 16 -> 1), 1.4-1.7 at 8, 10-12x at C_in = 1, 4.6-5.3x at 64 -> 1 (the dx of the
      first layer) and 1.01 at 64 -> 16;
    - on two BLAS threads it was slower on 4 of 6 of those shapes (1.24-1.46x; N = 16, 64 -> 64: 1.38-1.42x):
      its 16 small matmuls per chunk each wake and join BLAS's threads, and its transforms run on one. So
      "auto" takes it only when NumPy's BLAS runs one thread (``blas_threads``, read through threadpoolctl where
      it is installed: ``OPENBLAS_NUM_THREADS=1`` or ``threadpool_limits(1)``) -- which is how every part of a
      batch split over threads runs (``reference/threads.py``), so on two cores a batch gets winograd too.
    """
    if blas_threads is None:
        blas_threads = threads.blas_threads()
    if (
        kernel is not None
        and tuple(kernel) == (3, 3)
        and blas_threads == 1
        and c_in >= 64
        and (c_out is None or c_out >= 32)
    ):
        return "winograd"
    if c_in < 32:
        return "im2col"
    few_outputs = c_out is not None and 2 * c_out <= c_in
    if c_in < 256 and positions is not None and positions <= 128 * 130 and not few_outputs:
        return "im2col"
    return "shifted"


def _row_chunks(h_out: int, w_in: int, w_out: int, rows: int):
    """Chunks of ``rows`` output rows: (first row, end row, first flat position, end flat position).

    Positions are flat indices q = h * w_in + v into the input (see the module docstring); the last row stops
    at v = w_out - 1 so that every tap's view stays inside the image.
    """
    for r0 in range(0, h_out, rows):
        r1 = min(r0 + rows, h_out)
        yield r0, r1, r0 * w_in, min(r1 * w_in, (h_out - 1) * w_in + w_out)


def _chunk_rows(row_bytes: int, h_out: int) -> int:
    """Output rows per chunk, so that a chunk's copies or views take about ``CHUNK_BYTES``."""
    return max(1, min(h_out, CHUNK_BYTES // max(row_bytes, 1)))


def _check_method(method: str, c_in: int, positions: int | None = None, c_out: int | None = None, kernel=None) -> str:
    """``method``, or ``choose_method``'s pick for "auto"; ValueError for an unknown name, or for "winograd" with a
    ``kernel`` (kh, kw) other than 3x3."""
    if method == "auto":
        return choose_method(c_in, positions, c_out, kernel)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or 'auto', got {method!r}")
    if method == "winograd" and kernel is not None and tuple(kernel) != (3, 3):
        raise ValueError(f"method 'winograd' needs a 3x3 kernel, got {kernel[0]}x{kernel[1]}")
    return method


def _add_bias_relu(y: np.ndarray, b: np.ndarray | None, relu: bool) -> None:
    """In place on ``y`` (..., C_out, L): add ``b[o]`` to channel o (if given), then max(y, 0) (if ``relu``)."""
    if b is not None:
        y += b[:, None]
    if relu:
        # Against a row of zeros, not the scalar 0: NumPy 2.4 has no SIMD loop for maximum with a scalar
        # operand (1.2 ns a value here, 0.26 against an array).
        np.maximum(y, np.zeros(y.shape[-1], dtype=y.dtype), out=y)


def correlate(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, relu: bool = False, method: str = "auto", out=None
):
    """Valid cross-correlation, the core of conv2d: ``x`` (N, C_in, H, W), ``w`` (C_out, C_in, kh, kw) ->
    (N, C_out, H - kh + 1, W - kw + 1), ``y[n, o, h, v] = sum_{c, i, j} w[o, c, i, j] * x[n, c, h + i, v + j]``,
    plus ``b[o]`` if given, through max(., 0) if ``relu``.

    No padding and no checks (conv2d does those). ``method`` is one of ``METHODS`` ("winograd" for 3x3 kernels
    only: ``correlate_winograd``) or "auto" (``choose_method``). Computed in the inputs' dtype. The fast methods
    add the bias and apply the ReLU to each chunk of rows while it is in cache (im2col's bias inside its matmul):
    the U-Net's first layer (one input channel, 64 output channels) spends more time writing its 83 MB output
    than multiplying, and each more pass over it costs 20-40%.
    ``out``, if given, is the C-contiguous output array to write (and return).
    """
    c_out, c_in, kh, kw = w.shape
    method = _check_method(method, c_in, (x.shape[2] - kh + 1) * x.shape[3], c_out, (kh, kw))
    if method == "winograd":
        return correlate_winograd(x, w, b, relu=relu, out=out)
    if method == "windows":
        y = correlate_windows(x, w)
        _add_bias_relu(y.reshape(*y.shape[:2], -1), b, relu)
        if out is None:
            return y
        out[...] = y
        return out

    n, _, h, wd = x.shape
    h_out, w_out = h - kh + 1, wd - kw + 1
    x_flat = np.ascontiguousarray(x).reshape(n, c_in, h * wd)
    shifts = [i * wd + j for i in range(kh) for j in range(kw)]
    if method == "im2col":
        rows = _chunk_rows((c_in * kh * kw + c_out) * wd * x.itemsize, h_out)
        w_mat = w.reshape(c_out, c_in * kh * kw)  # columns ordered (c, i, j), like the copies below
        cols_mat = np.empty((c_in * kh * kw + (b is not None), rows * wd), dtype=x.dtype)
        cols = cols_mat[: c_in * kh * kw].reshape(c_in, kh * kw, rows * wd)
        if b is not None:
            # The bias as one more column of w against a row of ones: the matmul adds it, and the pass over the
            # outputs that adding it would take is saved (at C_in = 1 the bias and ReLU passes took 75% of the
            # time of the convolution itself).
            w_mat = np.concatenate([w_mat, b[:, None]], axis=1)
            cols_mat[-1] = 1
    else:
        rows = _chunk_rows((c_in + c_out) * wd * x.itemsize, h_out)
        w_taps = np.ascontiguousarray(w.transpose(2, 3, 0, 1)).reshape(kh * kw, c_out, c_in)  # BLAS: unit stride
        partial = np.empty((c_out, rows * wd), dtype=x.dtype)
    acc = np.empty((c_out, rows * wd), dtype=x.dtype)  # one chunk of outputs, w_in wide (wrapped columns too)

    y = np.empty((n, c_out, h_out, w_out), dtype=x.dtype) if out is None else out
    zeros_row = np.zeros(rows * wd, dtype=x.dtype)  # maximum against an array: NumPy's SIMD loop (_add_bias_relu)
    for i in range(n):
        for r0, r1, q0, q1 in _row_chunks(h_out, wd, w_out, rows):
            m = q1 - q0
            if method == "im2col":
                for k, s in enumerate(shifts):
                    cols[:, k, :m] = x_flat[i, :, s + q0 : s + q1]
                np.matmul(w_mat, cols_mat[:, :m], out=acc[:, :m])
            else:
                np.matmul(w_taps[0], x_flat[i, :, q0:q1], out=acc[:, :m])
                for k in range(1, kh * kw):
                    s = shifts[k]
                    np.matmul(w_taps[k], x_flat[i, :, s + q0 : s + q1], out=partial[:, :m])
                    acc[:, :m] += partial[:, :m]
            if method == "shifted" and b is not None:
                acc[:, :m] += b[:, None]
            if relu:  # on the chunk while it is in cache, as one long run per channel
                np.maximum(acc[:, :m], zeros_row[:m], out=acc[:, :m])
            np.copyto(y[i, :, r0:r1], acc[:, : (r1 - r0) * wd].reshape(c_out, r1 - r0, wd)[:, :, :w_out])
    return y


def correlate_weight_gradient(x: np.ndarray, dy: np.ndarray, *, method: str = "auto", pads=(0, 0, 0, 0)) -> np.ndarray:
    """The weight gradient of ``correlate``: ``x`` (N, C_in, H, W) zero-padded by ``pads`` (top, bottom, left,
    right) into xp, ``dy`` (N, C_out, H_out, W_out) -> (C_out, C_in, kh, kw) with kh = H + top + bottom - H_out + 1
    (kw alike), ``dw[o, c, i, j] = sum_{n, h, v} dy[n, o, h, v] * xp[n, c, h + i, v + j]``.

    ``method`` is "windows" (the plain definition), "shifted", "winograd" (3x3 kernels: ``weight_gradient_winograd``)
    or "auto": winograd where ``choose_method`` takes it for the forward of this layer, else shifted. "shifted" is
    one (C_out, L) @ (L, C_in) matmul per tap and row chunk against the shifted flat views of the module docstring,
    taken from a channels-last copy of ``x`` so that each is a row-major block. The long inner dimension (L
    positions) keeps these matmuls fast whatever the channels; an im2col copy only added cost (1.0-1.4x slower,
    measured on the layers of the default U-Net). ``dy`` is laid into rows of the input's width with zeros in the
    wrapped columns, so they add nothing.
    """
    if method not in ("auto", "windows", "shifted", "winograd"):
        raise ValueError(f"method must be 'windows', 'shifted', 'winograd' or 'auto', got {method!r}")
    top, bottom, left, right = pads
    n, c_in, h, wd = x.shape
    c_out, h_out, w_out = dy.shape[1:]
    kh, kw = h + top + bottom - h_out + 1, wd + left + right - w_out + 1
    if method == "auto":
        forward = choose_method(c_in, h_out * (wd + left + right), c_out, (kh, kw))
        method = "winograd" if forward == "winograd" else "shifted"
    if method == "winograd":
        if (kh, kw) != (3, 3):
            raise ValueError(f"method 'winograd' needs a 3x3 kernel, got {kh}x{kw}")
        return weight_gradient_winograd(x, dy, pads)
    x = _pad(x, *pads)
    n, c_in, h, wd = x.shape
    if method == "windows":
        return weight_gradient_windows(x, dy)

    # Positions as rows, channels last: tap s then reads the row-major (L, C_in) block x_rows[i, s : s + L].
    # OpenBLAS runs (C_out, L) @ (L, C_in) products with such a block 1.1-1.9x faster than with the transposed
    # view of a channels-first image (16 -> 16 channels, L = 16,640: 58 against 30 GFLOP/s, one thread), more
    # than the one transposing copy costs.
    x_rows = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(n, h * wd, c_in)
    shifts = [i * wd + j for i in range(kh) for j in range(kw)]
    rows = _chunk_rows((c_in + c_out) * wd * x.itemsize, h_out)
    dy_wide = np.zeros((c_out, rows, wd), dtype=dy.dtype)  # columns >= w_out stay zero
    dy_flat = dy_wide.reshape(c_out, rows * wd)
    dw_taps = np.zeros((kh * kw, c_out, c_in), dtype=x.dtype)
    partial = np.empty((c_out, c_in), dtype=x.dtype)
    for i in range(n):
        for r0, r1, q0, q1 in _row_chunks(h_out, wd, w_out, rows):
            m = q1 - q0
            dy_wide[:, : r1 - r0, :w_out] = dy[i, :, r0:r1]
            for k, s in enumerate(shifts):
                np.matmul(dy_flat[:, :m], x_rows[i, s + q0 : s + q1], out=partial)
                dw_taps[k] += partial
    return dw_taps.reshape(kh, kw, c_out, c_in).transpose(2, 3, 0, 1).copy()



# %% Winograd F(2x2, 3x3): fewer multiplications for the 3x3 kernel
#
# Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", CVPR 2016 (after Winograd 1980). In one
# dimension, two outputs of a 3-tap correlation, y0 = d0 g0 + d1 g1 + d2 g2 and y1 = d1 g0 + d2 g1 + d3 g2, take
# 6 multiplications as written, but 4 as
#
#     m0 = (d0 - d2) g0,   m1 = (d1 + d2) (g0 + g1 + g2) / 2,   m2 = (d2 - d1) (g0 - g1 + g2) / 2,   m3 = (d1 - d3) g2
#     y0 = m0 + m1 + m2,   y1 = m1 - m2 - m3
#
# that is y = A^T [(G g) * (B^T d)] with
#
#           [1  0 -1  0]          [ 1    0    0 ]
#     B^T = [0  1  1  0]      G = [1/2  1/2  1/2]      A^T = [1  1  1  0]
#           [0 -1  1  0]          [1/2 -1/2  1/2]            [0  1 -1 -1]
#           [0  1  0 -1]          [ 0    0    1 ]
#
# Nested in both axes, a 2x2 block of outputs comes from a 4x4 tile d of the input (tiles overlap by 2, stride 2):
#
#     Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise, over the 4x4 "Winograd positions" (a, b))
#
# With channels, the elementwise product becomes a sum over c at each of the 16 positions: 16 matmuls
# U[ab] (C_out, C_in) @ V[ab] (C_in, tiles), where U = G g G^T is the filter transform (done once per call) and
# V = B^T d B the input transform of every tile. That is 16 multiply-adds per C_in x C_out pair per 2x2 outputs,
# 4 per output against the 9 of the definition: 2.25x fewer flops in the matmuls, paid for by the transforms
# (adds and subtracts only, a few passes over arrays about 4x the input and 4x the output) -- a trade that pays
# where the matmuls dominate, i.e. with many channels.
#
# Float32 error: each transformed input sums 4 inputs and each output 9 products' sums, all with coefficients
# +-1 (G's halves are exact), so the rounding grows by a small constant factor only. Against torch on the N = 16
# training batches (He-normal weights, 64 and 128 channels; torch's own rounding included), max |error| /
# max |y| was 4.4-5.0e-7 for the forward and dx, im2col's 5.8-6.6e-7; in float64 0.7-3.1e-15, im2col's
# 1.1-3.0e-15. The tests hold it to the tolerances of every other method. F(4x4, 3x3) (6x6 tiles, 4x fewer
# multiplications) has transform entries up to 8 and rounds correspondingly worse in float32; F(2x2, 3x3) met
# the goal, so it was not built.
#
# Layout: as in the flat methods above, a tap is a shift. The input is split by row and column parity into four
# (C_in, tile rows + 1, tile columns + 1) planes, each flattened; then tile (t, u)'s entry d[i][j] is plane
# (i % 2, j % 2) at flat index q + (i // 2) * (tile columns + 1) + j // 2, q = t * (tile columns + 1) + u: every
# term of the transforms is a contiguous slice, and one wrapped tile column per row is computed and dropped.
#
# The weight gradient takes the same tiles the other way round (``weight_gradient_winograd``): a block's share of
# the loss, sum(dY * Y) = sum(dY * A^T [U * V] A), is sum(g * G^T [(A dY A^T) * V] G), so dw is G^T Z G of the
# 16 sums Z[ab] = sum over tiles of (A dY A^T)[ab] (C_out, tiles) @ V[ab]^T (tiles, C_in): long inner dimensions,
# 4 multiplications per output and channel pair again.
WINOGRAD_BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
WINOGRAD_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
WINOGRAD_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])
WINOGRAD_MIN_TILES = 256


def winograd_filter(w: np.ndarray) -> np.ndarray:
    """The filter transform U = G g G^T of every (output, input) channel pair: ``w`` (C_out, C_in, 3, 3) ->
    (16, C_out, C_in) in w's dtype, row a * 4 + b the Winograd position (a, b).

    G's rows written out, first over the kernel's rows i, then over its columns j, on whole (C_out, C_in) planes
    (an ``einsum("ai,ocij,bj->aboc", G, w, G)`` gives the same and took 2.8 ms at 128 -> 128 channels, this 0.15).
    """
    g = np.ascontiguousarray(w.transpose(2, 3, 0, 1))  # (3, 3, C_out, C_in): g[i, j] one plane
    gi = np.empty((4, 3, *w.shape[:2]), dtype=w.dtype)  # G g: [a, j]
    gi[0], gi[3] = g[0], g[2]
    np.add(g[0], g[2], out=gi[1])
    np.subtract(gi[1], g[1], out=gi[2])
    gi[1] += g[1]
    gi[1:3] *= 0.5  # 1/2 is exact in both dtypes
    u = np.empty((4, 4, *w.shape[:2]), dtype=w.dtype)  # G g G^T: [a, b]
    u[:, 0], u[:, 3] = gi[:, 0], gi[:, 2]
    np.add(gi[:, 0], gi[:, 2], out=u[:, 1])
    np.subtract(u[:, 1], gi[:, 1], out=u[:, 2])
    u[:, 1] += gi[:, 1]
    u[:, 1:3] *= 0.5
    return u.reshape(16, *w.shape[:2])


def _winograd_tiling(n: int, th: int, w1: int, c_in: int, c_out: int, itemsize: int):
    """How the tiles are processed: ``(group, row_chunks, cols)``.

    Tile rows per chunk: about CHUNK_BYTES of transforms and products, but at least WINOGRAD_MIN_TILES tiles, so
    that the matmuls stay long enough for BLAS when the channels are many. Where that is more than an image
    (small images), a chunk is a ``group`` of whole images, their planes one after the other, each with one more
    tile row: the row that straddles into the next image, computed and dropped like the wrapped column. Else a
    chunk is tile rows t0..t1 of one image (``row_chunks``). ``cols``: tiles per chunk, at most.
    """
    rows = max(_chunk_rows((24 * c_in + 25 * c_out) * w1 * itemsize, th), min(th + 1, -(-WINOGRAD_MIN_TILES // w1)))
    group = max(1, min(n, rows // (th + 1)))  # images per chunk
    if group > 1:
        return group, [(0, th)], group * (th + 1) * w1
    rows = min(rows, th)
    rows = -(-th // -(-th // rows))  # as many chunks, of equal size: 8 + 8 + 8 + 8 rows, not 10 + 10 + 10 + 2
    return 1, [(t0, min(th, t0 + rows)) for t0 in range(0, th, rows)], rows * w1


def _parity_planes(x: np.ndarray, pads, th: int, w1: int, group: int):
    """Room for ``group`` images of ``x`` (N, C, H, W) zero-padded by ``pads`` (top, bottom, left, right; none
    negative), split by row and column parity: ``(planes, fill)``. ``planes`` (2, 2, C, group * (th + 1) * w1 + w1
    + 1) holds at [p, q, c, (g * (th + 1) + t) * w1 + u] the padded x[g0 + g, c, 2t + p, 2u + q] once ``fill(g0,
    g1)`` has copied images g0..g1 in; everything outside the image stays zero (the padding, and the spare zeros
    that the last tiles' shifted reads reach)."""
    _, c, h, wd = x.shape
    top, _, left, _ = pads
    plane = (th + 1) * w1  # one image's plane, flattened
    planes = np.zeros((2, 2, c, group * plane + w1 + 1), dtype=x.dtype)  # [row parity, column parity]
    planes_2d = planes[..., : group * plane].reshape(2, 2, c, group, th + 1, w1)
    # Padded row top + r of x is row (top + r) // 2 of the planes of parity (top + r) % 2; so for each parity p,
    # x's rows r0, r0 + 2, ... (r0 = (p - top) % 2) go to the plane rows from (top + r0) // 2 on; columns alike.
    blocks = []
    for p in range(2):
        r0 = (p - top) % 2
        for q in range(2):
            c0 = (q - left) % 2
            rows_to, cols_to = slice((top + r0) // 2, None), slice((left + c0) // 2, None)
            nr, nc = len(range(r0, h, 2)), len(range(c0, wd, 2))
            target = planes_2d[p, q, :, :, rows_to, cols_to][:, :, :nr, :nc]  # (C, group, nr, nc)
            blocks.append((target, r0, c0))

    def fill(g0: int, g1: int) -> None:
        for target, r0, c0 in blocks:  # four copies with one strided side each: faster than one 5-d transpose
            np.copyto(target[:, : g1 - g0], x[g0:g1, :, r0::2, c0::2].transpose(1, 0, 2, 3))

    return planes, fill


def _winograd_buffers(c: int, cols: int, w1: int, dtype):
    """Room for ``_winograd_input`` on chunks of up to ``cols`` tiles of ``c`` channels: (block, r, v)."""
    size = c * (cols + w1 + 1)
    block = np.zeros((2, 2, size + w1 + 1), dtype=dtype)  # the spare zeros are read into dropped tiles only
    return block, np.empty((4, 2, size + 1), dtype=dtype), np.empty((4, 4, size), dtype=dtype)


def _winograd_input(planes, q0: int, k: int, w1: int, block, r, v) -> np.ndarray:
    """The input transform V = B^T d B of the ``k`` tiles from flat index ``q0`` of ``planes`` (tile q's entry
    d[i][j] is plane (i % 2, j % 2) at q + (i // 2) * w1 + j // 2) -> (16, C, k), a view into ``v`` (``block``,
    ``r`` and ``v`` from ``_winograd_buffers``).

    The planes' values of every channel go first into one contiguous ``block``, each channel with one tile row and
    one value more than its k tiles read: the eight passes then run over whole contiguous arrays, and only the
    extra row's tiles, never returned, read into the next channel (so a NaN stays in its own channel, as in the
    other methods). Over the (C, k) slices of the planes themselves they took 2-2.5x as long, copy included (one
    thread, 16-128 channels; NumPy runs a pass over strided rows of a few hundred values much slower than one
    long run).
    """
    c, span = planes.shape[2], k + w1 + 1  # per channel: the k tiles, the dropped row, the last tile's reach
    size = c * span
    np.copyto(block[..., :size].reshape(2, 2, c, span), planes[..., q0 : q0 + span])
    # B^T d over the tile's 4 rows: rows 0, 1 are planes (0, .), (1, .) at q; rows 2, 3 the same a row on.
    d0, d1 = block[0, :, : size + 1], block[1, :, : size + 1]
    d2, d3 = block[0, :, w1 : w1 + size + 1], block[1, :, w1 : w1 + size + 1]
    np.subtract(d0, d2, out=r[0, :, : size + 1])
    np.add(d1, d2, out=r[1, :, : size + 1])
    np.subtract(d2, d1, out=r[2, :, : size + 1])
    np.subtract(d1, d3, out=r[3, :, : size + 1])
    # (B^T d) B over the 4 columns: columns 0, 1 are parities 0, 1 at q, columns 2, 3 the same one on.
    e0, e1, e2, e3 = r[:, 0, :size], r[:, 1, :size], r[:, 0, 1 : size + 1], r[:, 1, 1 : size + 1]
    np.subtract(e0, e2, out=v[:, 0, :size])
    np.add(e1, e2, out=v[:, 1, :size])
    np.subtract(e2, e1, out=v[:, 2, :size])
    np.subtract(e1, e3, out=v[:, 3, :size])
    return v[:, :, :size].reshape(16, c, span)[:, :, :k]


def correlate_winograd(
    x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, relu: bool = False, pads=(0, 0, 0, 0), out=None
):
    """``correlate`` for a 3x3 kernel by Winograd F(2x2, 3x3) (see the notes above), of ``x`` (N, C_in, H, W)
    zero-padded by ``pads`` (top, bottom, left, right; a negative amount crops): ``w`` (C_out, C_in, 3, 3) ->
    (N, C_out, H + top + bottom - 2, W + left + right - 2), plus ``b``, through max(., 0) if ``relu``.

    The padding costs no extra pass: it is the zeros around the input in its four parity planes. Odd output
    sizes are computed up to the next even size (one more zero row or column) and cropped. Per image: split the
    input into its parity planes (four strided copies), then per chunk of tile rows the input transform B^T d B
    (4 + 4 slice expressions over all channels), the 16 matmuls, the output transform A^T m A (4 + 4), whose last
    step writes the 2x2 blocks straight into the output (``out``, if given: the C-contiguous array to write and
    return).
    """
    if min(pads) < 0:
        x, pads = _pad(x, *pads), (0, 0, 0, 0)
    top, bottom, left, right = pads
    n, c_in, h, wd = x.shape
    c_out = w.shape[0]
    h_out, w_out = h + top + bottom - 2, wd + left + right - 2
    th, tw = (h_out + 1) // 2, (w_out + 1) // 2  # tile rows and columns
    w1 = tw + 1  # a plane's row: tw tiles and the one wrapped column
    u = winograd_filter(w)  # (16, C_out, C_in)
    group, row_chunks, cols = _winograd_tiling(n, th, w1, c_in, c_out, x.itemsize)
    planes, fill = _parity_planes(x, pads, th, w1, group)
    buffers = _winograd_buffers(c_in, cols, w1, x.dtype)  # for B^T d and B^T d B
    m = np.empty((4, 4, c_out, cols), dtype=x.dtype)  # U * V summed over channels: the 16 matmuls
    s = np.empty((2, 4, c_out, cols), dtype=x.dtype)  # A^T m
    tmp = np.empty((c_out, cols), dtype=x.dtype)
    blocks = np.empty((2, c_out, cols, 2), dtype=x.dtype)  # A^T m A: [a, o, tile, b], each block row's pair together
    zeros_row = np.zeros(2 * cols, dtype=x.dtype)

    full = (n, c_out, 2 * th, 2 * tw)
    y = out if out is not None and out.shape == full else np.empty(full, dtype=x.dtype)
    for g0 in range(0, n, group):
        g1 = min(n, g0 + group)
        fill(g0, g1)
        # [o, g, t, a, u, b] = y[g0 + g, o, 2t + a, 2u + b]
        y_blocks = y[g0:g1].reshape(g1 - g0, c_out, th, 2, tw, 2).transpose(1, 0, 2, 3, 4, 5)
        for t0, t1 in row_chunks:
            nt = t1 - t0 if group == 1 else th + 1  # tile rows per image in this chunk, the dropped one included
            k, q0 = (g1 - g0) * nt * w1, t0 * w1
            v = _winograd_input(planes, q0, k, w1, *buffers)
            np.matmul(u, v, out=m.reshape(16, c_out, cols)[:, :, :k])
            # A^T m over the rows of the 4x4 positions, then (A^T m) A over the columns into the 2x2 blocks.
            mk, sk, tk = m[..., :k], s[..., :k], tmp[:, :k]
            if b is not None:  # A^T's column 1 is all ones: b added at position (1, 1) reaches all 4 outputs
                mk[1, 1] += b[:, None]
            np.add(mk[0], mk[1], out=sk[0])
            sk[0] += mk[2]
            np.subtract(mk[1], mk[2], out=sk[1])
            sk[1] -= mk[3]
            # The last step of A^T m A over whole arrays, each tile's two outputs of a block row side by side in
            # ``blocks``: a row of tiles is then a row of y, and one copy (runs of 2 * tw) drops the dropped
            # tiles and puts the rows in place. Writing the four results straight into y's strided 2x2 pattern,
            # tw values at a time, took 5-10% longer for the whole convolution (one thread, 32x32 to 64x64).
            bk = blocks[:, :, :k]
            for a in range(2):
                np.add(sk[a, 0], sk[a, 1], out=tk)
                np.add(tk, sk[a, 2], out=bk[a, ..., 0])
                np.subtract(sk[a, 1], sk[a, 2], out=tk)
                np.subtract(tk, sk[a, 3], out=bk[a, ..., 1])
            if relu:
                runs = blocks.reshape(2 * c_out, 2 * cols)[:, : 2 * k]
                np.maximum(runs, zeros_row[: 2 * k], out=runs)
            kept = bk.reshape(2, c_out, g1 - g0, nt, w1, 2)[:, :, :, : t1 - t0, :tw]  # [a, o, g, t, u, b]
            np.copyto(y_blocks[:, :, t0:t1], kept.transpose(1, 2, 3, 0, 4, 5))
    if y is out:
        return out
    if out is not None:
        out[...] = y[:, :, :h_out, :w_out]
        return out
    return y if full[2:] == (h_out, w_out) else np.ascontiguousarray(y[:, :, :h_out, :w_out])


def weight_gradient_winograd(x: np.ndarray, dy: np.ndarray, pads=(0, 0, 0, 0)) -> np.ndarray:
    """The weight gradient of a 3x3 correlation by Winograd F(2x2, 3x3) transposed: ``x`` (N, C_in, H, W)
    zero-padded by ``pads``, ``dy`` (N, C_out, H_out, W_out) with H_out = H + top + bottom - 2 (W_out alike) ->
    dw (C_out, C_in, 3, 3) in x's dtype, equal to ``correlate_weight_gradient`` of the padded x.

    The forward's identity read backwards: a 2x2 block of outputs is Y = A^T [(G g G^T) * V] A with V = B^T d B,
    so its share of the loss, sum(dY * Y), is sum(g * G^T [(A dY A^T) * V] G) (move each matrix to the other side
    of the inner product), and the share of the block in dw is G^T [(A dY A^T) * V] G. Summed over every tile and
    image, that is 16 (C_out, tiles) @ (tiles, C_in) matmuls, Z[ab] @ V[ab]^T with Z = A dY A^T, whose long inner
    dimension BLAS runs well, then G^T . G on the (C_out, C_in) sums: again 4 multiplications per output and
    channel pair instead of 9. The tiles are the forward's (same planes, same input transform); dy is laid into
    parity planes of its own with zeros in the dropped row and column, so those add nothing.
    """
    if min(pads) < 0:
        x, pads = _pad(x, *pads), (0, 0, 0, 0)
    n, c_in = x.shape[:2]
    c_out, h_out, w_out = dy.shape[1:]
    th, tw = (h_out + 1) // 2, (w_out + 1) // 2
    w1 = tw + 1
    group, row_chunks, cols = _winograd_tiling(n, th, w1, c_in, c_out, x.itemsize)
    planes, fill = _parity_planes(x, pads, th, w1, group)
    dy_planes, dy_fill = _parity_planes(dy, (0, 0, 0, 0), th, w1, group)  # [a, b, o, q] = dy[.., o, 2t + a, 2u + b]
    buffers = _winograd_buffers(c_in, cols, w1, x.dtype)
    z = np.empty((4, 2, c_out, cols), dtype=x.dtype)  # A dY over the rows: [row i of A, column parity]
    zz = np.empty((4, 4, c_out, cols), dtype=x.dtype)  # A dY A^T
    sums = np.zeros((16, c_out, c_in), dtype=x.dtype)
    partial = np.empty_like(sums)
    for g0 in range(0, n, group):
        g1 = min(n, g0 + group)
        fill(g0, g1)
        dy_fill(g0, g1)
        for t0, t1 in row_chunks:
            nt = t1 - t0 if group == 1 else th + 1
            k, q0 = (g1 - g0) * nt * w1, t0 * w1
            v = _winograd_input(planes, q0, k, w1, *buffers)
            # A = A^T's transpose has rows (1, 0), (1, 1), (1, -1), (0, -1); the last row's sign is applied to
            # the sums at the end, so here it is (0, 1), a copy.
            y0, y1 = dy_planes[0, :, :, q0 : q0 + k], dy_planes[1, :, :, q0 : q0 + k]  # (2, C_out, k)
            zk, zzk = z[..., :k], zz[..., :k]
            np.copyto(zk[0], y0)
            np.add(y0, y1, out=zk[1])
            np.subtract(y0, y1, out=zk[2])
            np.copyto(zk[3], y1)
            e0, e1 = zk[:, 0], zk[:, 1]  # over the columns, the same
            np.copyto(zzk[:, 0], e0)
            np.add(e0, e1, out=zzk[:, 1])
            np.subtract(e0, e1, out=zzk[:, 2])
            np.copyto(zzk[:, 3], e1)
            np.matmul(zz.reshape(16, c_out, cols)[:, :, :k], v.transpose(0, 2, 1), out=partial)
            sums += partial
    sign = np.array([1, 1, 1, -1])
    g_signed = WINOGRAD_G * sign[:, None]  # (4, 3): A's dropped signs, row 3 and column 3
    to_taps = np.kron(g_signed, g_signed).T.astype(x.dtype)  # (9, 16): [i * 3 + j, a * 4 + b] = G[a, i] G[b, j]
    dw = to_taps @ sums.reshape(16, c_out * c_in)
    return np.ascontiguousarray(dw.reshape(3, 3, c_out, c_in).transpose(2, 3, 0, 1))


def _correlate_padded(x, w, b, pads, *, relu: bool, method: str, out=None) -> np.ndarray:
    """``correlate`` of ``x`` zero-padded by ``pads`` into ``out`` (if given), the batch split over BLAS's threads
    (``threads.over_batch``): winograd pads as it splits the input, the others take a padded copy."""
    n, _, h, wd = x.shape
    c_out, c_in, kh, kw = w.shape
    top, bottom, left, right = pads
    if out is None:
        out = np.empty((n, c_out, h + top + bottom - kh + 1, wd + left + right - kw + 1), dtype=x.dtype)

    def part(start: int, stop: int) -> None:
        # The method is chosen here, inside the part: on a split, BLAS runs one thread (choose_method).
        chosen = _check_method(method, c_in, (h + top + bottom - kh + 1) * (wd + left + right), c_out, (kh, kw))
        if chosen == "winograd":
            correlate_winograd(x[start:stop], w, b, relu=relu, pads=pads, out=out[start:stop])
        else:
            correlate(_pad(x[start:stop], *pads), w, b, relu=relu, method=chosen, out=out[start:stop])

    threads.over_batch(part, n)
    return out


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, padding="valid", *, method: str = "auto"):
    """Convolution (cross-correlation) of ``x`` (N, C_in, H, W) with ``w`` (C_out, C_in, kh, kw), plus ``b`` (C_out,).

    Stride 1; ``padding`` "valid" | "same" | int (see the module docstring). ``method`` is how the sums are
    computed: one of ``METHODS`` ("windows" is the plain definition, slow and clear) or "auto" (the fastest for
    the shape, ``choose_method``); all give the same numbers up to float rounding. Returns ``(y, cache)``: ``y``
    (N, C_out, H_out, W_out) in the inputs' dtype (float32 or float64, all alike), equal to
    ``F.conv2d(x, w, b, padding=padding)``; ``cache`` what ``conv2d_backward`` needs (``x``, ``w``, the padding,
    the method).
    """
    pads = _check_conv(x, w, b, padding)
    _check_method(method, x.shape[1], kernel=w.shape[2:])
    y = _correlate_padded(x, w, b, pads, relu=False, method=method)
    return y, {"layer": "conv2d", "x": x, "w": w, "pads": pads, "method": method}


def conv2d_backward(dy: np.ndarray, cache: dict, *, method: str | None = None):
    """Gradients of ``conv2d`` -> ``(dx, dw, db)`` shaped like ``x``, ``w`` and (C_out,).

    ``dy`` has the forward output's shape (N, C_out, H_out, W_out); ``cache`` is the one ``conv2d`` returned.
    Formulas in the module docstring: dw correlates the padded ``x`` with ``dy``; dx correlates ``dy``, padded by
    kh - 1 - top rows on top (and so on; a negative amount crops), with ``w`` flipped and transposed to
    (C_in, C_out, kh, kw). ``method`` (default: the forward's) computes dx's correlation; dw takes the plain
    definition under "windows" and its one fast method ("shifted") otherwise.
    """
    check_cache(cache, "conv2d")
    return _conv2d_backward(dy, cache, method)


def _conv2d_backward(dy: np.ndarray, cache: dict, method: str | None):
    x, w, pads = cache["x"], cache["w"], cache["pads"]
    method = cache.get("method", "auto") if method is None else method
    _check_method(method, w.shape[0], kernel=w.shape[2:])
    check_float_array(dy, "dy", ndim=4, layout="(N, C_out, H_out, W_out)")
    expected = _output_shape(x, w, pads)
    if dy.shape != expected:
        raise ValueError(f"dy must have the output shape {expected}, got {dy.shape}")
    check_same_dtype(dy=dy, x=x)
    top, bottom, left, right = pads
    kh, kw = w.shape[2:]
    w_flipped = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))  # (C_in, C_out, kh, kw)
    dx_pads = (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)
    dx = np.empty(x.shape, dtype=x.dtype)
    dw_method = method if method in ("windows", "winograd") else "auto"  # dw has no im2col: it only added cost

    def part(start: int, stop: int):  # dx of these images; their shares of dw and db
        _correlate_padded(dy[start:stop], w_flipped, None, dx_pads, relu=False, method=method, out=dx[start:stop])
        dw = correlate_weight_gradient(x[start:stop], dy[start:stop], method=dw_method, pads=pads)
        return dw, dy[start:stop].sum(axis=(0, 2, 3))

    dws, dbs = zip(*threads.over_batch(part, x.shape[0]))
    return dx, np.sum(dws, axis=0), np.sum(dbs, axis=0)


def relu(x: np.ndarray):
    """max(x, 0) elementwise, any shape, float32/float64 (Nair & Hinton 2010; ``F.relu``) -> ``(y, cache)``."""
    check_float_array(x, "x")
    y = np.maximum(x, 0)
    return y, {"layer": "relu", "y": y}


def _relu_backward(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``dy`` where the ReLU's output ``y`` is positive (exactly where its input was), else 0.

    Written as ``dy * (y > 0)``: for a finite ``dy`` the product with the 0/1 mask is the selection
    ``np.where(y > 0, dy, 0)`` exactly, and it runs 9x faster here (0.45 ms against 4.0 ms on a (4, 16, 128, 128)
    float32 map, whose random mask defeats the branch prediction of ``where``). A NaN or infinity times 0 is NaN,
    though, so a non-finite ``dy`` takes ``where``: the bad value stays on the units the ReLU let through.
    """
    check_float_array(dy, "dy")
    if dy.shape != y.shape:
        raise ValueError(f"dy must have the output shape {y.shape}, got {dy.shape}")
    check_same_dtype(dy=dy, y=y)
    if not np.isfinite(dy).all():
        return np.where(y > 0, dy, 0).astype(y.dtype, copy=False)
    return dy * (y > 0)


def relu_backward(dy: np.ndarray, cache: dict) -> np.ndarray:
    """Gradient of ``relu``: ``dy`` where x > 0, else 0 -- 0 at the kink x == 0, as in torch.

    ``cache`` is the one ``relu`` returned; it holds the output y, positive exactly where x is.
    """
    check_cache(cache, "relu")
    return _relu_backward(dy, cache["y"])


def conv2d_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, padding="valid", *, method: str = "auto"):
    """``relu(conv2d(x, w, b, padding))`` in one call: the U-Net's 3x3 convolution + ReLU (Ronneberger et al.
    2015, Fig. 1). Shapes, dtypes and ``method`` as in ``conv2d``; the ReLU is applied as the convolution's rows
    are produced (see ``correlate``). Returns ``(y, cache)``, the cache for ``conv2d_relu_backward``."""
    pads = _check_conv(x, w, b, padding)
    _check_method(method, x.shape[1], kernel=w.shape[2:])
    y = _correlate_padded(x, w, b, pads, relu=True, method=method)
    return y, {"layer": "conv2d_relu", "x": x, "w": w, "pads": pads, "method": method, "y": y}


def conv2d_relu_backward(dy: np.ndarray, cache: dict, *, method: str | None = None):
    """Gradients of ``conv2d_relu`` -> ``(dx, dw, db)``, from the cache ``conv2d_relu`` returned; ``method`` as in
    ``conv2d_backward``.

    y = max(z, 0) is positive exactly where the pre-activation z is, so the output ``y`` (kept in the cache) tells
    the ReLU's backward all it needs: dz = dy where y > 0, else 0; then conv2d_backward(dz, ...).
    """
    check_cache(cache, "conv2d_relu")
    check_float_array(dy, "dy", ndim=4, layout="(N, C_out, H_out, W_out)")
    return _conv2d_backward(_relu_backward(dy, cache["y"]), cache, method)
