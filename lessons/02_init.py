# %% [markdown]
# # Lesson 2: he_normal, the paper's weight initialisation
#
# Teaches `unet_from_scratch/reference/init.py`. The paper (Sec. 3): "the initial weights should be adapted such
# that each feature map in the network has approximately unit variance ... drawing the initial weights from a
# Gaussian distribution with a standard deviation of sqrt(2/N), where N denotes the number of incoming nodes of
# one neuron. E.g. for a 3x3 convolution and 64 feature channels in the previous layer N = 9 * 64 = 576."
#
# The notes take the formula from Keras' `kernel_initializer="he_normal"` and draw one 3x3 filter with
# `np.random.normal(0, np.sqrt(2 / 9), (3, 3))`. That is right for a filter over a single input channel; in a
# U-Net layer the fan-in counts the input channels too (9 * 64 = 576 in the example above).
#
# This lesson checks both standard deviations, then shows *why* the factor 2 matters: through 20 conv + ReLU
# layers the activations keep their scale with He's init and vanish or explode with the others. Last, the
# truncated variant that the notes mention ("some implementations might truncate extreme values").
#
# Run: `python lessons/02_init.py [--out DIR] [--fast]`.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start

from unet_from_scratch.reference import conv2d_relu, glorot_uniform, he_normal
from unet_from_scratch.reference.init import TRUNCATED_STD, fans

lesson = start("02_init", "he_normal: std = sqrt(2 / fan_in)")
rng = np.random.default_rng(0)

# %% [markdown]
# ## The standard deviation for fan_in = 9 and fan_in = 576
#
# fan_in is the number of inputs one output sums: C_in * kh * kw for a convolution weight of shape
# (C_out, C_in, kh, kw), the same rule as torch (`fans`). One sample's standard deviation is noisy (the notes'
# nine numbers could come out anywhere near 0.47), so we draw many filters and measure.

# %%
section("std = sqrt(2 / fan_in)")
for shape in [(20000, 1, 3, 3), (64, 64, 3, 3)]:
    fan_in = fans(shape)[0]
    std = math.sqrt(2 / fan_in)
    w = he_normal(shape, rng, dtype=np.float64)
    print(f"  weight {shape}: fan_in = {fan_in}, sqrt(2/{fan_in}) = {std:.4f}, measured std {w.std():.4f}")
    check_close(f"measured std matches sqrt(2/{fan_in}) within 2%", w.std(), std, rtol=0.02)
    check(f"mean is ~0 (|mean| < 3 standard errors)", abs(w.mean()) < 3 * std / math.sqrt(w.size))
check_close("sqrt(2/9) = 0.4714 (the notes' single-channel filter)", math.sqrt(2 / 9), 0.4714, atol=5e-5)
check_close("sqrt(2/576) = 0.0589 (the paper's example)", math.sqrt(2 / 576), 0.0589, atol=5e-5)

# %% [markdown]
# ## Why 2 / fan_in: 20 conv + ReLU layers
#
# A layer's pre-activation z = sum of fan_in terms w * x has variance fan_in * Var[w] * E[x^2] (independent,
# zero-mean weights). The ReLU then zeroes the negative half, which halves the second moment: E[ReLU(z)^2] =
# Var[z] / 2. So the second moment of the activations is multiplied by fan_in * Var[w] / 2 at every layer
# (He et al. 2015, Sec. 2.2), and it stays put only if Var[w] = 2 / fan_in. Anything else compounds:
#
# - Glorot uniform (Keras' default): Var[w] = 2 / (fan_in + fan_out) = 1 / fan_in for a square layer, a factor
#   1/2 per layer: 0.5^20 ~ 1e-6 after 20 layers.
# - a fixed std of 0.01 (a common "small random numbers" choice): a factor fan_in * 1e-4 / 2, far below 1.
# - twice He's variance (`he_normal(..., fan_in=fan_in / 2)`): a factor 2 per layer, 2^20 ~ 1e6.
#
# We push one random image through 20 valid 3x3 conv + ReLU layers (`conv2d_relu`) and print E[x^2] per layer.

# %% [markdown]
# One finite network is a random draw, and its activations take a random walk on a log scale: some layers gain a
# little, others lose a little. The argument above is about the average over draws, so we run an ensemble of
# independent networks (fresh weights, fresh input) and look at both: every single He network stays within a
# factor 100 of 1 (the others leave that band by orders of magnitude), and the ensemble mean stays within a
# factor 2 of 1 at every layer.

