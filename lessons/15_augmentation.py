# %% [markdown]
# # Lesson 15: augmentation — flips, rotations, the paper's elastic deformation
#
# Teaches `unet_from_scratch/data/transforms.py` (`RandomFlip`, `RandomRotate90`, `ElasticDeform`, `Sample`) and
# `data/targets.py` (`weight_map`). The U-Net paper (Sec. 3.1): "Data augmentation is essential to teach the
# network the desired invariance and robustness properties, when only few training samples are available ...
# random elastic deformations of the training samples seem to be the key concept to train a segmentation network
# with very few annotated images. We generate smooth deformations using random displacement vectors on a coarse
# 3 by 3 grid. The displacements are sampled from a Gaussian distribution with 10 pixels standard deviation.
# Per-pixel displacements are then computed using bicubic interpolation."
#
# The notes' guide lists "More data augmentation" first among the cures for overfitting, and its own gentle
# augmentation ("Horizontal flips, Small rotations (±5%) ..."). In segmentation a geometric change must move the
# image, its labels and its weight map together, or the network learns from a mask that no longer covers its cell.
#
# Run: `python lessons/15_augmentation.py [--out DIR] [--fast]`.

# %%
import shutil

import matplotlib.pyplot as plt
import numpy as np
from _lesson import check, check_close, section, start
from scipy import ndimage

from unet_from_scratch.data import ElasticDeform, RandomFlip, RandomRotate90, Sample, SyntheticCells
from unet_from_scratch.data.targets import prepare_labels, weight_map
from unet_from_scratch.data.transforms import elastic_displacement, warp
from unet_from_scratch.training import Trainer, plots
from unet_from_scratch.training.config import TrainConfig, apply_overrides, validate
from unet_from_scratch.training.progress import Progress, read_history

lesson = start("15_augmentation", "flips, rotations, elastic deformation: image, labels and weight map together")
if lesson.fast:  # a tiny run spends most of its time drawing its end-of-run pictures: --fast skips them
    plots.plot_curves = plots.plot_predictions = plots.plot_weight_map = lambda *args, **kwargs: None

# %% [markdown]
# ## One sample: image, labels, weight map
#
# A `Sample` holds the image (C, H, W), the labels (H, W) and the weight map (H, W). The labels are the instance ids
# with the paper's one-pixel background gap carved between touching cells (`prepare_labels`), the weight map the
# paper's w = w_c + w0·exp(-(d1 + d2)²/2σ²) with w0 = 10, σ = 5 px (lesson 6), computed from them (`weight_map`).

# %%
section("a sample")
size = 96 if lesson.fast else 128
image, mask = SyntheticCells(1, size=size, seed=4)[0]
labels = prepare_labels(mask, "instances")
class_weights = (1.0, 1.0)
weights = weight_map(labels, "instances", class_weights)
sample = Sample(image.astype(np.float32), labels, weights)
ids = set(np.unique(labels).tolist())
print(f"  {size} x {size}: {len(ids) - 1} cells, weight map {weights.min():.2f} ... {weights.max():.2f}")

# %% [markdown]
# ## Flips and 90-degree rotations
#
# They permute the pixels, nothing more: every field is moved exactly, the labels stay the same set of ids, and
# since the distances d1, d2 are Euclidean (isotropic), the weight map of the moved labels is the moved weight map.
# Eight such variants (the dihedral group of the square) cost nothing and lose nothing. (The guide's "Small
# rotations (±5%)" are Keras's `RandomRotation(0.05)`, a fraction of a full turn: up to ±18 degrees, not ±5;
# `--augment affine` gives small rotations of any angle here, `RandomAffine(degrees=10)`.)

# %%
section("flips and rotations")
rng = np.random.default_rng(0)
flip, rotate = RandomFlip(p=1.0), RandomRotate90()
flipped = flip(sample, rng)  # p = 1: both axes flipped
check("RandomFlip(p=1) flips image, labels and weights alike",
      np.array_equal(flipped.image, sample.image[:, ::-1, ::-1]) and np.array_equal(flipped.labels, labels[::-1, ::-1])
      and np.array_equal(flipped.weights, weights[::-1, ::-1]))
