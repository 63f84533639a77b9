# %% [markdown]
# # Lesson 4: IoU and Dice, and what they miss
#
# Teaches `unet_from_scratch/reference/metrics.py`. The notes compute the IoU of a 3x3 example with NumPy:
#
#     y_true = [[0, 1, 1],      y_pred = [[0, 1, 0],
#               [0, 0, 1],                [0, 0, 1],
#               [1, 1, 0]]                [1, 0, 0]]
#
#     iou_score = np.sum(intersection) / np.sum(union)
#     # IoU = (1 + 1 + 1) / (2 + 2 + 2) = 3 / 6 = 0.5
#
# **The notes' last line is wrong.** Their own union mask is y_true itself (the prediction adds no pixel), whose
# rows hold 2, 1 and 2 ones: the union has 5 pixels, not 6, and IoU = 3/5 = 0.6. Count it pixel by pixel below.
# Then: Dice, and why Dice = 2·IoU / (1 + IoU); what the scores say on empty masks; why accuracy misleads when
# the foreground is small; and why touching cells need an instance-level score.
#
# Run: `python lessons/04_metrics.py [--out DIR] [--fast]`.

# %%
import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start

from unet_from_scratch.reference import accuracy, confusion, dice, f1, instance_f1, iou, precision, recall
from unet_from_scratch.reference.weight_map import separation_border

lesson = start("04_metrics", "IoU and Dice: 3/5, not 3/6")
rng = np.random.default_rng(0)

# %% [markdown]
# ## The notes' example, pixel by pixel
#
# Every pixel score is a ratio of four counts: tp (foreground predicted as foreground), fp (background predicted
# as foreground), fn (foreground missed), tn. Intersection = tp, union = tp + fp + fn, and
#
#     IoU = tp / (tp + fp + fn)          Dice = 2·tp / (2·tp + fp + fn) = 2·|A ∩ B| / (|A| + |B|)

# %%
section("the notes' 3x3 example")
y_true = np.array([[0, 1, 1], [0, 0, 1], [1, 1, 0]])
y_pred = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])
intersection = np.logical_and(y_true, y_pred)
union = np.logical_or(y_true, y_pred)
print("  intersection:", intersection.astype(int).tolist(), "-> per row", intersection.sum(axis=1).tolist())
print("  union:       ", union.astype(int).tolist(), "-> per row", union.sum(axis=1).tolist())
check("the union is y_true itself (the prediction adds no pixel)", np.array_equal(union, y_true.astype(bool)))
check("the union has 2 + 1 + 2 = 5 pixels, not 2 + 2 + 2 = 6",
      union.sum() == 5 and union.sum(axis=1).tolist() == [2, 1, 2])
tp, fp, fn, tn = (k[0, 1] for k in confusion(y_true, y_pred, num_classes=2))
print(f"  foreground counts: tp = {tp}, fp = {fp}, fn = {fn}, tn = {tn}")
check("tp = 3, fp = 0, fn = 2, tn = 4", (tp, fp, fn, tn) == (3, 0, 2, 4))
check_close("iou(y_true, y_pred) = 3/5 = 0.6 (the notes' 3/6 = 0.5 is wrong)", iou(y_true, y_pred), 0.6, atol=1e-12)
check_close("dice = 2·3 / (2·3 + 0 + 2) = 3/4", dice(y_true, y_pred), 0.75, atol=1e-12)
check_close("precision = 3/3: every predicted pixel is right", precision(y_true, y_pred), 1.0, atol=1e-12)
check_close("recall = 3/5: two foreground pixels were missed", recall(y_true, y_pred), 0.6, atol=1e-12)
check_close("F1 on pixels is the Dice coefficient", f1(y_true, y_pred), dice(y_true, y_pred), atol=1e-12)
check_close("accuracy = 7/9: 7 of the 9 pixels are right", accuracy(y_true, y_pred), 7 / 9, atol=1e-12)

