# %% [markdown]
# # Lesson 5: the U-Net architecture, 572 -> 388
#
# Teaches `unet_from_scratch/nn/unet.py` (the torch `UNet`, built from the parts of lessons 1-3). The paper is
# Ronneberger, Fischer & Brox 2015, arXiv **1505.04597** (the notes link "2003.08462", which is a different
# paper). The notes: "U-Net is defined for a semantic segmentation"; it "relies only on the valid part of each
# convolution", so "the segmentation map is constructed only from the pixels for which the full context is
# available"; the expansive path "is more or less symmetric to the contracting path".
#
# This lesson follows one 572x572 tile through the network, shape by shape, with the cropped skips; works out
# which input sizes are valid; weighs when to stop downsampling (receptive field against bottleneck size); and
# counts the 31,030,658 parameters layer by layer. Shapes come from a forward pass on torch's "meta" device,
# which computes shapes without computing values, so the full-size network costs nothing to trace.
#
# Run: `python lessons/05_unet.py [--out DIR] [--fast]`.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, section, start
from torch import nn

from unet_from_scratch.nn import UNet, output_size, valid_input_size

lesson = start("05_unet", "the U-Net: 572 -> 388, 31,030,658 parameters")

# %% [markdown]
# ## Shapes through the network
#
# Contracting path: at each of 4 levels two 3x3 valid conv + ReLU (each takes 2 pixels) and a 2x2 max-pool
# (halves the side, doubles nothing: the next level's convolutions double the channels). Bottleneck: two more
# convolutions, 1024 channels. Expanding path: a 2x2 up-convolution doubles the side and halves the channels, the
# encoder map of the same level is centre-cropped to that side and concatenated ("copy and crop" in the paper's
# figure), and two convolutions follow. A 1x1 convolution maps the 64 channels to one score per class.

# %%
section("one 572x572 tile through the network")
model = UNet()  # the paper's network: 1 channel in, 2 classes out, depth 4, 64 base channels, valid convolutions
meta = model.to("meta")  # in place: from here on shapes only (a real forward would cost ~100 GFLOP)
shapes = {}


def record(name):
    return lambda module, inputs, out: shapes.__setitem__(name, tuple(out.shape))


for level, block in enumerate(meta.encoder):
    block.register_forward_hook(record(f"encoder {level}"))
meta.bottleneck.register_forward_hook(record("bottleneck"))
for k, up in enumerate(meta.decoder):
    level = meta.depth - 1 - k
    up.up.register_forward_hook(record(f"up-conv to level {level}"))
    up.conv.register_forward_hook(record(f"decoder {level}"))
out = meta(torch.empty(1, 1, 572, 572, device="meta"))
for name, shape in shapes.items():
    print(f"  {name:<20} {shape[1]:>5} x {shape[2]} x {shape[3]}")
print(f"  {'output (1x1 conv)':<20} {out.shape[1]:>5} x {out.shape[2]} x {out.shape[3]}")

paper = {"encoder 0": 568, "encoder 1": 280, "encoder 2": 136, "encoder 3": 64, "bottleneck": 28,
         "up-conv to level 3": 56, "decoder 3": 52, "up-conv to level 2": 104, "decoder 2": 100,
         "up-conv to level 1": 200, "decoder 1": 196, "up-conv to level 0": 392, "decoder 0": 388}
check("every side length matches the paper's Fig. 1", all(shapes[k][2] == v for k, v in paper.items()))
check("572x572 in, 2 x 388 x 388 out", tuple(out.shape) == (1, 2, 388, 388))
check("the bottleneck holds 1024 channels of 28 x 28", shapes["bottleneck"][1:] == (1024, 28, 28))

# %% [markdown]
# ## The cropped skips
#
# The encoder map of level 0 is 568 wide, but the up-convolution brings back only 392: the four convolutions of
# each deeper level took pixels that the skip still has. The skip is centre-cropped, (568 - 392) / 2 = 88 pixels
# off each side, "due to the loss of border pixels in every convolution" (Sec. 2). The differences are always
# even on valid input sizes, so the crop is exactly centred.

# %%
section("the cropped skips")
for level in range(4):
    skip, up = shapes[f"encoder {level}"][2], shapes[f"up-conv to level {level}"][2]
    print(f"  level {level}: skip {skip} -> crop {(skip - up) // 2} px per side -> {up}, concatenated with the up-conv")
    check(f"level {level}: the skip's extra border is even (a centred crop)", (skip - up) % 2 == 0 and skip > up)

# %% [markdown]
# ## Valid input sizes
#
# Two things constrain the input side n: every max-pool must see an even size (or it would drop a row and the
# skip would no longer be centred), and the expanding path must stay positive. For depth 4 that leaves
# n = 16·b + 124 (b >= 4 the bottleneck's output side): 188, 204, ..., 556, 572, 588, ..., with output n - 184.
# The 184 pixels (92 per side) are the context the network consumes: overlap-tile inference supplies them by
# mirroring the image at its border. `valid_input_size(n)` rounds up to the next valid size.