turns, alike = [], []
for _ in range(12):
    rotated = rotate(sample, rng)
    k = next(k for k in range(4) if np.array_equal(rotated.labels, np.rot90(labels, k)))
    turns.append(k)
    alike.append(np.array_equal(rotated.image[0], np.rot90(sample.image[0], k))
                 and np.array_equal(rotated.weights, np.rot90(weights, k)))
print(f"  12 draws of RandomRotate90: quarter turns {turns}")
check("every rotation moves image, labels and weights alike", all(alike))
check("RandomRotate90 draws each of 0, 90, 180, 270 degrees", set(turns) == {0, 1, 2, 3})
check("the guide's ±5% rotation, as a fraction of a turn, is ±18 degrees", round(0.05 * 360) == 18)
recomputed = weight_map(flipped.labels, "instances", class_weights)
check("the weight map of the flipped labels is the flipped weight map (isotropic distances)",
      np.allclose(recomputed, flipped.weights, atol=1e-5))

# %% [markdown]
# ## The elastic deformation
#
# `ElasticDeform(sigma=10, grid=3)` draws 2 x 3 x 3 displacements from N(0, 10²) pixels: one (dy, dx) for each
# corner, edge midpoint and the centre. `elastic_displacement` interpolates them to every pixel with a bicubic
# spline, which passes through the nine values, and `warp` reads every field at (row + dy, col + dx): image and
# weight map linearly, the labels by nearest neighbour, beyond the edge mirrored. We draw the displacements with the
# transform's own generator to show them, and check the transform is exactly that warp.

# %%
section("the elastic deformation: 3 x 3 grid, 10 px")
elastic = ElasticDeform(sigma=10.0, grid=3)
coarse = np.random.default_rng(7).normal(0.0, 10.0, size=(2, 3, 3))  # what ElasticDeform draws from seed 7
field = elastic_displacement(coarse, (size, size))  # (2, H, W)
warped = elastic(sample, np.random.default_rng(7))
reference = warp(sample, field)
check("ElasticDeform = warp by the spline of its 3 x 3 draws",
      all(np.array_equal(a, b) for a, b in zip((warped.image, warped.labels, warped.weights),
                                               (reference.image, reference.labels, reference.weights))))
grid_points = np.linspace(0, size - 1, 3)  # where the nine values sit: 0, (size - 1) / 2, size - 1
odd = elastic_displacement(coarse, (97, 97))  # an odd side puts the midpoints on pixels: 0, 48, 96
check("the per-pixel field passes through the nine coarse displacements (corners, edge midpoints, centre)",
      np.allclose(odd[:, ::48, ::48], coarse, atol=1e-6) and np.allclose(field[:, ::size - 1, ::size - 1],
                                                                        coarse[:, ::2, ::2], atol=1e-6))
draws = np.random.default_rng(1).normal(0.0, 10.0, size=(2000, 2, 3, 3))
check_close("the coarse displacements have a standard deviation of 10 px", draws.std(), 10.0, rtol=0.03)
print(f"  this draw: coarse |d| up to {np.abs(coarse).max():.1f} px; per pixel |d| up to "
      f"{np.hypot(*field).max():.1f} px, mean {np.hypot(*field).mean():.1f} px")

# %% [markdown]
# ### The labels stay labels
#
# Interpolating a label image linearly would invent values: halfway between cell 3 and cell 7 lies "cell 5", a
# cell that is not there, and between a cell and the background a fraction. Nearest-neighbour reading (order 0)
# only ever copies an id that exists. Some small cells may leave the frame or be squeezed out; no id is created.

# %%
section("labels stay labels")
new_ids = set(np.unique(warped.labels).tolist()) - ids
print(f"  ids before {len(ids)}, after {len(np.unique(warped.labels))}; new ids {sorted(new_ids)}")
check("no new label id after the elastic warp (nearest neighbour)", not new_ids)
check("the warped labels are still integers", np.issubdtype(warped.labels.dtype, np.integer))
rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
linear = ndimage.map_coordinates(labels.astype(np.float64), [rows + field[0], cols + field[1]], order=1,
                                 mode="reflect")  # what a linear reading of the labels would give
invented = np.mean(~np.isin(linear, list(ids)))
print(f"  read linearly instead: {invented:.1%} of the pixels get a value that is no id of this image")
check("a linear reading of the labels would invent values (over 1% of the pixels)", invented > 0.01)

