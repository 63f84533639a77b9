# %% [markdown]
# # Lesson 7: the segmentation losses, values and gradients
#
# Teaches `unet_from_scratch/reference/losses.py`. The notes list them: binary cross-entropy ("penalizes
# incorrect predictions more as model confidence increases"), Dice ("measures overlap ... Dice Loss = 1 - Dice
# ... particularly effective for imbalanced datasets"), focal loss ("down-weights easy examples, focuses on hard
# cases", alpha = 0.25, gamma = 2.0), weighted cross-entropy, and their combination
# 0.4·Dice + 0.4·Focal + 0.2·Weighted CE. The paper's own loss is the pixel-wise softmax with a cross-entropy
# weighted by w(x) (lesson 6).
#
# Every loss here returns (loss, dlogits): the value and its gradient with respect to the logits, what
# backpropagation hands to the last layer. We compute all of them on one imbalanced mask, look at where each
# gradient pushes, check a few identities and the gradients by finite differences, and see why Dice (and class
# weighting) cope with imbalance where a plain average over pixels does not.
#
# Run: `python lessons/07_losses.py [--out DIR] [--fast]`.

# %%
import matplotlib.pyplot as plt
import numpy as np
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start
from scipy import ndimage

from unet_from_scratch.reference import (
    bce_with_logits, class_weights, combined_loss, cross_entropy, dice_loss, focal_loss, softmax,
)

lesson = start("07_losses", "BCE, weighted CE, focal, Dice and the combined loss")

# %% [markdown]
# ## One imbalanced mask and a half-trained prediction
#
# A 96x96 image with one cell covering about 3% of it. The "prediction" is what a network might give halfway
# through training: confident far from the cell, unsure near its outline. Two-class logits (background, cell)
# z = (-s/2, s/2) have softmax p_cell = sigmoid(s), so the same prediction can be fed to the one-channel binary
# losses as s.

# %%
section("the losses on one imbalanced mask")
side = 96
yy, xx = np.mgrid[:side, :side]
target = (((yy - 40) ** 2 + (xx - 52) ** 2) < 9**2).astype(np.int64)[None]  # (N=1, H, W)
score = 8 * (ndimage.gaussian_filter(target[0].astype(float), 3) - 0.5)  # unsure at the outline, sure far away
logits = np.stack([-score / 2, score / 2])[None]  # (1, 2, H, W) float64
weights = class_weights(target, num_classes=2)  # balanced: n / (2·count_c)
print(f"  cell pixels: {target.mean():.1%}; balanced class weights (background, cell) = {np.round(weights, 3)}")
losses = {
    "BCE": bce_with_logits(score[None, None], target),
    "weighted CE": cross_entropy(logits, target, class_weights=weights),
    "focal (α=0.25, γ=2)": focal_loss(logits, target, alpha=0.25, gamma=2.0),
    "Dice": dice_loss(logits, target),
    "combined 0.4/0.4/0.2": combined_loss(logits, target, class_weights=weights),
}
for name, (value, _) in losses.items():
    print(f"  {name:<22} {value:.4f}")
ce, ce_grad = cross_entropy(logits, target)
check_close("BCE on s equals the two-class cross-entropy on (-s/2, s/2)", losses["BCE"][0], ce, atol=1e-12)
check("... and its gradient is half the difference of the channels' (chain rule through z = (-s/2, s/2))",
      np.allclose(losses["BCE"][1][:, 0], (ce_grad[:, 1] - ce_grad[:, 0]) / 2, rtol=1e-9, atol=1e-15))
check_close("focal with γ = 0, α = 1 is the cross-entropy", focal_loss(logits, target, alpha=1, gamma=0)[0], ce,
            atol=1e-12)
parts = [dice_loss(logits, target)[0], focal_loss(logits, target)[0],
         cross_entropy(logits, target, class_weights=weights)[0]]
check_close("combined = 0.4·Dice + 0.4·focal + 0.2·weighted CE", losses["combined 0.4/0.4/0.2"][0],
            0.4 * parts[0] + 0.4 * parts[1] + 0.2 * parts[2], atol=1e-12)

# %% [markdown]
# ## The gradients, checked by finite differences
#
# Each analytic gradient is derived in the module's docstrings (the softmax identity
# ∂ log p_t / ∂z_j = δ_tj - p_j carries all of them). A centred difference (L(z + h) - L(z - h)) / 2h at a few
# logits, in float64, must agree to 1e-5 relative (relative to the largest gradient where the gradient is tiny).

# %%
section("gradients vs finite differences")
rng = np.random.default_rng(0)
h = 1e-5
probes = [tuple(rng.integers(0, k) for k in logits.shape) for _ in range(3 if lesson.fast else 10)]
probes.append((0, 1, 40, 52 + 9))  # one on the cell's outline, where the gradients are largest
for name, fn in [("weighted CE", lambda z: cross_entropy(z, target, class_weights=weights)),
                 ("focal", lambda z: focal_loss(z, target)), ("Dice", lambda z: dice_loss(z, target)),
                 ("combined", lambda z: combined_loss(z, target, class_weights=weights))]:
    _, grad = fn(logits)
    worst = 0.0
    for idx in probes:
        up, down = logits.copy(), logits.copy()
        up[idx] += h
        down[idx] -= h
        numeric = (fn(up)[0] - fn(down)[0]) / (2 * h)
        # relative to the gradient's own scale: far from the cell a gradient of 1e-9 is mostly rounding noise
        worst = max(worst, abs(numeric - grad[idx]) / max(abs(numeric), 1e-2 * np.abs(grad).max()))
    check(f"{name}: analytic gradient matches finite differences", worst < 1e-5, f"worst relative error {worst:.1e}")

