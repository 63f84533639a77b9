# %% [markdown]
# # Lesson 16: overlap-tile inference
#
# Teaches `unet_from_scratch/inference.py` (`mirror_pad`, `predict_logits`, `predict_tiled`, `predict` with TTA)
# and `unet_from_scratch/sizes.py` (`context_margin`, `covering_input`). The notes (003) on the paper's Fig. 2:
# "the prediction for a particular area in the image (yellow area in the paper's figure) requires data from a larger
# context (blue area in the figure)", "each tile is segmented with some of its surrounding context, not just the
# tile alone", and "for tiles on the border of the image ... the missing input data is extrapolated by mirroring".
#
# One qualifier. The notes say the U-Net segments large images seamlessly because "the overlap ensures that the
# transitions between tiles are smooth and continuous". With the paper's valid convolutions it is stronger than
# smooth: the *output* tiles need not overlap at all (only their input windows do, by the context), and the tiled
# prediction is *equal* to a whole-image pass, pixel for pixel, as measured below. Overlap and blending are what a
# padded ("same") network needs, whose tiles do disagree at their borders.
#
# The notes' inference hygiene (004): "Make sure we pass the same transforms, image_size, normalization that was
# used during training" and "get the same order of classes": the model carries both in its `state_dict`.
#
# Run: `python lessons/16_overlap_tile.py [--out DIR] [--fast]`.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, section, start
from matplotlib.patches import Rectangle

from unet_from_scratch import sizes
from unet_from_scratch.data import Compose, RandomCrop, RandomFlip, RandomRotate90, SegmentationDataset
from unet_from_scratch.data import SyntheticCells
from unet_from_scratch.inference import importance_map, mirror_pad, predict, predict_logits, predict_tiled
from unet_from_scratch.inference import tile_plan
from unet_from_scratch.nn import UNet
from unet_from_scratch.reference.metrics import iou

lesson = start("16_overlap_tile", "overlap-tile inference: mirrored context, tiles equal to the whole image")
torch.manual_seed(0)
torch.set_num_threads(1)
DEPTH, BASE = 2, 8
STEPS = 40 if lesson.fast else 150

# %% [markdown]
# ## How much context an output pixel needs
#
# Every unpadded 3x3 convolution eats one pixel on each side; a pool halves what is left, so a convolution one
# level down eats two input pixels per side. `sizes.context_margin` adds it up, (input - output) / 2 =
# 6·2^depth - 4: 92 for the paper's depth 4 (572 -> 388), 20 for this lesson's depth-2 network. We check the
# formula against the output shapes torch's convolutions actually produce.

# %%
section("the context margin")
check("the paper's network: margin 92, 572 -> 388",
      sizes.context_margin(4) == 92 and sizes.output_size(572) == 388 == 572 - 2 * 92)
margin = sizes.context_margin(DEPTH)
probe = UNet(depth=DEPTH, base_channels=BASE, seed=0).eval()
shapes = {}
with torch.no_grad():
    for n in (44, 64, 104, 108):
        shapes[n] = probe(torch.zeros(1, 1, n, n)).shape[-1]
print(f"  depth {DEPTH}: margin {margin}; input -> output measured: " +
      ", ".join(f"{n} -> {o}" for n, o in shapes.items()))
check(f"margin = 6·2^depth - 4 = {6 * 2**DEPTH - 4}", margin == 6 * 2**DEPTH - 4)
check("every measured output is input - 2·margin", all(o == n - 2 * margin for n, o in shapes.items()))
check("valid inputs recur every 2^depth = 4 pixels: 105, 106, 107 are refused",
      all(sizes.trace(n, DEPTH, "valid") is None for n in (105, 106, 107)))

# %% [markdown]
# ## Mirroring the missing context
#
# Beyond the image's edge there is no data; the paper mirrors it (d c b a | a b c d, numpy's "symmetric"), the same
# extension the training crops get (`data.RandomCrop`), so the network sees the same kind of border at training and
# at inference. `mirror_pad` repeats the reflection when the pad is wider than the image.