# %% [markdown]
# ### ... but a warp can close the carved gaps
#
# The one-pixel background line between touching cells (`separation_border`: a cell pixel with an 8-neighbour of
# another cell becomes background) is carved before the transforms. Nearest-neighbour reading keeps every id, but
# where the warp squeezes a one-pixel line it can skip it: two cells touch again at a few pixels, and in the target
# (cell / background) they merge there. Carving again after the warp (`separation_border` on the warped labels)
# restores the line, and that is what `SegmentationDataset` does: it carves before the transforms (the weight map is
# computed from those labels, once, and cached) and again after them, so no target merges two cells. We count the
# pixels the warps closed, and check that carving again reopens every gap.

# %%
section("a warp can close the carved gaps")
from unet_from_scratch.reference.weight_map import separation_border  # noqa: E402

check("before the warp no two cells touch (carving again changes nothing)",
      np.array_equal(separation_border(labels), labels))
closed, restored = [], []
for seed in range(10 if lesson.fast else 20):
    moved_labels = elastic(sample, np.random.default_rng(seed)).labels
    recarved = separation_border(moved_labels)
    closed.append(int(np.sum((moved_labels > 0) & (recarved == 0))))
    restored.append(np.array_equal(separation_border(recarved), recarved))
print(f"  pixels where two cells touch again after each of {len(closed)} elastic warps: {closed}")
check("carving again after each warp leaves no two cells touching", all(restored))

# %% [markdown]
# ### The weight map moves with them
#
# The dataset computes the weight map once per image, before any augmentation, and the transform warps it with the
# labels (the paper precomputes its maps; `data/dataset.py`). Is that the map of the warped labels? Where the map
# is smooth (in the cells' cores, where it is the constant w_c, and far out in the background) warping and
# recomputing agree. Where it changes fast they differ: in the narrow gaps between cells the warp stretches and
# squeezes the gaps, so d1 + d2 of the warped labels is not the warped d1 + d2; and on a cell's rim the linear
# reading of the map blends the cell's w_c with the high border weight just outside it, where the labels (read by
# nearest neighbour) say "cell". We compare the two by how fast the map varies.

# %%
section("warp then compute vs compute then warp")
moved = warped.weights
computed = weight_map(warped.labels, "instances", class_weights)
difference = np.abs(moved - computed)
slope = np.hypot(*np.gradient(computed))  # how fast the map varies, per pixel
smooth = slope <= np.quantile(slope, 0.5)  # (over half the pixels are flat: slope 0)
steep = slope > np.quantile(slope, 0.95)
inside = warped.labels > 0
core = ndimage.binary_erosion(inside, iterations=2)  # cells without their 2-pixel rim
print(f"  inside cells agreeing to 1e-3: {np.mean(difference[inside] < 1e-3):.1%}, "
      f"in their cores (2 px in from the edge): {np.mean(difference[core] < 1e-3):.1%}")
print(f"  |moved - recomputed|: inside cells {difference[inside].mean():.3f}, where the map is smoothest (half the "
      f"pixels) {difference[smooth].mean():.3f}, where it is steepest (top 5%) {difference[steep].mean():.3f}; "
      f"the map's range {computed.min():.2f} ... {computed.max():.2f}")
check("in the cells' cores the two agree (the constant w_c) on over 99% of the pixels",
      np.mean(difference[core] < 1e-3) > 0.99)
check("where the map is smooth they agree to 0.1 on average", difference[smooth].mean() < 0.1)
check("the disagreement sits where the map is steep (over 5x the smooth half's)",
      difference[steep].mean() > 5 * difference[smooth].mean())

# %% [markdown]
# ## Its effect on a small training set
#
# The setting of lesson 14's overfitting run (2 training images of 32 x 32, 8 for validation, a 16-channel U-Net,
# a constant rate; here 8 epochs) twice: without augmentation, and with flips, rotations and the elastic deformation
# (`--augment flip,rot90,elastic`). What is robust on so small a set: without augmentation the network memorises
# its two images (training IoU about 1) and the training/validation gap is wide; with it each epoch sees new
# variants, the training IoU stays lower and the gap narrows. We print the validation scores, and assert only that
# augmentation does not make them worse.

