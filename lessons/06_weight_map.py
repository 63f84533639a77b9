# %% [markdown]
# # Lesson 6: the U-Net weight map
#
# Teaches `unet_from_scratch/reference/weight_map.py`. The paper (Sec. 3, eq. 2) weights each pixel's
# cross-entropy with
#
#     w(x) = w_c(x) + w0 · exp( -(d1(x) + d2(x))² / (2σ²) )
#
# where, in the notes' words, "w_c(x) balances class frequencies, d1(x) is the distance to the nearest cell
# border, and d2(x) is the distance to the second nearest cell border", with w0 = 10 and σ ≈ 5 pixels. The map
# is "pre-computed for each ground truth segmentation ... to help the network learn the separation borders".
#
# The notes read w0 = 10 as "ten times more importance to the pixels close to the cell borders". More exactly:
# the border term is *added* to w_c, and it is w0 only where d1 + d2 = 0, which no background pixel reaches
# (its nearest cell is at least 1 pixel away). In a 1-pixel gap (d1 = d2 = 1) it is 10·exp(-4/50) = 9.23, in a
# 2-pixel gap 10·exp(-9/50) = 8.35, and across a 10-pixel gap only 10·exp(-121/50) = 0.89: the weight is large
# only where cells nearly touch, which is the point.
#
# Run: `python lessons/06_weight_map.py [--out DIR] [--fast]`.

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start

from unet_from_scratch.reference import class_weights_from_counts, separation_border, unet_weight_map
from unet_from_scratch.reference import unet_weight_map_naive
from unet_from_scratch.reference.weight_map import TOLERANCE

lesson = start("06_weight_map", "the weight map: w_c + w0·exp(-(d1 + d2)² / 2σ²)")

# %% [markdown]
# ## Two touching cells
#
# Two discs that touch. The paper's masks keep a background line between touching cells, and
# `separation_border` carves one: every cell pixel with an 8-neighbour of another cell becomes background, on
# both sides of the contact. Then the map's two parts: w_c (`class_weights="balanced"`: each class's pixels
# weigh n / (2·count), so background and cells contribute equal totals), and the border term on background
# pixels. Setting w0 = 0 leaves w_c alone, so the border term is the difference.

# %%
section("two touching cells")
yy, xx = np.mgrid[:64, :80]
instances = np.where((yy - 32) ** 2 + (xx - 50) ** 2 < 12**2, 2, 0)
instances = np.where((yy - 32) ** 2 + (xx - 28) ** 2 < 11**2, 1, instances)  # overlaps cell 2: they touch
# int32 labels, as SyntheticCells returns them: with int64 labels separation_border also carves some edge pixels
# of cells that touch nothing (a package bug, reported), which would blur what this lesson shows.
instances = instances.astype(np.int32)
check("the two cells touch before the border is carved", np.any((instances[:, :-1] == 1) & (instances[:, 1:] == 2)))
separated = separation_border(instances)
grown = ndimage.binary_dilation(separated == 1, structure=np.ones((3, 3)))  # cell 1 and its 8-neighbours
check("after separation_border no cell pixel has an 8-neighbour of the other cell",
      not np.any(grown & (separated == 2)))
w = unet_weight_map(separated)  # w0 = 10, sigma = 5, balanced class weights: the paper's setting
w_c = unet_weight_map(separated, w0=0)
border = w - w_c
cells = separated > 0
counts = [np.count_nonzero(~cells), np.count_nonzero(cells)]
expected_wc = class_weights_from_counts(counts)
print(f"  {counts[0]} background and {counts[1]} cell pixels: w_c = {expected_wc[0]:.3f} (background), "
      f"{expected_wc[1]:.3f} (cells)")
check("w_c is the balanced class weight of each pixel's class",
      np.allclose(w_c[~cells], expected_wc[0]) and np.allclose(w_c[cells], expected_wc[1]))
check("the border term lives on background pixels only", np.all(border[cells] == 0))
gap = (instances > 0) & ~cells  # the carved line
print(f"  the carved gap: {gap.sum()} pixels; border term there {border[gap].min():.2f} to {border[gap].max():.2f}")
check("only the contact is carved: every carved pixel had a neighbour of the other cell",
      all({1, 2} <= set(np.unique(instances[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]))
          for r, c in np.argwhere(gap)))
check("the border term peaks in the gap, between 8 and 10",
      8 < border.max() <= 10 and border[gap].max() == border.max())