# %% [markdown]
# ## Dice = 2·IoU / (1 + IoU)
#
# With I = tp and U = tp + fp + fn, Dice's denominator is 2·tp + fp + fn = I + U, so
# Dice = 2I / (I + U) = 2(I/U) / (1 + I/U) = 2·IoU / (1 + IoU). The two scores rank any two predictions the same
# way; Dice is never below IoU, and equal to it only at 0 and 1. We check the identity on many random pairs of
# masks, one score per image (`reduction="per_image"`).

# %%
section("Dice = 2·IoU / (1 + IoU)")
n_pairs = 200 if lesson.fast else 2000
density = rng.uniform(0.05, 0.95, (n_pairs, 1, 1))
masks_true = (rng.random((n_pairs, 16, 16)) < density).astype(np.int64)
flip = rng.random((n_pairs, 16, 16)) < rng.uniform(0, 0.6, (n_pairs, 1, 1))  # corrupt a random share of pixels
masks_pred = np.where(flip, 1 - masks_true, masks_true)
iou_each = iou(masks_true, masks_pred, reduction="per_image")
dice_each = dice(masks_true, masks_pred, reduction="per_image")
error = np.abs(dice_each - 2 * iou_each / (1 + iou_each)).max()
print(f"  {n_pairs} random pairs of 16x16 masks: max |Dice - 2·IoU/(1+IoU)| = {error:.2e}")
check("the identity holds on every pair (to float64 rounding)", error < 1e-12)
check("Dice >= IoU on every pair", bool(np.all(dice_each >= iou_each - 1e-15)))

# %% [markdown]
# ## Empty masks
#
# An image with no foreground and a prediction with none has tp = fp = fn = 0: both ratios are 0/0. Nothing to
# find and nothing found is a perfect result, so the package scores it `empty_score` = 1.0 (never NaN). A
# prediction of foreground where there is none, or none where there is some, scores 0.

# %%
section("empty masks")
empty, some = np.zeros((4, 4), int), np.eye(4, dtype=int)
check("both empty: IoU = Dice = 1 (empty_score)", iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0)
check("empty target, something predicted: IoU = 0", iou(empty, some) == 0.0)
check("something to find, nothing predicted: IoU = 0", iou(some, empty) == 0.0)
check("empty_score can be set, e.g. to 0", iou(empty, empty, empty_score=0.0) == 0.0)

# %% [markdown]
# ## Why accuracy misleads on imbalanced masks
#
# A 128x128 image with one small cell: about 2% foreground. A "model" that predicts background everywhere is
# right on 98% of the pixels, and has found nothing: IoU = Dice = 0. Accuracy counts the easy background pixels;
# IoU and Dice look only at the foreground (tn appears in neither formula).

# %%
section("accuracy on an imbalanced mask")
yy, xx = np.mgrid[:128, :128]
cell = ((yy - 60) ** 2 + (xx - 70) ** 2 < 10**2).astype(np.int64)
nothing = np.zeros_like(cell)
shifted = np.roll(cell, 8, axis=1)  # the cell found, but 8 pixels off
print(f"  foreground: {cell.mean():.1%} of the pixels")
for name, pred in [("all background", nothing), ("cell shifted by 8 px", shifted), ("perfect", cell)]:
    print(f"  {name:<22} accuracy {accuracy(cell, pred):.3f}   IoU {iou(cell, pred):.3f}   Dice {dice(cell, pred):.3f}")
check("all background: accuracy above 0.97 ...", accuracy(cell, nothing) > 0.97)
check("... with IoU = Dice = 0", iou(cell, nothing) == 0.0 and dice(cell, nothing) == 0.0)
check("a shifted cell: accuracy still above 0.98, IoU below 0.5",
      accuracy(cell, shifted) > 0.98 and iou(cell, shifted) < 0.5)
print("  (the shifted cell even has about the accuracy of predicting nothing: accuracy cannot tell them apart)")