# %%
section("activations through 20 conv + ReLU layers")
layers, channels = 20, 64  # 64 channels: fan_in = 9 * 64 = 576, the paper's example
side, networks = (8, 8) if lesson.fast else (16, 16)
shape = (channels, channels, 3, 3)
fan_in = fans(shape)[0]
inits = {
    "he_normal": lambda: he_normal(shape, rng),
    "he_normal, truncated": lambda: he_normal(shape, rng, truncated=True),
    "glorot_uniform": lambda: glorot_uniform(shape, rng),
    "normal, std 0.01": lambda: (0.01 * rng.standard_normal(shape)).astype(np.float32),
    "2x He's variance": lambda: he_normal(shape, rng, fan_in=fan_in / 2),
}
moments = {}  # name -> (networks, layers) array of E[x^2]
for name, draw in inits.items():
    runs = np.empty((networks, layers))
    for r in range(networks):
        x = rng.standard_normal((1, channels, side + 2 * layers, side + 2 * layers)).astype(np.float32)
        for i in range(layers):
            x, _ = conv2d_relu(x, draw(), np.zeros(channels, np.float32))  # valid: 2 pixels smaller each layer
            runs[r, i] = np.mean(x.astype(np.float64) ** 2)
    moments[name] = runs
    mean = runs.mean(axis=0)
    print(f"  {name:<22} ensemble E[x^2] after layer 1: {mean[0]:9.3g}   after layer {layers}: {mean[-1]:9.3g}")

for name in ("he_normal", "he_normal, truncated"):
    runs = moments[name]
    check(f"{name}: every single network stays within a factor 100 of 1",
          bool(np.all((runs > 0.01) & (runs < 100))), f"range [{runs.min():.2f}, {runs.max():.2f}]")
    mean = runs.mean(axis=0)
    check(f"{name}: the ensemble mean stays within a factor 2 of 1 at every layer",
          bool(np.all((mean > 0.5) & (mean < 2))), f"range [{mean.min():.2f}, {mean.max():.2f}]")
glorot = moments["glorot_uniform"].mean(axis=0)
check("Glorot vanishes: after 20 layers E[x^2] is below 1e-4", glorot[-1] < 1e-4)
check_close("... by about 1/2 per layer (geometric mean of the ratios)",
            np.exp(np.mean(np.log(glorot[1:] / glorot[:-1]))), 0.5, atol=0.1)
check("std 0.01 vanishes: below 1e-20 after 20 layers", moments["normal, std 0.01"].mean(axis=0)[-1] < 1e-20)
check("2x He's variance explodes: above 1e4 after 20 layers", moments["2x He's variance"].mean(axis=0)[-1] > 1e4)

fig, ax = plt.subplots(figsize=(7, 4.2))
depth = np.arange(1, layers + 1)
for k, (name, runs) in enumerate(moments.items()):
    ax.semilogy(depth, runs.T, color=f"C{k}", lw=0.5, alpha=0.3)
    style = "--" if "trunc" in name else "-"
    ax.semilogy(depth, runs.mean(axis=0), color=f"C{k}", marker="o", ms=3, label=name, ls=style)
ax.axhline(1.0, color="gray", lw=0.8)
ax.set_xlabel("conv + ReLU layer")
ax.set_ylabel("E[x²] of the activations")
ax.set_title(f"{layers} layers of 3x3 conv + ReLU, {channels} channels (fan_in = {fan_in}); thin: single networks")
ax.legend(fontsize=8)
lesson.save(fig)

# %% [markdown]
# ## The truncated variant
#
# `he_normal(..., truncated=True)` redraws every value beyond two standard deviations (about 4.6% of them), so no
# weight is extreme. Cutting the tails shrinks the spread by a known factor, `TRUNCATED_STD` = 0.8796 (the
# standard deviation of a standard normal cut at +-2), so the draw is scaled up by 1 / 0.8796 first: the weights
# still have std sqrt(2 / fan_in), and none lies beyond 2 / 0.8796 = 2.27 of those standard deviations.

# %%
section("the truncated variant")
shape = (64, 64, 3, 3)
std = math.sqrt(2 / fans(shape)[0])
plain = he_normal(shape, rng, dtype=np.float64)
cut = he_normal(shape, rng, truncated=True, dtype=np.float64)
print(f"  std: plain {plain.std():.4f}, truncated {cut.std():.4f}, target {std:.4f}")
print(f"  largest |w| / std: plain {np.abs(plain).max() / std:.2f}, truncated {np.abs(cut).max() / std:.2f}")
check_close("the truncated draw keeps std sqrt(2/576) within 2%", cut.std(), std, rtol=0.02)
check("no truncated weight lies beyond 2 / 0.8796 standard deviations",
      np.abs(cut).max() <= 2 * std / TRUNCATED_STD * (1 + 1e-12))
check("the plain normal has weights beyond that", np.abs(plain).max() > 2 * std / TRUNCATED_STD)

fig, ax = plt.subplots(figsize=(6.5, 3.6))
bins = np.linspace(-4.5 * std, 4.5 * std, 91)
ax.hist(plain.ravel(), bins=bins, density=True, alpha=0.5, label="he_normal")
ax.hist(cut.ravel(), bins=bins, density=True, alpha=0.5, label="he_normal, truncated")
for sign in (-1, 1):
    ax.axvline(sign * 2 * std / TRUNCATED_STD, color="C1", ls=":")
ax.set_xlabel("weight value")
ax.set_title(f"both have std sqrt(2/576) = {std:.4f}")
ax.legend(fontsize=8)
lesson.save(fig, "truncated")
print("\nlesson 02 done: every check passed")