# %%
section("mirror padding")
small = torch.arange(5 * 7, dtype=torch.float32).reshape(1, 1, 5, 7)
for pads in ((2, 3, 1, 4), (12, 9, 20, 15)):
    ours = mirror_pad(small, *pads)[0, 0].numpy()
    top, bottom, left, right = pads
    by_numpy = np.pad(small[0, 0].numpy(), ((top, bottom), (left, right)), mode="symmetric")
    check(f"mirror_pad{pads} equals np.pad(mode='symmetric'){' (pads wider than the image)' if top > 5 else ''}",
          np.array_equal(ours, by_numpy))

# %% [markdown]
# ## A briefly trained network, and what it carries into inference
#
# Two small U-Nets (depth 2, base 8): the paper's valid convolutions and a padded ("same") one, trained for a few
# Adam steps on 64x64 crops of the synthetic cells with the weight-map cross-entropy. For the valid one the crop's
# image is `margin` pixels wider on every side (mirrored where it leaves the image), the overlap-tile strategy at
# training time. The input normalisation is the training split's mean and std, stored in the model
# (`set_normalization`), and the class names are the data's, in its order: both are in the `state_dict`.

# %%
section("train two small networks")
source = SyntheticCells(16, size=128, seed=0)
base_set = SegmentationDataset(source)
stats = base_set.statistics
print(f"  training statistics: mean {stats.mean[0]:.4f}, std {stats.std[0]:.4f}, classes {stats.class_names}")


def train(padding: str) -> UNet:
    """A depth-2 U-Net trained for STEPS Adam steps on 64x64 crops, batch 4, weight-map cross-entropy."""
    m = sizes.context_margin(DEPTH, padding)
    data = SegmentationDataset(source, transform=Compose([RandomFlip(), RandomRotate90(), RandomCrop(64, m)]),
                               statistics=stats)  # fmt: skip
    model = UNet(depth=DEPTH, base_channels=BASE, padding=padding, seed=1)
    model.set_normalization(stats.mean, stats.std)
    model.class_names = list(stats.class_names)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for step in range(STEPS):
        items = [data[(int(i), int(rng.integers(2**31)))] for i in rng.integers(len(data), size=4)]
        x, y, w = (torch.from_numpy(np.stack(a)) for a in zip(*items))
        per_pixel = F.cross_entropy(model(x), y, reduction="none")  # (B, 64, 64)
        loss = (w * per_pixel).sum() / w.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"  {padding!r}: {STEPS} steps, last loss {loss.item():.3f}")
    return model.eval()


valid_model, same_model = train("valid"), train("same")

state = valid_model.state_dict()
rebuilt = UNet(**{k: v for k, v in valid_model.config.items() if k != "name"})
rebuilt.load_state_dict(state)
rebuilt.eval()
check("the state_dict carries the normalisation and the class order",
      torch.allclose(rebuilt.input_mean, torch.tensor(stats.mean, dtype=torch.float32))
      and rebuilt.class_names == list(stats.class_names) == ["background", "cell"])

# %% [markdown]
# ## One image, whole and in tiles
#
# A test image of a size the network does not take (not 4b + 28 on either side). `predict_logits` mirrors it out to
# the input of the smallest output window that covers it (`sizes.covering_input`), runs the network once and cuts
# the output back. We redo that by hand with `np.pad`, then cut the same output into tiles: each tile's input window
# is the tile plus `margin` pixels of context on every side, read from the same mirrored extension.

# %%
section("whole image vs tiles, valid convolutions")
height, width = (100, 134) if lesson.fast else (164, 230)
image, instances = SyntheticCells(1, size=(height, width), seed=101)[0]
x = torch.from_numpy(image[None])  # (1, 1, H, W), raw [0, 1] values: the model normalises
(in_h, out_h), (in_w, out_w) = sizes.covering_input(height, DEPTH), sizes.covering_input(width, DEPTH)
print(f"  image {height} x {width}: covered by an output window {out_h} x {out_w}, input {in_h} x {in_w}")
whole = predict_logits(valid_model, x)  # (1, 2, H, W)
padded_np = np.pad(image[0], ((margin, margin + out_h - height), (margin, margin + out_w - width)), mode="symmetric")
with torch.no_grad():
    by_hand = valid_model(torch.from_numpy(padded_np)[None, None])[..., :height, :width]