# %%
section("valid input sizes")
valid = sorted({valid_input_size(n) for n in range(1, 601)})
print(f"  valid sides up to 600: {valid}")
check("they are 16·b + 124 for b = 4, 5, ...", valid == [16 * b + 124 for b in range(4, 4 + len(valid))])
check("each gives output n - 184", all(output_size(n) == n - 184 for n in valid))
check("570 rounds up to 572, the paper's tile", valid_input_size(570) == 572)
check("with 'same' padding (zero padding 1) a 512 input gives a 512 output",
      output_size(512, padding="same") == 512)

# %% [markdown]
# ## When to stop downsampling: receptive field against bottleneck size
#
# The notes: "you want to downsample until you reach a feature map that is small enough to efficiently capture
# the high-level context without losing too much spatial resolution", and "each downsampling step increases the
# receptive field". The receptive field of a bottleneck pixel follows a recurrence: start at r = 1 with a step
# j = 1 between neighbouring pixels (in input pixels); each 3x3 convolution adds 2j, each 2x2 pool adds j and
# doubles j. Every level adds 5j and doubles j, so the context roughly doubles per level: 14, 32, 68, 140 input
# pixels for depths 1-4. The cost: the bottleneck side halves per level (at a tile of ~572: 68, 32, 14... only
# a few pixels left at depth 5), the smallest valid tile grows, and the parameters roughly quadruple.
#
# We measure the receptive field instead of trusting the recurrence: the non-zero region of the gradient of one
# bottleneck pixel with respect to the input. (A narrow network keeps it cheap. Its weights are made positive so
# that no ReLU is off and no two paths cancel, and the max-pools are swapped for average pools of the same 2x2
# window, because a max-pool's gradient reaches only the winner of its window.) The notes also say the
# bottleneck "is usually ... 32x32 or 64x64 for an input image of 512x512": true of a padded U-Net (`"same"`,
# 512 / 16 = 32 at depth 4); the paper's valid network reaches 32 before the bottleneck's convolutions and 28
# after them.


# %%
def bottleneck_receptive_field(depth: int) -> int:
    r, j = 1, 1
    for _ in range(depth):
        r += 2 * 2 * j  # two 3x3 convolutions
        r += j  # the 2x2 pool
        j *= 2
    return r + 2 * 2 * j  # the bottleneck's two convolutions


def unet_parameters(depth: int, base: int = 64, in_channels: int = 1, classes: int = 2) -> int:
    """The parameter count of UNet(depth=depth), from the layer shapes (checked against the model below)."""
    conv = lambda c_in, c_out, k=3: c_in * c_out * k * k + c_out  # noqa: E731
    widths = [base * 2**level for level in range(depth + 1)]
    count = conv(in_channels, widths[0]) + conv(widths[0], widths[0])
    for lo, hi in zip(widths[:-1], widths[1:]):
        count += conv(lo, hi) + conv(hi, hi)  # one level down (the last one is the bottleneck)
        count += conv(hi, lo, k=2) + conv(hi, lo) + conv(lo, lo)  # and back up: up-conv, then two convolutions
    return count + conv(widths[0], classes, k=1)


section("receptive field vs bottleneck size")
depths = [1, 2, 3] if lesson.fast else [1, 2, 3, 4]
rows = []
for depth in depths:
    predicted = bottleneck_receptive_field(depth)
    n = valid_input_size(2 * predicted, depth)  # room on both sides, so the window is not clipped by the border
    narrow = UNet(base_channels=2, depth=depth).double()
    with torch.no_grad():
        for p in narrow.parameters():
            p.abs_().add_(0.01)
    x = torch.ones(1, 1, n, n, dtype=torch.float64, requires_grad=True)
    h = x
    for block in narrow.encoder:
        h = nn.functional.avg_pool2d(block(h), 2)
    h = narrow.bottleneck(h)
    centre = h.shape[-1] // 2
    (grad,) = torch.autograd.grad(h[0, 0, centre, centre], x)
    support = np.flatnonzero(grad[0, 0].abs().sum(dim=1).numpy() > 0)
    measured = support[-1] - support[0] + 1
    params = unet_parameters(depth)
    rows.append((depth, predicted, measured, params))
    print(f"  depth {depth}: bottleneck receptive field {predicted} px (measured {measured}), "
          f"smallest valid tile {valid_input_size(1, depth)}, parameters {params:,}")
    check(f"depth {depth}: the measured receptive field equals the recurrence", measured == predicted)
check("the receptive field at depth 4 is 140 pixels", bottleneck_receptive_field(4) == 140)
check("the parameter formula gives the model's count at depth 4",
      unet_parameters(4) == sum(p.numel() for p in model.parameters()))


