# %% [markdown]
# # Lesson 12: epochs, iterations, batches
#
# Teaches `unet_from_scratch/training/loop.py` (`Trainer.steps_per_epoch`) and `data/sampling.py`
# (`EpochSampler`). The notes' training guide defines two of the three words:
#
# - "An **epoch** is one complete pass through the entire training dataset."
# - "A **batch** is a group of training examples processed together before updating model weights."
#
# and the third is in the line it teaches to read: `23/23 - 14s - ... - 14s/epoch - 594ms/step`, where 23/23 is
# "Current batch / Total batches in the epoch". One batch makes one optimizer step, also called an **iteration**:
# the loss of the batch, its gradient, one update of the weights. So steps per epoch = training samples / batch
# size, and a run makes epochs x steps per epoch updates.
#
# On batch size the guide says: small batches (8-16) use "less memory", large ones (32-64) give "more stable
# gradients" and require "more memory". This lesson measures both on the synthetic cells: the variance of the
# gradient falls as 1/B, the memory of the activations grows as B.
#
# Run: `python lessons/12_epochs.py [--out DIR] [--fast]`.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start

from unet_from_scratch.data import SyntheticCells
from unet_from_scratch.nn import UNet
from unet_from_scratch.training import Trainer, load_config, plots
from unet_from_scratch.training.build import MIN_SAMPLES_PER_EPOCH
from unet_from_scratch.training.config import TrainConfig, apply_overrides, validate
from unet_from_scratch.training.progress import Progress, read_history

lesson = start("12_epochs", "epochs, iterations, batches: what each counts; batch size vs gradient noise and memory")
if lesson.fast:  # a tiny run spends most of its time drawing its end-of-run pictures: --fast skips them
    plots.plot_curves = plots.plot_predictions = plots.plot_weight_map = lambda *args, **kwargs: None
torch.manual_seed(0)

# %% [markdown]
# ## The notes' line, counted
#
# `23/23 - 14s - ... - 14s/epoch - 594ms/step`: 23 steps of 594 ms are 13.7 s, which the line rounds to 14 s:
# the numbers agree (the epoch's time is almost all steps; validation adds a little). With the guide's
# recommended batch of 32, 23 batches per epoch mean between 22·32 + 1 = 705 and 23·32 = 736 training images
# (Keras keeps the last, partial batch: steps = ceil(n / B)).