# One pixel by hand: its distance to the nearest pixel of each cell, straight from the definition.
r, c = np.argwhere(gap)[len(np.argwhere(gap)) // 2]
d = sorted(np.hypot(*(np.argwhere(separated == k) - (r, c)).T).min() for k in (1, 2))
by_hand = expected_wc[0] + 10 * math.exp(-((d[0] + d[1]) ** 2) / (2 * 5**2))
print(f"  pixel ({r}, {c}): d1 = {d[0]:.3f}, d2 = {d[1]:.3f} -> w = {by_hand:.4f}; unet_weight_map: {w[r, c]:.4f}")
check_close("the formula by hand equals the map", w[r, c], by_hand, atol=1e-9)

# %% [markdown]
# ## The effect of w0 and σ
#
# Between two straight cell walls with a gap of D background pixels, a gap pixel at a from the left wall has
# d1 = a and d2 = D + 1 - a (distances between pixel centres): d1 + d2 = D + 1 whatever a. So the whole gap gets
# one weight, w0·exp(-(D + 1)² / (2σ²)): w0 sets its height, σ how fast it fades as the cells move apart. We
# measure it on two bars for gaps of 1 to 20 pixels (to within `TOLERANCE`: where the term is that small the
# fast map does not compute it exactly, see below).

# %%
section("the effect of w0 and sigma")


def gap_weight(gap: int, w0: float, sigma: float) -> np.ndarray:
    """The border term across a ``gap``-pixel gap between two 20-pixel bars (class weights off)."""
    bars = np.zeros((9, 40 + gap), np.int32)
    bars[:, :20] = 1
    bars[:, 20 + gap :] = 2
    term = unet_weight_map(bars, w0=w0, sigma=sigma, class_weights=None) - 1  # w_c = 1 everywhere
    return term[4, 20 : 20 + gap]


gaps = np.arange(1, 21)
settings = [(10, 5), (10, 2.5), (10, 10), (5, 5), (20, 5)]
profiles = {}
for w0, sigma in settings:
    measured = np.array([gap_weight(g, w0, sigma) for g in gaps], dtype=object)
    check(f"w0 = {w0}, sigma = {sigma}: the term is constant across each gap",
          all(np.ptp(m) < TOLERANCE for m in measured))
    value = np.array([m[0] for m in measured])
    formula = w0 * np.exp(-((gaps + 1) ** 2) / (2 * sigma**2))
    check(f"w0 = {w0}, sigma = {sigma}: it equals w0·exp(-(D + 1)² / 2σ²)",
          np.allclose(value, formula, rtol=0, atol=TOLERANCE))
    profiles[(w0, sigma)] = value
for g in (1, 2, 10):
    print(f"  paper's w0 = 10, sigma = 5: a {g}-pixel gap gets {profiles[(10, 5)][g - 1]:.2f}")
check_close("1-pixel gap: 10·exp(-4/50) = 9.23", profiles[(10, 5)][0], 9.2312, atol=1e-4)
check_close("10-pixel gap: 10·exp(-121/50) = 0.89", profiles[(10, 5)][9], 0.8892, atol=1e-4)

fig, ax = plt.subplots(figsize=(6.5, 3.8))
for (w0, sigma), value in profiles.items():
    ax.plot(gaps, value, "o-", ms=3, label=f"w0 = {w0}, σ = {sigma}", lw=2.5 if (w0, sigma) == (10, 5) else 1)
ax.set_xlabel("gap between two cells (pixels)")
ax.set_ylabel("border term added to w_c")
ax.set_title("w0 sets the height, σ the reach")
ax.legend(fontsize=8)
lesson.save(fig, "w0_sigma")

# %% [markdown]
# ## Many touching cells: the textbook version beside the fast one
#
# The textbook way (`unet_weight_map_naive`) computes one distance transform of the whole image per cell,
# stacks them (K, H, W), sorts along the cell axis and reads off d1 and d2: K full-image passes and K·H·W memory.
# `unet_weight_map` gives the same map to within `TOLERANCE` = 1e-5 by computing each cell's distance transform
# only in a window around it: beyond R = σ·sqrt(2·ln(w0 / tol)) = 26.3 pixels the border term is below the
# tolerance anyway (the proof is in the module docstring). The images come from the package's synthetic
# touching-cells dataset.

# %%
section("many cells: naive vs fast")
from unet_from_scratch.data import SyntheticCells  # noqa: E402  (imports torch: only needed from here on)

size = 128 if lesson.fast else 384
_, raw = SyntheticCells(1, size=size, seed=3)[0]
many = separation_border(raw)
n_cells = len(np.unique(many[many > 0]))
t0 = time.perf_counter()
fast = unet_weight_map(many)
t_fast = time.perf_counter() - t0
t0 = time.perf_counter()
naive = unet_weight_map_naive(many)
t_naive = time.perf_counter() - t0
diff = np.abs(fast - naive).max()
print(f"  {size}x{size}, {n_cells} cells: naive {t_naive * 1e3:.0f} ms, fast {t_fast * 1e3:.0f} ms "
      f"({t_naive / t_fast:.1f}x); max |fast - naive| = {diff:.1e}")
check("the fast map equals the textbook map to within TOLERANCE", diff < TOLERANCE)
check("there are many cells to separate", n_cells >= 10)
many_wc = unet_weight_map(many, w0=0)

fig, axes = plt.subplots(1, 4, figsize=(15, 4))
panels = [(many, "instances (gaps carved)", "tab20"), (many_wc, "w_c: class balance", "viridis"),
          (fast - many_wc, "border term w0·exp(-(d1+d2)²/2σ²)", "magma"), (fast, "w = w_c + border term", "magma")]
for ax, (img, title, cmap) in zip(axes, panels):
    shown = np.ma.masked_equal(img % 20 + (img > 0), 0) if cmap == "tab20" else img  # background left blank
    im = ax.imshow(shown, cmap=cmap, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    if cmap != "tab20":
        fig.colorbar(im, ax=ax, shrink=0.75)
fig.suptitle(f"the U-Net weight map (w0 = 10, σ = 5) of {n_cells} touching cells", fontsize=11)
lesson.save(fig)
print("\nlesson 06 done: every check passed")