# %% [markdown]
# ## Touching cells: pixel scores do not see a merge
#
# Two cells that touch. A prediction that covers both but does not separate them is one blob: every pixel is
# right, so pixel IoU and Dice are 1, and yet the two cells were not found apart. `instance_f1` splits the
# prediction into connected components and matches them one to one to the true cells (a match needs IoU > 0.5):
# the blob matches only the larger cell, so recall = 1/2 and F1 = 2·1 / (1 + 2) = 2/3. A prediction with a thin
# background gap between the cells (`separation_border`, which lesson 6 uses for the weight map) loses a few
# pixels, so its pixel IoU is lower, but both cells are found: F1 = 1. This is the failure the paper's weight map
# is there to prevent.

# %%
section("instance F1 for touching cells")
big = (yy - 64) ** 2 + (xx - 54) ** 2 < 14**2
small = (yy - 64) ** 2 + (xx - 77) ** 2 < 10**2
instances = np.where(small, 2, np.where(big, 1, 0)).astype(np.int32)  # cell 2 drawn over cell 1: they touch
foreground = (instances > 0).astype(np.int64)
merged = foreground.copy()  # one blob
separated = (separation_border(instances) > 0).astype(np.int64)
check("the two cells touch (no gap between them)", np.any(np.abs(np.diff(instances[64])) == 1))
scores = {}
for name, pred in [("merged blob", merged), ("separated", separated)]:
    scores[name] = (iou(foreground, pred), instance_f1(instances, pred))
    s = scores[name][1]
    print(f"  {name:<12} pixel IoU {scores[name][0]:.3f}   instances: {s.n_pred} predicted, {s.matched} matched of "
          f"{s.n_true}: precision {s.precision:.2f}, recall {s.recall:.2f}, F1 {s.f1:.3f}")
check("the merged blob has a perfect pixel IoU", scores["merged blob"][0] == 1.0)
check_close("... but instance F1 = 2/3 (one of the two cells found)", scores["merged blob"][1].f1, 2 / 3, atol=1e-12)
check("the separated prediction has the lower pixel IoU", scores["separated"][0] < scores["merged blob"][0])
check("... and finds both cells: instance F1 = 1", scores["separated"][1].f1 == 1.0)

# %% [markdown]
# ## The main figure

# %%
fig = plt.figure(figsize=(12, 6.5))
grid = fig.add_gridspec(2, 4)
for k, (title, m) in enumerate([("y_true", y_true), ("y_pred", y_pred), ("intersection: 3", intersection),
                                ("union: 5 (not 6)", union)]):
    ax = fig.add_subplot(grid[0, k])
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1.4)
    for (r, c), v in np.ndenumerate(m.astype(int)):
        ax.text(c, r, str(v), ha="center", va="center", fontsize=14)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
ax = fig.add_subplot(grid[1, 0:2])
curve = np.linspace(0, 1, 101)
ax.scatter(iou_each, dice_each, s=4, alpha=0.4, label="random mask pairs")
ax.plot(curve, 2 * curve / (1 + curve), color="C1", label="2·IoU / (1 + IoU)")
ax.plot(curve, curve, color="gray", ls=":", lw=0.8)
ax.scatter([0.6], [0.75], color="C3", zorder=3, label="the 3x3 example: (0.6, 0.75)")
ax.set_xlabel("IoU")
ax.set_ylabel("Dice")
ax.legend(fontsize=8)
for k, (name, pred) in enumerate([("merged blob", merged), ("separated", separated)]):
    ax = fig.add_subplot(grid[1, 2 + k])
    components, _ = ndimage.label(pred)  # what instance_f1 sees: one colour per connected component
    ax.imshow(components, cmap="viridis", vmin=0, vmax=2)
    ax.contour(instances, levels=[0.5, 1.5], colors="w", linewidths=0.6)  # the true cells' outlines
    ax.set_xlim(25, 100)
    ax.set_ylim(95, 33)
    ax.set_title(f"{name}\npixel IoU {scores[name][0]:.2f}, instance F1 {scores[name][1].f1:.2f}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
lesson.save(fig)
print("\nlesson 04 done: every check passed")