# %%
section("training with and without augmentation")
SMALL = {"data.images": 10, "data.val_fraction": 0.8, "data.size": 32, "model.depth": 2, "model.base_channels": 16,
         "run.epochs": 8, "data.samples_per_epoch": 16, "run.batch_size": 2, "schedule.name": "constant",
         "run.device": "cpu", "run.progress": "lines"}  # fmt: skip
histories = {}
for name, augment in (("no augmentation", []), ("flip, rot90, elastic", ["flip", "rot90", "elastic"])):
    out = lesson.out / name.replace(", ", "_").replace(" ", "_")
    shutil.rmtree(out, ignore_errors=True)
    config = validate(apply_overrides(TrainConfig(), {**SMALL, "data.augment": augment, "run.out": str(out)}))
    Trainer(config, progress=Progress(enabled=False)).fit()
    histories[name] = rows = read_history(out / "history.csv")
    print(f"  {name:22s} final iou {rows[-1]['iou']:.3f}, val_iou {rows[-1]['val_iou']:.3f} (best "
          f"{max(r['val_iou'] for r in rows):.3f}), gap {rows[-1]['iou'] - rows[-1]['val_iou']:+.3f}, final val_loss "
          f"{rows[-1]['val_loss']:.3f}")
plain, augmented = histories["no augmentation"], histories["flip, rot90, elastic"]
check("without augmentation the two training images are memorised (training IoU > 0.99)", plain[-1]["iou"] > 0.99)
check("with augmentation the training IoU stays lower", augmented[-1]["iou"] < plain[-1]["iou"] - 0.05)
check("... and the train/validation gap narrows",
      augmented[-1]["iou"] - augmented[-1]["val_iou"] < plain[-1]["iou"] - plain[-1]["val_iou"])
check("the best validation IoU is no worse with augmentation (within 0.01)",
      max(r["val_iou"] for r in augmented) >= max(r["val_iou"] for r in plain) - 0.01)

fig, axes = plt.subplots(2, 4, figsize=(16, 8.2))
step = max(1, size // 12)
axes[0, 0].imshow(sample.image[0], cmap="gray")
axes[0, 0].set_title("image")
axes[0, 1].imshow(labels, cmap="tab20", interpolation="nearest")
axes[0, 1].set_title(f"labels ({len(ids) - 1} cells, gaps carved)")
axes[0, 2].imshow(weights, cmap="magma")
axes[0, 2].set_title("weight map (w0 = 10, σ = 5)")
axes[0, 3].imshow(sample.image[0], cmap="gray", alpha=0.5)
yy, xx = np.mgrid[0:size:step, 0:size:step]
axes[0, 3].quiver(xx, yy, field[1][::step, ::step], -field[0][::step, ::step], color="C1", angles="xy",
                  scale_units="xy", scale=1)
axes[0, 3].plot(*np.meshgrid(grid_points, grid_points), "o", color="C3")
axes[0, 3].set_title("displacements: 3 x 3 grid (red), 10 px std")
axes[1, 0].imshow(warped.image[0], cmap="gray")
axes[1, 0].set_title("warped image")
axes[1, 1].imshow(warped.labels, cmap="tab20", interpolation="nearest")
axes[1, 1].set_title("warped labels (nearest: no new ids)")
axes[1, 2].imshow(moved, cmap="magma")
axes[1, 2].set_title("warped weight map")
for name, rows in histories.items():
    epochs = [r["epoch"] for r in rows]
    line, = axes[1, 3].plot(epochs, [r["iou"] for r in rows], ls="--", marker=".")
    axes[1, 3].plot(epochs, [r["val_iou"] for r in rows], color=line.get_color(), marker=".", label=name)
axes[1, 3].set(xlabel="epoch", ylim=(0.5, 1.01), title="2 training images: iou (dashed), val_iou")
axes[1, 3].legend(fontsize=8)
for axis in axes.flat[:7]:
    axis.set_axis_off()
fig.tight_layout()
lesson.save(fig)

# A second figure: where warping the map and recomputing it disagree.
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for axis, array, title in zip(axes, (moved, computed, difference),
                              ("warped weight map", "weight map of the warped labels", "|difference|")):
    shown = axis.imshow(array, cmap="magma")
    axis.set_title(title)
    axis.set_axis_off()
    fig.colorbar(shown, ax=axis, shrink=0.8)
lesson.save(fig, "weight_map")
print("\nlesson 15 done: every check passed")
