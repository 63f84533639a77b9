# %% [markdown]
# # Lesson 1: a 3x3 convolution + ReLU
#
# Teaches `unet_from_scratch/reference/conv.py`. Every blue arrow of the U-Net figure (Ronneberger et al. 2015,
# Fig. 1) is "conv 3x3, ReLU". The notes describe it with an input feature map `a` of 5 channels, a 3x3 kernel
# with weights w(i, j, k, l) -- i, j the spatial position in the kernel, k the input channel, l which of 45
# filters -- a bias c, and one output value
#
#     b(x, y, l) = ReLU( sum_{i, j, k} w(i, j, k, l) * a(x + i, y + j, k) + c(l) )
#
# This lesson computes one such value by hand, then all of them with `conv2d_relu`, and checks they agree. Then it
# counts output sizes ("valid" convolutions shrink the map), measures how the receptive field grows with depth,
# and puts the textbook loop beside the fast strategies of `conv.py`: same numbers.
#
# Run: `python lessons/01_conv.py [--out DIR] [--fast]`.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start

from unet_from_scratch.reference import conv2d, conv2d_backward, conv2d_relu, he_normal
from unet_from_scratch.reference.conv import METHODS, correlate

lesson = start("01_conv", "a 3x3 convolution + ReLU")
rng = np.random.default_rng(0)

# %% [markdown]
# ## One output value by hand
#
# The notes' example: a 5x5 input with 5 channels and 45 filters of 3x3. The package uses torch's layouts:
# the input is (N, C_in, H, W) and the weights are (C_out, C_in, kh, kw), so the notes' w(i, j, k, l) is
# `w[l, k, i, j]`. A filter covers a 3x3x5 block of the input: 45 multiply-adds, plus its bias, then the ReLU.
# Like every layer of the reference, `conv2d` and `conv2d_relu` return `(y, cache)`: the output, and what the
# backward (`conv2d_backward(dy, cache)`) will need.

# %%
section("one output value by hand")
a = rng.standard_normal((1, 5, 5, 5))  # (N, C_in, H, W): one 5x5 image with 5 channels
w = he_normal((45, 5, 3, 3), rng, dtype=np.float64)  # (C_out, C_in, kh, kw): 45 filters of 3x3x5
c = rng.standard_normal(45) * 0.1  # one bias per filter

z, _ = conv2d(a, w, c)  # the sums before the ReLU, used only to pick two instructive positions below
b, _ = conv2d_relu(a, w, c)  # every output value at once
for l, x, y in [np.unravel_index(z[0].argmax(), z[0].shape), np.unravel_index(z[0].argmin(), z[0].shape)]:
    total = 0.0
    for i in range(3):
        for j in range(3):
            for k in range(5):
                total += w[l, k, i, j] * a[0, k, x + i, y + j]
    pre_activation = total + c[l]
    by_hand = max(pre_activation, 0.0)
    print(f"  b(x={x}, y={y}, l={l}) by hand: ReLU({pre_activation:+.5f}) = {by_hand:.5f}; "
          f"conv2d_relu: {b[0, l, x, y]:.5f}")
    check_close("the hand-computed value equals conv2d_relu's", b[0, l, x, y], by_hand, atol=1e-12)
check("conv2d_relu is ReLU applied to conv2d", np.array_equal(b, np.maximum(z, 0)))
check("ReLU leaves no negative value", b.min() >= 0)
print(f"  {np.mean(b == 0):.0%} of the outputs are exactly 0: the ReLU cut their negative pre-activation")

# %% [markdown]
# ## Output sizes: the notes get this one wrong
#
# The notes say the 45 filters give "an output feature map of dimensions height x width x 45 (assuming no
# padding and stride of 1)". Without padding that is not so: a 3x3 window fits in a 5x5 image at only 3 x 3
# positions, so the output is **3 x 3 x 45**. A "valid" convolution with a k x k kernel maps H to H - k + 1: each
# 3x3 convolution trims one pixel on every side. Only with padding ("same", one ring of zeros) does the size stay
# 5 x 5. The U-Net uses valid convolutions, so its first two layers take 572 to 570 to 568.