check("predict_logits = np.pad(symmetric) + one forward + crop", torch.equal(whole, by_hand))

# One tile by hand: output rows/cols [y, y + T) come from input rows/cols [y, y + T + 2·margin) of the padded image.
T = 24
y0, x0 = 40, 64  # multiples of 2^depth = 4
with torch.no_grad():
    tile = valid_model(torch.from_numpy(padded_np[y0 : y0 + T + 2 * margin, x0 : x0 + T + 2 * margin])[None, None])
    shifted = valid_model(torch.from_numpy(padded_np[y0 + 2 : y0 + 2 + T + 2 * margin,
                                                     x0 : x0 + T + 2 * margin])[None, None])  # fmt: skip
tile_error = (tile - whole[..., y0 : y0 + T, x0 : x0 + T]).abs().max().item()
shift_error = (shifted - whole[..., y0 + 2 : y0 + 2 + T, x0 : x0 + T]).abs().max().item()
print(f"  one {T} x {T} tile at ({y0}, {x0}) from a {T + 2 * margin} x {T + 2 * margin} window: "
      f"max |tile - whole| = {tile_error:.1e}; the same tile 2 rows down: {shift_error:.2f}")
check("a tile with its context, at a multiple of 2^depth, equals the whole-image pass", tile_error < 1e-5)
check("a window shifted by 2 rows (off the max-pool grid) does not", shift_error > 1e-3)

errors = {}
for t in (8, 24, 60, 1000):
    tiled = predict_tiled(valid_model, x, tile=t)
    errors[t] = (tiled - whole).abs().max().item()
    _, side, _, starts = tile_plan(valid_model, height, t)
    print(f"  tile {t:4d}: output tiles of {side} px, rows start at {starts[:6]}{' ...' if len(starts) > 6 else ''};"
          f" max |tiled - whole| = {errors[t]:.1e}")
check("for every tile size the tiled prediction equals the whole-image one (float32 rounding)",
      max(errors.values()) < 1e-5)

# %% [markdown]
# ## Padded convolutions: seams, and blending them away
#
# With `padding="same"` every convolution pads its input with zeros, so near a tile's border the network sees zeros
# where the whole-image pass sees the neighbouring pixels, and the tile's border pixels differ. Tiles that merely
# abut (`overlap=0`) leave those errors along every seam. `predict_tiled` overlaps them by half a tile and averages
# with a Gaussian importance map, w = exp(-(y - c_y)²/2σ_y² - (x - c_x)²/2σ_x²), σ = side / 8: where two tiles meet,
# the one whose centre is near outweighs the one whose edge is there. The lesson's figure shows the tiles with their
# context and the three error maps on one colour scale: valid tiles, 'same' tiles abutting, 'same' tiles blended.

# %%
section("same padding: seams with and without blending")
T_SAME = 32
w_map = importance_map(T_SAME, T_SAME).numpy()
c, s = (T_SAME - 1) / 2, T_SAME / 8
by_formula = np.exp(-((np.arange(T_SAME) - c) ** 2) / (2 * s**2))
check("the importance map is the product of two 1-D Gaussians, σ = side / 8",
      np.allclose(w_map, np.outer(by_formula, by_formula), rtol=1e-6, atol=0))
whole_same = predict_logits(same_model, x)
abutting = predict_tiled(same_model, x, tile=T_SAME, overlap=0.0)
blended = predict_tiled(same_model, x, tile=T_SAME, overlap=0.5)
err_abut = (abutting - whole_same).abs().amax(1)[0].numpy()
err_blend = (blended - whole_same).abs().amax(1)[0].numpy()
# Distance of each pixel to the nearest border between two abutting tiles (not the image's own edge).
_, _, _, sy = tile_plan(same_model, height, T_SAME, 0.0)
_, _, _, sx = tile_plan(same_model, width, T_SAME, 0.0)
seams_y, seams_x = [s for s in sy if s > 0], [s for s in sx if s > 0]
dist = np.minimum(np.min(np.abs(np.arange(height)[:, None] - np.array(seams_y)[None] + 0.5), 1)[:, None],
                  np.min(np.abs(np.arange(width)[:, None] - np.array(seams_x)[None] + 0.5), 1)[None, :])  # fmt: skip