# %%
section("the notes' line: 23/23 - 14s - 594ms/step")
steps, ms_per_step, batch = 23, 594, 32
print(f"  {steps} steps x {ms_per_step} ms = {steps * ms_per_step / 1000:.2f} s per epoch (the line says 14s)")
check("23 steps of 594 ms round to the 14 s of the line", round(steps * ms_per_step / 1000) == 14)
images = [n for n in range(1, 2000) if -(-n // batch) == steps]
print(f"  at batch {batch}, ceil(n / {batch}) = {steps} for n = {images[0]} ... {images[-1]} training images")
check("23 batches of 32 are 705 to 736 images", (images[0], images[-1]) == (705, 736))

# %% [markdown]
# ## The same words in this trainer
#
# Here an epoch is `samples_per_epoch` training samples, by default max(training images, 160): the images are
# drawn in a new random order each epoch (`EpochSampler`), each passing the random augmentation and crop. With at
# least 160 training images an epoch is the notes' "one complete pass"; with fewer, the permutation is repeated,
# so that a handful of large images (cropped at random) still makes an epoch worth validating after. The trainer
# keeps only full batches (batch norm dislikes a batch of 1): steps per epoch = samples // batch size, the
# number in the `k/k` of its lines.
#
# The quick preset (the default run): 200 images, 20% held out for validation, batch 4, 12 epochs.

# %%
section("the quick preset: samples, batches, steps")
quick = load_config("quick")
train_images = quick.data.images - round(quick.data.images * quick.data.val_fraction)
samples = quick.data.samples_per_epoch or max(train_images, MIN_SAMPLES_PER_EPOCH)
quick_steps = samples // quick.run.batch_size
print(f"  {quick.data.images} images, {quick.data.val_fraction:.0%} for validation -> {train_images} training; "
      f"{samples} samples per epoch / batch {quick.run.batch_size} = {quick_steps} steps per epoch; "
      f"x {quick.run.epochs} epochs = {quick.run.epochs * quick_steps} optimizer steps")
check("the quick preset: 160 training images, 40 steps per epoch, 480 steps in all",
      (train_images, quick_steps, quick.run.epochs * quick_steps) == (160, 40, 480))
if not lesson.fast:  # building the preset's trainer computes 160 weight maps: a few seconds
    trainer = Trainer(validate(apply_overrides(load_config("quick"), {"run.out": str(lesson.out / "quick")})),
                      progress=Progress(enabled=False))
    check("... and the Trainer built from the preset counts the same",
          (len(trainer.train_set), len(trainer.sampler), trainer.steps_per_epoch, trainer.total_steps)
          == (160, 160, 40, 480))


# %% [markdown]
# A real run, small: 20 images (16 for training), batch 4, 3 epochs (1 with `--fast`). Its epoch is 160 samples,
# so every training image is drawn 160 / 16 = 10 times per epoch, each time with its own flip, rotation and crop,
# and the run makes 3 x 40 = 120 optimizer steps. With `--samples-per-epoch 16` the epoch becomes the notes' one
# pass: 4 steps. We count the draws in the sampler's order and the optimizer steps the run made.

# %%
section("a real Trainer: steps per epoch and samples per epoch")


epochs = 1 if lesson.fast else 3


def small_run(name: str, **overrides) -> Trainer:
    settings = {"data.images": 20, "data.size": 32, "model.depth": 2, "model.base_channels": 4, "run.epochs": epochs,
                "run.batch_size": 4, "run.progress": "lines", "run.device": "cpu", "run.out": str(lesson.out / name)}
    return Trainer(validate(apply_overrides(TrainConfig(), {**settings, **overrides})), progress=Progress("lines"))


for name, overrides, want_samples in (("default", {}, 160), ("one_pass", {"data.samples_per_epoch": 16}, 16)):
    (lesson.out / name / "last.pt").unlink(missing_ok=True)  # a rerun of the lesson starts afresh
    trainer = small_run(name, **overrides)
    indices, _ = trainer.sampler.order()
    draws = np.bincount(indices, minlength=len(trainer.train_set))
    print(f"  {name}: {len(trainer.train_set)} training images, {len(trainer.sampler)} samples per epoch, "
          f"{trainer.steps_per_epoch} steps of {trainer.batch_size}; each image drawn {draws.min()}-{draws.max()}x")
    check(f"{name}: samples per epoch = {want_samples}, steps per epoch = samples // batch",
          len(trainer.sampler) == want_samples and trainer.steps_per_epoch == want_samples // 4)
    check(f"{name}: every training image is drawn {want_samples // 16} time(s) per epoch",
          np.all(draws == want_samples // 16))
    if name == "default":
        trainer.fit()
        rows = read_history(lesson.out / name / "history.csv")
        check(f"the run made epochs x steps per epoch = {epochs} x 40 = {40 * epochs} optimizer steps",
              trainer.state["step"] == 40 * epochs and len(rows) == epochs)
        print(f"  its last line: {trainer.steps_per_epoch}/{trainer.steps_per_epoch} - ... "
              f"(k/k counts the steps of the epoch; history.csv has {len(rows)} row(s), one per epoch)")

# %% [markdown]
# ## Batch size against gradient noise
#
# The gradient of a batch is an estimate of the gradient of the whole training set: the loss is a mean over the
# batch's samples, so (without batch norm, which couples the samples) the batch's gradient is the mean of their
# per-sample gradients g_i. If the g_i have covariance Σ around their mean ḡ, a batch of B samples drawn at
# random has
#
#     E ||g_B - ḡ||² = tr(Σ) / B                           (drawn with replacement)
#     E ||g_B - ḡ||² = tr(Σ) / B · (N - B) / (N - 1)       (B distinct samples of N, as an epoch's permutation)
#
# The variance falls as 1/B, the noise's size (its square root) only as 1/sqrt(B): 16 times the batch buys 4
# times less noise, for 16 times the compute per step. This is what the guide's "more stable gradients" is.
#
# We measure it: a small U-Net (no batch norm, "same" padding), a pool of N synthetic images, one gradient per
# image from the model's own backward, then many random batches of 1, 4 and 16.

# %%
section("the variance of the gradient against the batch size")
pool_size, size = (48, 32) if lesson.fast else (96, 48)
cells = SyntheticCells(pool_size, size=size, seed=3)
images = torch.from_numpy(np.stack([cells[i][0] for i in range(pool_size)])).float()  # (N, 1, H, W)
targets = torch.from_numpy(np.stack([cells[i][1] > 0 for i in range(pool_size)])).long()  # (N, H, W) cell / not
model = UNet(depth=2, base_channels=4, padding="same", batch_norm=False, seed=0)
parameters = [p for p in model.parameters() if p.requires_grad]


def gradient(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """The gradient of the mean pixel cross-entropy over the batch (x, y), flattened to one vector."""
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in parameters]).numpy().astype(np.float64)


per_sample = np.stack([gradient(images[i : i + 1], targets[i : i + 1]) for i in range(pool_size)])  # (N, P)
mean_gradient = per_sample.mean(0)
trace = ((per_sample - mean_gradient) ** 2).sum(1).mean() * pool_size / (pool_size - 1)  # tr(Σ), unbiased
batch_of_4 = gradient(images[:4], targets[:4])
check("a batch's gradient is the mean of its samples' gradients (no batch norm)",
      np.allclose(batch_of_4, per_sample[:4].mean(0), rtol=1e-4, atol=1e-7 * np.abs(batch_of_4).max()))

# ||mean over the batch of (g_i - ḡ)||² = (1/B²) Σ_ij K_ij over the batch's pairs, K the centred Gram matrix:
# one N x N matrix instead of a (draws, B, P) stack of gradients.
centred = per_sample - mean_gradient
gram = centred @ centred.T  # (N, N)
rng = np.random.default_rng(0)
draws = 4000 if lesson.fast else 10000
batch_sizes = [1, 4, 16]
measured = {"with replacement": [], "without replacement": []}
for b in batch_sizes:
    picks = {"with replacement": rng.integers(pool_size, size=(draws, b)),
             "without replacement": np.argsort(rng.random((draws, pool_size)), axis=1)[:, :b]}
    for kind, index in picks.items():
        noise = gram[index[:, :, None], index[:, None, :]].sum((1, 2)) / b**2  # (draws,) ||g_B - ḡ||²
        measured[kind].append(float(noise.mean()))
    print(f"  B = {b:2d}: E||g_B - ḡ||² = {measured['with replacement'][-1]:.4g} with replacement "
          f"(tr Σ / B = {trace / b:.4g}), {measured['without replacement'][-1]:.4g} without "
          f"(x (N - B)/(N - 1): {trace / b * (pool_size - b) / (pool_size - 1):.4g})")
signal = float(mean_gradient @ mean_gradient)
print(f"  ||ḡ||² = {signal:.4g}, tr(Σ) / ||ḡ||² = {trace / signal:.2f}: at initialisation the mean gradient is "
      "large; late in training it shrinks and the noise dominates")
for i, b in enumerate(batch_sizes):
    check_close(f"B = {b}: the variance is tr(Σ) / B (drawn with replacement, within 15%)",
                measured["with replacement"][i], trace / b, rtol=0.15)
    check_close(f"B = {b}: without replacement it is tr(Σ) / B · (N - B) / (N - 1) (within 15%)",
                measured["without replacement"][i], trace / b * (pool_size - b) / (pool_size - 1), rtol=0.15)
ratio_4, ratio_16 = (measured["with replacement"][0] / measured["with replacement"][i] for i in (1, 2))
check("4x the batch: about 4x less variance; 16x the batch: about 16x less",
      3.2 < ratio_4 < 4.8 and 12.8 < ratio_16 < 19.2, f"(measured {ratio_4:.2f} and {ratio_16:.2f})")

# %% [markdown]
# ## Batch size against memory
#
# What grows with the batch is what the forward pass keeps for the backward: every layer's input or output
# (activations), one set per sample. The weights, their gradients and Adam's two moments are four copies of the
# parameters, whatever the batch. We count the bytes autograd saves (`torch.autograd.graph.saved_tensors_hooks`,
# each storage once, the weights left out) for the quick preset's model on 128 x 128 images.

# %%
section("memory against the batch size")
quick_model = UNet(depth=3, base_channels=16, padding="same", batch_norm=True, seed=0)
weights = {p.untyped_storage().data_ptr() for p in quick_model.parameters()}


def saved_bytes(batch: int, side: int = 128) -> int:
    """Bytes of the tensors autograd keeps from the forward pass of ``batch`` images, weights excluded."""
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        quick_model(torch.rand(batch, 1, side, side))
    return sum(storages.values())


memory_batches = [1, 2, 4, 8] if lesson.fast else [1, 2, 4, 8, 16]
activations = [saved_bytes(b) for b in memory_batches]
parameter_bytes = 4 * sum(p.numel() * p.element_size() for p in quick_model.parameters())
for b, m in zip(memory_batches, activations):
    print(f"  B = {b:2d}: activations {m / 2**20:7.1f} MiB; weights + gradients + Adam moments "
          f"{parameter_bytes / 2**20:.1f} MiB")
per_image = activations[0]
check("the saved activations grow as B (within 1%)",
      all(abs(m - b * per_image) <= 0.01 * b * per_image for b, m in zip(memory_batches, activations)))
check("at batch 4 the activations outweigh the four copies of the parameters", activations[2] > parameter_bytes)

fig, axes = plt.subplots(1, 3, figsize=(15, 4))
timeline = np.arange(3 * 40)
axes[0].step(timeline, timeline // 40 + 1, where="post")
for e in range(1, 3):
    axes[0].axvline(40 * e, color="gray", ls=":")
axes[0].set(xlabel="optimizer step (one batch = one iteration)", ylabel="epoch",
            title="3 epochs x 40 steps of 4 samples: 120 updates", yticks=[1, 2, 3])
for kind, style in (("with replacement", "o-"), ("without replacement", "s--")):
    axes[1].loglog(batch_sizes, measured[kind], style, label=f"measured, {kind}")
axes[1].loglog(batch_sizes, [trace / b for b in batch_sizes], "k:", label="tr(Σ) / B")
axes[1].set(xlabel="batch size B", ylabel="E ||g_B - ḡ||²", title="gradient noise falls as 1/B")
axes[1].set_xticks(batch_sizes, [str(b) for b in batch_sizes])
axes[1].legend(fontsize=8)
axes[2].plot(memory_batches, np.array(activations) / 2**20, "o-", label="activations kept for the backward")
axes[2].axhline(parameter_bytes / 2**20, color="C1", label="weights, gradients, Adam moments")
axes[2].set(xlabel="batch size B", ylabel="MiB", title="memory grows as B (quick model, 128 x 128)")
axes[2].legend(fontsize=8)
lesson.save(fig)
print("\nlesson 12 done: every check passed")