def bottleneck_side(n: int, depth: int) -> int:
    for _ in range(depth):
        n = (n - 4) // 2
    return n - 4


sides = {d: bottleneck_side(valid_input_size(572, d), d) for d in range(1, 7)}
print("  bottleneck side at a ~572 tile:", {d: s for d, s in sides.items()})
check("at depth 4 the bottleneck side is 28, as traced above", sides[4] == shapes["bottleneck"][2])
check("each level roughly halves it", all(sides[d + 1] < sides[d] / 2 + 1 for d in range(1, 6)))

# %% [markdown]
# ## 31,030,658 parameters, layer by layer
#
# A k x k convolution from c_in to c_out channels has c_in·c_out·k² weights and c_out biases. The paper's
# network has 23 convolutional layers (Sec. 2): 18 of 3x3, 4 up-convolutions of 2x2 and the final 1x1. Most
# of the weights sit at the bottom: the bottleneck alone holds 14.2 M, almost half.

# %%
section("the parameter count, layer by layer")
total, layers = 0, 0
per_block = {}
for name, layer in model.named_modules():
    if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
        c_in, c_out, (k, _) = layer.in_channels, layer.out_channels, layer.kernel_size
        formula = c_in * c_out * k * k + c_out
        actual = sum(p.numel() for p in layer.parameters())
        check(f"{name:<22} {c_in:>4} -> {c_out:<4} {k}x{k}: {c_in}·{c_out}·{k * k} + {c_out} = {formula:,}",
              formula == actual)
        total += formula
        layers += 1
        block = ".".join(name.split(".")[:2]) if name.startswith(("encoder", "decoder")) else name.split(".")[0]
        per_block[block] = per_block.get(block, 0) + formula
print(f"  total: {total:,} in {layers} convolutional layers")
check("the total is 31,030,658", total == 31_030_658 == sum(p.numel() for p in model.parameters()))
check("23 convolutional layers, as the paper says", layers == 23)
check("the bottleneck holds 14,157,824 of them", per_block["bottleneck"] == 14_157_824)

# %% [markdown]
# ## The main figure: the U

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw=dict(width_ratios=[1.6, 1]))
ax = axes[0]
stages = [f"encoder {i}" for i in range(4)] + ["bottleneck"] + [f"decoder {i}" for i in (3, 2, 1, 0)]
levels = [0, 1, 2, 3, 4, 3, 2, 1, 0]
for x, (name, level) in enumerate(zip(stages, levels)):
    c, side = shapes[name][1], shapes[name][2]
    ax.add_patch(plt.Rectangle((x - 0.3, -level - 0.3), 0.6, 0.6, color=plt.cm.viridis(np.log2(c / 64) / 4)))
    ax.text(x, -level, f"{side}²\n×{c}", ha="center", va="center", fontsize=8, color="k" if level == 4 else "w")
for level in range(4):
    skip, up = shapes[f"encoder {level}"][2], shapes[f"up-conv to level {level}"][2]
    ax.annotate("", xy=(8 - level - 0.32, -level), xytext=(level + 0.32, -level),
                arrowprops=dict(arrowstyle="->", color="gray", ls="--"))
    ax.text(4, -level - 0.08, f"copy and crop {skip} → {up}", ha="center", va="top", fontsize=7, color="gray")
ax.text(-0.5, 0.55, "572² × 1 in", fontsize=9)
ax.text(7.4, 0.55, "388² × 2 out", fontsize=9)
ax.set_xlim(-0.7, 8.7)
ax.set_ylim(-4.6, 0.9)
ax.axis("off")
ax.set_title("side² × channels after each stage (valid 3x3 convolutions, 2x2 pools and up-convolutions)")
ax = axes[1]
names = list(per_block)
ax.barh(names[::-1], [per_block[n] / 1e6 for n in names[::-1]], color="C0")
for i, n in enumerate(names[::-1]):
    ax.text(per_block[n] / 1e6 + 0.2, i, f"{per_block[n]:,}", va="center", fontsize=7)
ax.set_xlabel("parameters (millions)")
ax.set_title(f"{total:,} parameters")
ax.set_xlim(0, 18)
lesson.save(fig)

fig, ax = plt.subplots(figsize=(6, 3.6))
ds = [r[0] for r in rows]
ax.plot(ds, [r[1] for r in rows], "o-", label="bottleneck receptive field (px)")
ax.plot(list(sides), list(sides.values()), "s-", label="bottleneck side at a ~572 tile (px)")
ax.set_xlabel("depth (number of max-pools)")
ax.set_yscale("log")
ax.legend(fontsize=8)
ax.set_title("deeper: more context, less resolution")
lesson.save(fig, "depth")
print("\nlesson 05 done: every check passed")