# %%
section("output sizes of valid convolutions")
print(f"  5x5x5 input, 45 filters, no padding: output {b.shape[1:]} (channels, H, W)")
check("no padding: the 5x5 input gives a 3x3 map per filter", b.shape == (1, 45, 3, 3))
check("padding='same' keeps 5x5", conv2d_relu(a, w, c, padding="same")[0].shape == (1, 45, 5, 5))
for h, k in [(5, 3), (572, 3), (570, 3), (7, 5), (4, 1)]:
    out, _ = conv2d(np.zeros((1, 1, h, h)), np.ones((1, 1, k, k)))
    print(f"  {h}x{h} input, {k}x{k} kernel -> {out.shape[2]}x{out.shape[3]}")
    check(f"H_out = H - k + 1 for H={h}, k={k}", out.shape[2] == h - k + 1)

# %% [markdown]
# ## Receptive field: how much of the input one output sees
#
# One output of a 3x3 convolution sees a 3x3 patch. Stack a second one and each of its outputs sees 3x3 outputs
# of the first, each of which saw 3x3 inputs: a 5x5 patch. In general n stacked 3x3 convolutions see
# (2n + 1) x (2n + 1). We measure it rather than trust it: the gradient of one output with respect to the input
# (`conv2d_backward`, applied layer after layer to the caches the forward left) is non-zero exactly on the inputs
# that output depends on. With all-positive weights no term can cancel, so the non-zero region is the whole
# receptive field.

# %%
section("receptive field of stacked 3x3 convolutions")
depths = range(1, 5 if lesson.fast else 9)
fields = {}
for n in depths:
    size = 2 * n + 9
    kernels = [np.abs(rng.standard_normal((1, 1, 3, 3))) + 0.1 for _ in range(n)]
    out, caches = np.ones((1, 1, size, size)), []
    for k in kernels:
        out, cache = conv2d(out, k)
        caches.append(cache)
    dy = np.zeros_like(out)
    centre = dy.shape[2] // 2
    dy[0, 0, centre, centre] = 1.0  # "which inputs does this one output depend on?"
    for cache in reversed(caches):
        dy, _, _ = conv2d_backward(dy, cache)
    rows = np.flatnonzero(np.abs(dy[0, 0]).sum(axis=1) > 0)
    fields[n] = dy[0, 0]
    width = rows[-1] - rows[0] + 1
    print(f"  {n} layer(s): receptive field {width}x{width}")
    check(f"{n} stacked 3x3 convolutions see 2n + 1 = {2 * n + 1} pixels across", width == 2 * n + 1)