near, far = dist <= 2, dist >= 8
print(f"  abutting tiles: max error {err_abut.max():.3f}, mean {err_abut[near].mean():.4f} within 2 px of a seam, "
      f"{err_abut[far].mean():.5f} 8 px or more away")
print(f"  blended (overlap 0.5, Gaussian): max error {err_blend.max():.3f}, mean {err_blend.mean():.5f}")
flips_abut = (abutting.argmax(1) != whole_same.argmax(1)).float().mean().item()
flips_blend = (blended.argmax(1) != whole_same.argmax(1)).float().mean().item()
print(f"  pixels whose class changes: {flips_abut:.2%} abutting, {flips_blend:.2%} blended")
check("abutting 'same' tiles are wrong along the seams: > 10x the error 8 px away",
      err_abut[near].mean() > 10 * err_abut[far].mean() and err_abut.max() > 1e-2)
check("blending lowers both the largest and the mean seam error",
      err_blend.max() < err_abut.max() and err_blend[near].mean() < err_abut[near].mean())
check("valid convolutions need no blending: their error is float rounding, < 1e-4 of the seams'",
      max(errors.values()) < 1e-4 * err_abut.max())

# The figure: the image (inside the white frame) with its mirrored extension, the output tiles of a 48-pixel tiling
# and the input window of one tile (dashed): its output plus 20 pixels of context all round, reaching into the
# mirror at the edge; then the three error maps on one colour scale.
T_FIG = 48
_, side_y, _, starts_y = tile_plan(valid_model, height, T_FIG)
_, side_x, _, starts_x = tile_plan(valid_model, width, T_FIG)
canvas = np.pad(image[0], ((margin, margin + starts_y[-1] + side_y - height),
                           (margin, margin + starts_x[-1] + side_x - width)), mode="symmetric")  # fmt: skip
err_valid = (predict_tiled(valid_model, x, tile=T_FIG) - whole).abs().amax(1)[0].numpy()
fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
axes[0].imshow(canvas, cmap="gray")
axes[0].add_patch(Rectangle((margin - 0.5, margin - 0.5), width, height, fill=False, ec="white", lw=2))
colours = plt.cm.tab10(np.arange(10))
for i, ty in enumerate(starts_y):
    for j, tx in enumerate(starts_x):
        axes[0].add_patch(Rectangle((margin + tx - 0.5, margin + ty - 0.5), side_x, side_y, fill=False,
                                    ec=colours[(i + 2 * j) % 10], lw=1.2))  # fmt: skip
axes[0].add_patch(Rectangle((-0.5, -0.5), side_x + 2 * margin, side_y + 2 * margin, fill=False, ec="yellow",
                            ls="--", lw=2))  # fmt: skip
axes[0].add_patch(Rectangle((margin - 0.5, margin - 0.5), side_x, side_y, fill=True, fc="yellow", alpha=0.25))
axes[0].set_title(f"{len(starts_y) * len(starts_x)} output tiles of {side_y}x{side_x} px; one tile's input "
                  f"(dashed):\n+{margin} px of context, mirrored beyond the image (white frame)", fontsize=9)
vmax = err_abut.max()
panels = [(err_valid, f"valid convolutions, {T_FIG} px tiles:\n|tiled - whole| max {err_valid.max():.1e}"),
          (err_abut, f"'same' padding, abutting tiles:\n|tiled - whole| max {err_abut.max():.2f}: seams"),
          (err_blend, f"'same' padding, overlap 0.5, Gaussian blend:\n|tiled - whole| max {err_blend.max():.2f}")]
for ax, (err, title) in zip(axes[1:], panels):
    im = ax.imshow(err, cmap="viridis", vmin=0, vmax=vmax)
    ax.set_title(title, fontsize=9)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.colorbar(im, ax=axes[1:], shrink=0.8, label="max over classes of |logit difference|")
lesson.save(fig)