# %% [markdown]
# ## Where each gradient pushes
#
# The main figure shows -∂L/∂z_cell, the direction in which each loss moves the cell logit (positive: more
# cell). The unweighted losses spend their gradient where the prediction is wrong, mostly at the outline, and the
# background's many slightly-wrong pixels add up. Class weights scale up the cell's pixels. Focal shrinks the
# contribution of the pixels that are already right (p_t near 1) by (1 - p_t)^γ. Dice's gradient reaches every
# pixel of the cell and treats the background as one whole: it is a ratio over the cell's overlap.

# %%
fig, axes = plt.subplots(1, 6, figsize=(18, 3.4))
axes[0].imshow(softmax(logits)[0, 1], cmap="gray", vmin=0, vmax=1)
axes[0].contour(target[0], levels=[0.5], colors="C1", linewidths=1)
axes[0].set_title("p(cell), true outline in orange", fontsize=9)
for ax, (name, (value, grad)) in zip(axes[1:], losses.items()):
    g = -(grad[0, 0] if grad.shape[1] == 1 else grad[0, 1])
    limit = np.abs(g).max()
    ax.imshow(g, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(f"{name}\nloss {value:.3f}, -∂L/∂z_cell", fontsize=9)
for ax in axes:
    ax.set_xlim(22, 82)  # zoom on the cell: far from it every gradient is close to 0
    ax.set_ylim(70, 10)
    ax.set_xticks([])
    ax.set_yticks([])
lesson.save(fig)

# %% [markdown]
# ## The focal term: easy pixels stop counting
#
# Per pixel, focal = -α·(1 - p_t)^γ·log p_t. At p_t = 0.9 (an easy, already-right pixel) γ = 2 multiplies the
# cross-entropy by (1 - 0.9)² = 0.01; at p_t = 0.1 (a hard one) by 0.81. Lin et al. 2017, Fig. 1.

# %%
section("focal loss vs p_t")
p_t = np.linspace(0.01, 0.99, 99)
one_pixel = np.zeros((1, 1, 1), np.int64)  # target class 0
curves = {}
for gamma in (0, 0.5, 1, 2, 5):
    # logits (log p_t, log(1 - p_t)) give softmax (p_t, 1 - p_t)
    curves[gamma] = np.array([focal_loss(np.log([[[[q]], [[1 - q]]]]), one_pixel, alpha=1, gamma=gamma)[0]
                              for q in p_t])
at = lambda q: int(np.argmin(np.abs(p_t - q)))  # noqa: E731
check_close("γ = 2 at p_t = 0.9: the cross-entropy times 0.01", curves[2][at(0.9)] / curves[0][at(0.9)], 0.01,
            rtol=1e-9)
check_close("γ = 2 at p_t = 0.1: the cross-entropy times 0.81", curves[2][at(0.1)] / curves[0][at(0.1)], 0.81,
            rtol=1e-9)

# %% [markdown]
# ## Why Dice suits imbalance
#
# Take a lazy prediction, background everywhere with confidence (s = -4), and pad the image with more background,
# so that the cell gets rarer: 3%, then under 1%. A plain average over pixels, like the cross-entropy, shrinks as
# the background grows: ignoring the cell looks better and better. The Dice loss is a ratio of overlaps of the
# cell class, untouched by how much background there is: the lazy prediction stays near 1, the worst value.
# Balanced class weights fix the cross-entropy the same way: each class's pixels then weigh the same in total.

# %%
section("imbalance: the lazy prediction as the background grows")
rows = []
for pad in (0, side, 2 * side):
    t = np.pad(target, ((0, 0), (pad, pad), (pad, pad)))  # more background around the same cell
    lazy = np.stack([np.full(t.shape[1:], 2.0), np.full(t.shape[1:], -2.0)])[None]  # p(cell) = sigmoid(-4)
    w = class_weights(t, num_classes=2)
    row = (t.mean(), cross_entropy(lazy, t)[0], cross_entropy(lazy, t, class_weights=w)[0], dice_loss(lazy, t)[0])
    rows.append(row)
    print(f"  cell {row[0]:6.2%}: CE {row[1]:.4f}   weighted CE {row[2]:.4f}   Dice loss {row[3]:.4f}")
check("plain CE of the lazy prediction shrinks more than 5x as the cell gets 25x rarer", rows[-1][1] < rows[0][1] / 5)
check("weighted CE stays put (within 5%)", abs(rows[-1][2] - rows[0][2]) < 0.05 * rows[0][2])
check("the Dice loss of the lazy prediction stays above 0.95", all(r[3] > 0.95 for r in rows))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for gamma, curve in curves.items():
    axes[0].plot(p_t, curve, label=f"γ = {gamma}" + (" (cross-entropy)" if gamma == 0 else ""))
axes[0].set_xlabel("p_t, the probability of the true class")
axes[0].set_ylabel("loss of one pixel (α = 1)")
axes[0].set_ylim(0, 4)
axes[0].legend(fontsize=8)
axes[0].set_title("focal loss: easy pixels are down-weighted")
share = [r[0] for r in rows]
for k, name in [(1, "cross-entropy"), (2, "weighted CE"), (3, "Dice loss")]:
    axes[1].plot(share, [r[k] for r in rows], "o-", label=name)
axes[1].set_xscale("log")
axes[1].set_xlabel("fraction of cell pixels")
axes[1].set_ylabel("loss of the all-background prediction")
axes[1].legend(fontsize=8)
axes[1].set_title("ignoring a rarer cell: CE forgives it, Dice does not")
lesson.save(fig, "focal_imbalance")
print("\nlesson 07 done: every check passed")