fig, axes = plt.subplots(1, len(fields), figsize=(2.2 * len(fields), 2.4))
for ax, (n, field) in zip(axes, fields.items()):
    ax.imshow(field > 0, cmap="Blues", vmin=0, vmax=1.3)
    ax.set_title(f"{n} conv{'s' if n > 1 else ''}: {2 * n + 1}x{2 * n + 1}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle("inputs that one output depends on (receptive field)", fontsize=10)
lesson.save(fig, "receptive_field")

# %% [markdown]
# ## The textbook loop beside the fast strategy
#
# The definition is four nested loops (filter, row, column, and the sum over the window). `conv.py` computes the
# same sum four ways (`METHODS`): "windows" (every window as a strided view, summed by `einsum`), "im2col" (the
# windows copied into one matrix, then one matrix product), "shifted" (one matrix product per kernel tap on
# shifted views of the flattened image, no copy) and "winograd" (3x3 kernels only, Winograd's F(2x2, 3x3): 4
# multiplications per output and channel pair, not 9); `conv2d_relu` picks by shape (`choose_method`): "winograd"
# from 64 input channels and 32 outputs on when NumPy's BLAS runs one thread (as each part of a batch does when
# it is split over the cores, `reference/threads.py`), else "im2col" below 32 input channels and, up to 256
# channels, on images of at most 128x128 unless the outputs are at most half the inputs, "shifted" elsewhere;
# `method=` names one. All must give the loop's numbers, up to float rounding.

# %%
section("textbook loop vs the fast strategies")


def conv2d_relu_loop(x, w, b):
    """The definition, one output value at a time (the sum over each window vectorised, nothing else)."""
    n, _, h, wd = x.shape
    c_out, _, kh, kw = w.shape
    y = np.empty((n, c_out, h - kh + 1, wd - kw + 1), dtype=x.dtype)
    for i in range(n):
        for o in range(c_out):
            for r in range(y.shape[2]):
                for s in range(y.shape[3]):
                    y[i, o, r, s] = max(np.sum(w[o] * x[i, :, r : r + kh, s : s + kw]) + b[o], 0.0)
    return y


side, c_in, c_out = (10, 5, 8) if lesson.fast else (20, 16, 45)
x = rng.standard_normal((1, c_in, side, side)).astype(np.float32)
wt = he_normal((c_out, c_in, 3, 3), rng)
bias = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
t0 = time.perf_counter()
loop = conv2d_relu_loop(x, wt, bias)
t_loop = time.perf_counter() - t0
t0 = time.perf_counter()
fast, _ = conv2d_relu(x, wt, bias)
t_fast = time.perf_counter() - t0
print(f"  {c_in} channels, {side}x{side}, {c_out} filters: loop {t_loop * 1e3:.1f} ms, "
      f"conv2d_relu {t_fast * 1e3:.2f} ms")
check("conv2d_relu equals the textbook loop (float32)", np.allclose(fast, loop, atol=1e-5, rtol=1e-5))
for method in METHODS:
    y = correlate(x, wt, bias, relu=True, method=method)
    check(f"method {method!r} equals the loop", np.allclose(y, loop, atol=1e-5, rtol=1e-5))

# %% [markdown]
# ## The main figure: one input channel, one filter, its feature map
#
# The 45 filters each give one feature map; a filter with learned weights lights up where its pattern occurs.
# Here a hand-made vertical-edge filter on a small image shows what the sum and the ReLU do: the sum responds
# with a sign to the edge, the ReLU keeps the positive side only.

# %%
section("what one filter does to an image")
img = np.zeros((1, 1, 24, 24))
img[0, 0, 6:18, 8:16] = 1.0  # a bright rectangle
edge = np.array([[[[-1.0, 0.0, 1.0]] * 3]])  # (1, 1, 3, 3): responds to dark-to-bright, left to right
pre, _ = conv2d(img, edge)
post, _ = conv2d_relu(img, edge)
check("valid 3x3 on 24x24 gives 22x22", post.shape == (1, 1, 22, 22))
check("the left edge (dark to bright) survives the ReLU", post.max() == 3.0)
check("the right edge (bright to dark) is cut by the ReLU", pre.min() == -3.0 and post.min() == 0.0)

fig, axes = plt.subplots(1, 4, figsize=(11, 3))
axes[0].imshow(img[0, 0], cmap="gray")
axes[0].set_title("input a (24x24)")
axes[1].imshow(edge[0, 0], cmap="RdBu_r", vmin=-1, vmax=1)
axes[1].set_title("filter w (3x3)")
for r in range(3):
    for s in range(3):
        axes[1].text(s, r, f"{edge[0, 0, r, s]:+.0f}", ha="center", va="center")
im = axes[2].imshow(pre[0, 0], cmap="RdBu_r", vmin=-3, vmax=3)
axes[2].set_title("sum w·a + c (22x22)")
axes[3].imshow(post[0, 0], cmap="RdBu_r", vmin=-3, vmax=3)
axes[3].set_title("ReLU(...) = b")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(im, ax=axes[2:], shrink=0.8)
fig.suptitle("3x3 convolution + ReLU: the valid output is 2 pixels smaller", fontsize=10)
lesson.save(fig)
print("\nlesson 01 done: every check passed")