# %% [markdown]
# ## The same normalisation and class order as in training
#
# The network was trained on (x - mean) / std with the training split's numbers; it applies them itself, so an
# input must arrive as the training images did (here floats in [0, 1]). An image read as 0-255 integers, or
# normalised a second time by hand, is another input altogether. And channel k of the logits is
# `model.class_names[k]`: read the foreground by its name, not by a remembered index.

# %%
section("normalisation and class order")
cell = valid_model.class_names.index("cell")
truth = (instances > 0).astype(int)[None]
scores = {}
for name, inp in (("as in training ([0, 1] floats)", x), ("read as 0-255", x * 255),
                  ("normalised twice", (x - stats.mean[0]) / stats.std[0])):  # fmt: skip
    predicted = (predict_logits(valid_model, inp).argmax(1) == cell).numpy().astype(int)
    scores[name] = iou(truth, predicted)
    print(f"  {name}: foreground IoU {scores[name]:.3f}")
by_hand_norm = UNet(**{k: v for k, v in valid_model.config.items() if k != "name"})
by_hand_norm.load_state_dict(state)
by_hand_norm.set_normalization(0.0, 1.0)  # the same weights, normalisation done outside
check("the model's stored normalisation = normalising by hand into a model with mean 0, std 1",
      torch.allclose(predict_logits(valid_model, x), predict_logits(by_hand_norm.eval(),
                                                                     (x - stats.mean[0]) / stats.std[0]),
                     atol=1e-5))  # fmt: skip
best = scores["as in training ([0, 1] floats)"]
check("an image read as 0-255 loses over 0.2 IoU against the training normalisation",
      best > scores["read as 0-255"] + 0.2)
check("normalising twice scores lower too", best > scores["normalised twice"])
swapped = (predict_logits(valid_model, x).argmax(1) == 0).numpy().astype(int)  # the background read as cells
check("reading channel 0 as the cell class gives the complement: IoU far below", iou(truth, swapped) < best - 0.5)

# %% [markdown]
# ## Test-time augmentation
#
# `predict(tta=True)` averages the logits over the 8 symmetries of the square: each rotated/flipped image is
# predicted and turned back before the mean. We recompute the mean by hand with `torch.rot90` and `flip`. The
# network itself is not rotation-equivariant (its learnt filters are not symmetric), but the mean over the whole
# group is: the TTA prediction of a rotated image is the rotated TTA prediction, exactly, when the image side is an
# output side the network gives, so that the mirrored margin is the same on all four sides.

# %%
section("test-time augmentation")
tta = predict(valid_model, x, tta=True)
manual = 0
for flip in (False, True):
    for k in range(4):
        g = torch.rot90(x, k, (-2, -1))
        g = g.flip(-1) if flip else g
        out = predict_logits(valid_model, g)
        out = out.flip(-1) if flip else out
        manual = manual + torch.rot90(out, -k, (-2, -1)) / 8
check("predict(tta=True) = the mean over 8 rotations and flips, undone, by hand",
      torch.allclose(tta, manual, atol=1e-5))
sq = x[..., :64, :64]  # 64 = 4·19 - 12: an output side of the depth-2 network
check("64 is an output side of the network: covering_input(64) = (104, 64)",
      sizes.covering_input(64, DEPTH) == (104, 64))
plain_rot = (predict(valid_model, torch.rot90(sq, 1, (-2, -1))) - torch.rot90(predict(valid_model, sq), 1, (-2, -1)))
tta_rot = (predict(valid_model, torch.rot90(sq, 1, (-2, -1)), tta=True)
           - torch.rot90(predict(valid_model, sq, tta=True), 1, (-2, -1)))  # fmt: skip
print(f"  rotate then predict vs predict then rotate: plain {plain_rot.abs().max():.3f}, TTA {tta_rot.abs().max():.1e}")
check("the plain network is not rotation-equivariant", plain_rot.abs().max().item() > 1e-2)
check("the TTA prediction is: a rotated image gives the rotated prediction", tta_rot.abs().max().item() < 1e-5)
tta_iou = iou(truth, (tta.argmax(1) == cell).numpy().astype(int))
print(f"  foreground IoU: {best:.3f} plain, {tta_iou:.3f} with TTA")

print("\nlesson 16 done: every check passed")
