# %% [markdown]
# # Lesson 13: learning-rate policies and the range test
#
# Teaches `unet_from_scratch/training/lr_finder.py` (`range_test`, `suggest`) and
# `unet_from_scratch/training/schedules.py` (`warmup_cosine`, `one_cycle`, `Plateau`). The notes:
#
# - "Pick the learning rate using learning rate finder. Pick the one with the steepest slope right before minimum
#   (mostly 1e-1 to the left of the minimum)."
# - "Fitting models using one-cycle learning rate policy helps us train more quickly and get to a better loss ...
#   With learning rate that is increasing at the beginning, we explore more and avoid getting stuck in those bumpy
#   regions. When it gets smaller again after it reaches its maximum, it kinda finds its way to the flatter part".
# - "To check if the maximum learning rate we picked is good, look if validation loss gets a little bit worse at
#   the beginning and then gets a lot better after that."
# - "When fine tuning a model, divide lr we used by 5 or 10 and use it as max_lr and then use lr_finder to get
#   min_lr", and "We can train CNN on small image sizes for faster experimentation. Then, we can fine tune the
#   model using bigger images".
#
# Every run here is a real run of the package's `Trainer`, small: 20 synthetic images of 32 x 32, a U-Net of depth
# 2 and 8 channels (no batch norm, no clipping: the range test then shows its divergence plainly), 8 steps of 4
# images per epoch, 6 epochs.
#
# Run: `python lessons/13_schedules.py [--out DIR] [--fast]`.

# %%
import shutil
from itertools import cycle

import matplotlib.pyplot as plt
import numpy as np
import torch
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start

from unet_from_scratch.train import main as train_cli
from unet_from_scratch.training import Trainer, load_checkpoint, load_config, plots
from unet_from_scratch.training.config import TrainConfig, apply_overrides, validate
from unet_from_scratch.training.lr_finder import range_test, suggest
from unet_from_scratch.training.progress import Progress, read_history
from unet_from_scratch.training.schedules import Plateau, learning_rate, one_cycle, warmup_cosine

lesson = start("13_schedules", "the LR range test, warmup + cosine, one-cycle, plateau; the fine-tuning recipe")
if lesson.fast:  # a tiny run spends most of its time drawing its end-of-run pictures: --fast skips them
    plots.plot_curves = plots.plot_predictions = plots.plot_weight_map = lambda *args, **kwargs: None
SMALL = {"data.images": 20, "data.size": 32, "model.depth": 2, "model.base_channels": 8, "model.batch_norm": False,
         "run.clip": 0.0, "data.samples_per_epoch": 32, "run.batch_size": 4, "run.epochs": 6, "run.seed": 1,
         "run.device": "cpu", "run.progress": "lines"}  # fmt: skip


def trainer(name: str, **overrides) -> Trainer:
    """A fresh small run in ``out/name`` (a rerun of the lesson replaces it)."""
    shutil.rmtree(lesson.out / name, ignore_errors=True)
    config = validate(apply_overrides(TrainConfig(), {**SMALL, "run.out": str(lesson.out / name), **overrides}))
    return Trainer(config, progress=Progress(enabled=False))


def run(name: str, **overrides) -> list[dict]:
    """Train a small run to the end; its history.csv rows."""
    trainer(name, **overrides).fit()
    return read_history(lesson.out / name / "history.csv")


# %% [markdown]
# ## The range test
#
# Smith's test (2017): train a few dozen steps while the rate grows exponentially, here from 1e-5 to 10 in 80
# steps, and watch the loss. First it stays flat (too small a rate to move), then it falls (the useful range), then
# it shoots up (divergence). One batch's loss is noisy, so `range_test` smooths it by an exponential moving average
# with Adam's bias correction, avg_k = 0.98·avg_{k-1} + 0.02·loss_k, smoothed_k = avg_k / (1 - 0.98^(k+1)), and
# stops once the smoothed loss exceeds 4x its minimum. `suggest` picks the steepest descent of the smoothed loss
# against log(lr), before the minimum. The step below is the trainer's own (its model, loss, optimizer, batches);
# `--lr-find` and `--lr auto` run the same test inside the trainer. The average remembers about 1 / (1 - 0.98) = 50
# steps, so on a short test the smoothed curve lags the raw one (figure): its minimum sits to the right of the raw
# loss's, one more reason not to train at it.

# %%
section("the LR range test")
finder = trainer("range_test")
raw = []


def step(rate: float, batch) -> float:
    loss, _ = finder.engine.train_step(batch, rate)  # forward, loss, backward, clipping, optimizer step at `rate`
    raw.append(loss)
    return loss


test = range_test(step, cycle(finder.loader), start=1e-5, end=10.0, steps=80)
lowest = int(np.argmin(test.losses))
suggestion, at_minimum = test.suggestion, float(test.rates[lowest])
print(f"  {len(test.rates)} steps, lr {test.rates[0]:.0e} ... {test.rates[-1]:.2g}; smoothed loss "
      f"{test.losses[0]:.3f} -> minimum {test.losses[lowest]:.3f} at lr {at_minimum:.3g} -> {test.losses[-1]:.3f}")
print(f"  steepest descent at lr {suggestion:.3g}: {at_minimum / suggestion:.1f}x below the minimum's rate")
smoothed, average = np.zeros(len(test.losses)), 0.0
for k, loss in enumerate(raw[: len(test.losses)]):
    average = 0.98 * average + 0.02 * loss
    smoothed[k] = average / (1 - 0.98 ** (k + 1))
check("every smoothed loss is the bias-corrected moving average of the raw ones", np.allclose(smoothed, test.losses))
check("the first smoothed loss is the first raw loss (the bias correction)", np.isclose(test.losses[0], raw[0]))
check("the test stopped on divergence: its last smoothed loss is over 4x the minimum",
      test.losses[-1] > 4 * test.losses[lowest] and len(test.rates) < 80)
slope = np.gradient(test.losses[: lowest + 1], np.log(test.rates[: lowest + 1]))
check("the suggestion is the steepest descent before the minimum",
      suggestion == suggest(test.rates, test.losses) and slope[list(test.rates).index(suggestion)] == slope[3:].min())
check("... and lies below the minimum's rate", suggestion < at_minimum)
check("the notes' rule of thumb: about a decade left of the minimum (here within 3x-30x)",
      3 < at_minimum / suggestion < 30, f"({at_minimum / suggestion:.1f}x)")

# %% [markdown]
# Why not the minimum itself? At the minimum the loss has stopped falling because the steps have become too
# large: it sits at the edge of divergence, and in the range test it was reached with weights already trained by
# all the smaller rates before. A run that *starts* at that rate, on fresh weights, blows up. We train at both: the
# minimum's rate with a constant policy, and the suggestion with the plateau policy, which is constant until the
# validation score stalls (so its first epoch runs at the suggestion too).

# %%
section("training at the suggestion and at the minimum")
histories = {"plateau": run("plateau", **{"schedule.name": "plateau", "optimizer.lr": suggestion,
                                          "schedule.plateau_patience": 0})}  # fmt: skip
histories["constant at the minimum"] = run("minimum", **{"schedule.name": "constant", "optimizer.lr": at_minimum})
first = {name: rows[0]["loss"] for name, rows in histories.items()}
for name, rows in histories.items():
    print(f"  {name:24s} loss " + " ".join(f"{r['loss']:.3g}" for r in rows)
          + " | val_iou " + " ".join(f"{r['val_iou']:.3f}" for r in rows))
check("at the minimum's rate the first epoch's loss is over 10x that at the suggestion",
      first["constant at the minimum"] > 10 * first["plateau"])
check("... and the run ends with the lower validation IoU",
      histories["constant at the minimum"][-1]["val_iou"] < histories["plateau"][-1]["val_iou"])
if not lesson.fast:
    histories["constant, suggestion / 30"] = run("small", **{"schedule.name": "constant",
                                                             "optimizer.lr": suggestion / 30})  # fmt: skip
    slow = histories["constant, suggestion / 30"]
    print("  constant, suggestion / 30 loss " + " ".join(f"{r['loss']:.3g}" for r in slow))
    check("30x below the suggestion the loss falls more slowly: higher after 6 epochs",
          histories["constant, suggestion / 30"][-1]["loss"] > histories["plateau"][-1]["loss"])

# %% [markdown]
# ## Plateau reduction
#
# `Plateau` (torch's `ReduceLROnPlateau`, mode "max") multiplies the rate by `factor` (0.5) once the validation IoU
# has not improved for more than `patience` epochs; with patience 0, every epoch without a new best halves it. The
# `lr` column of `history.csv` is the rate of each epoch's last step, so replaying `Plateau` on the `val_iou`
# column must give it back: the rate of epoch e is the peak times the scale after epochs 1 ... e - 1.

# %%
section("plateau reduction")
replay, scales = Plateau(0.5, 0), [1.0]
for row in histories["plateau"][:-1]:
    scales.append(replay.step(row["val_iou"]))
print("  val_iou " + " ".join(f"{r['val_iou']:.3f}" for r in histories["plateau"]))
print("  lr      " + " ".join(f"{r['lr']:.2g}" for r in histories["plateau"]))
check("the lr column is the peak times Plateau's scale replayed on val_iou",
      np.allclose([r["lr"] for r in histories["plateau"]], suggestion * np.array(scales), rtol=1e-9))
check("the rate did drop in this run", scales[-1] < 1)
torch_plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0), mode="max", factor=0.5, patience=1)
ours, scores = Plateau(0.5, 1), [0.5, 0.6, 0.6, 0.6, 0.61, 0.6, 0.6, 0.6, 0.6, 0.7]
same = []
for score in scores:
    torch_plateau.step(score)
    same.append(np.isclose(ours.step(score), torch_plateau.get_last_lr()[0]))
check("Plateau equals torch's ReduceLROnPlateau (patience 1) on a made-up score sequence", all(same))

# %% [markdown]
# ## Warmup + cosine and one-cycle
#
# Both are pure functions of the step (a resumed run gets the same rate at the same step):
#
# - warmup-cosine: a linear rise to the peak over `warmup_epochs` (large steps on random weights diverge, as just
#   seen), then half a cosine down to `final_lr_ratio` x peak;
# - one-cycle (Smith & Topin 2018): from peak / 25 up to the peak over the first 30% of the run, then down to
#   `final_lr_ratio` x peak, both halves cosine-shaped. The notes' reading: the rising rates explore and keep
#   the weights out of sharp, bumpy regions; the falling ones settle into a flat minimum, which generalises.
#
# Each briefly, at the suggestion as peak. The `lr` column again equals the function at each epoch's last step,
# and one-cycle equals `torch.optim.lr_scheduler.OneCycleLR` step for step.

# %%
section("warmup + cosine and one-cycle")
config = validate(apply_overrides(TrainConfig(), SMALL))
steps_per_epoch = config.data.samples_per_epoch // config.run.batch_size
total = config.run.epochs * steps_per_epoch
warmup, ratio = round(config.schedule.warmup_epochs * steps_per_epoch), config.schedule.final_lr_ratio
for name in ("warmup-cosine", "one-cycle"):
    histories[name] = run(name, **{"schedule.name": name, "optimizer.lr": suggestion})
    expected = [learning_rate(name, (e + 1) * steps_per_epoch - 1, total, suggestion, warmup,
                              config.schedule.pct_start, ratio) for e in range(config.run.epochs)]  # fmt: skip
    print(f"  {name:14s} lr " + " ".join(f"{r['lr']:.2g}" for r in histories[name]) + " | val_loss "
          + " ".join(f"{r['val_loss']:.3f}" for r in histories[name]))
    check(f"{name}: the lr column is the schedule at each epoch's last step",
          np.allclose([r["lr"] for r in histories[name]], expected, rtol=1e-9))
    check(f"{name}: the training loss falls from the first epoch to the last",
          histories[name][-1]["loss"] < histories[name][0]["loss"])
rates = {name: np.array([learning_rate(name, t, total, suggestion, warmup, config.schedule.pct_start, ratio)
                         for t in range(total)]) for name in ("warmup-cosine", "one-cycle")}  # fmt: skip
check("warmup: linear, at the peak on step W - 1 = 7",
      np.allclose(rates["warmup-cosine"][:warmup], suggestion * np.arange(1, warmup + 1) / warmup)
      and warmup_cosine(warmup - 1, total, suggestion, warmup, ratio) == suggestion)
check_close("warmup-cosine reaches final_lr_ratio x peak at step `total`, one past the run's last step",
            warmup_cosine(total, total, suggestion, warmup, ratio), ratio * suggestion)
check("... so its last step runs a little above it (the cosine's fraction is (total - 1 - W) / (total - W))",
      ratio * suggestion < rates["warmup-cosine"][-1] < 1.1 * ratio * suggestion)
check_close("one-cycle starts at peak / 25", rates["one-cycle"][0], suggestion / 25)
top = int(np.argmax(rates["one-cycle"]))
check(f"... and rises to the peak (within 1%) at step {top}, 30% into the run", abs(top - 0.3 * total) < 1
      and np.isclose(rates["one-cycle"][top], suggestion, rtol=1e-2))
model = torch.nn.Linear(1, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=suggestion)
scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=suggestion, total_steps=total, pct_start=0.3,
                                                anneal_strategy="cos", cycle_momentum=False, div_factor=25,
                                                final_div_factor=1 / (25 * ratio))  # fmt: skip
torch_rates = []
for _ in range(total):
    torch_rates.append(optimizer.param_groups[0]["lr"])
    optimizer.step()
    scheduler.step()
check("one_cycle equals torch's OneCycleLR at every step",
      np.allclose([one_cycle(t, total, suggestion, 0.3, ratio) for t in range(total)], torch_rates, rtol=1e-9))
oc = histories["one-cycle"]
val_losses = " ".join(f"{r['val_loss']:.3f}" for r in oc)
print(f"  one-cycle val_loss, epoch by epoch: {val_losses}. The notes' check of the peak: a little worse at first, "
      "then a lot better; here it falls from the start, the peak is on the safe side")

# %% [markdown]
# ## The fine-tuning recipe: smaller rate, larger images, `--init-from`
#
# The notes' recipe comes from fastai, where `fit_one_cycle(lr_max=slice(min_lr, max_lr))` gives each group of
# layers its own rate: the early, generic layers the lowest (from the range test), the last ones the highest (the
# previous rate / 5-10). This package trains every layer with one rate and has no frozen layers (the U-Net starts
# from He initialisation, not from ImageNet), so the recipe becomes: start from the previous run's weights, with a
# new optimizer, at a peak of the previous rate / 10 (the range test on the loaded weights says how far below its
# divergence that is), on larger images. Here the warmup-cosine run on 32 x 32 images, continued on 48 x 48 by the
# command-line tool itself:
#
#     python -m unet_from_scratch.train --size 48 --init-from runs/.../warmup-cosine/best.pt --lr <lr / 10> \
#         --schedule one-cycle --epochs 2 ...
#
# Its weights start where the first run's best epoch ended; the normalisation is recomputed from the new data.

# %%
section("fine-tuning with --init-from")
fine_lr = suggestion / 10
flags = ["--images", "20", "--depth", "2", "--base-channels", "8", "--no-batch-norm", "--clip", "0",
         "--samples-per-epoch", "32", "--batch-size", "4", "--device", "cpu", "--progress", "lines"]  # fmt: skip
fine_tune = ["--size", "48", "--epochs", "2", "--schedule", "one-cycle", "--lr", f"{fine_lr:.6g}",
             "--init-from", str(lesson.out / "warmup-cosine" / "best.pt"), "--out", str(lesson.out / "fine_tuned")]
shutil.rmtree(lesson.out / "fine_tuned", ignore_errors=True)
print("  python -m unet_from_scratch.train " + " ".join(fine_tune))
check("the command-line run exits with status 0", train_cli(flags + fine_tune) == 0)
histories["fine-tuned at 48 px"] = tuned = read_history(lesson.out / "fine_tuned" / "history.csv")
saved = load_config(str(lesson.out / "fine_tuned" / "config.toml"))
check("config.toml records the checkpoint it started from and the peak lr / 10",
      saved.run.init_from.endswith("best.pt") and np.isclose(saved.optimizer.lr, suggestion / 10, rtol=1e-5))
check("its rates never exceed the previous peak / 10", max(r["lr"] for r in tuned) <= fine_lr * (1 + 1e-6))
cosine = histories["warmup-cosine"]
print(f"  first epoch val_iou: from scratch at 32 px {cosine[0]['val_iou']:.3f}, fine-tuned at 48 px "
      f"{tuned[0]['val_iou']:.3f}; the first run's best {max(r['val_iou'] for r in cosine):.3f}")
check("the fine-tuned run starts ahead of a run from scratch (its first epoch's val_iou is higher)",
      tuned[0]["val_iou"] > cosine[0]["val_iou"])
first_weights = load_checkpoint(lesson.out / "warmup-cosine" / "best.pt")["model"]
saved.run.out = str(lesson.out / "fine_tuned_start")
shutil.rmtree(saved.run.out, ignore_errors=True)
start_weights = Trainer(saved, progress=Progress(enabled=False)).model.state_dict()  # built, not trained
check("... because it starts from those weights: before its first step they equal the first run's best.pt",
      all(torch.equal(start_weights[k], v) for k, v in first_weights.items()
          if isinstance(v, torch.Tensor) and not k.startswith("input_")))  # input_*: the new data's normalisation
if not lesson.fast:
    histories["from scratch at 48 px"] = scratch = run("scratch_48", **{"data.size": 48, "run.epochs": 2,
                                                                        "schedule.name": "one-cycle",
                                                                        "optimizer.lr": fine_lr})  # fmt: skip
    print("  the same 2 epochs at 48 px from scratch: val_iou " + " ".join(f"{r['val_iou']:.3f}" for r in scratch))
    check("fine-tuning beats the same 2 epochs from scratch", tuned[-1]["val_iou"] > scratch[-1]["val_iou"])

fig, axes = plt.subplots(2, 2, figsize=(12, 8))
axes[0, 0].semilogx(test.rates, raw[: len(test.rates)], color="gray", alpha=0.4, lw=0.8, label="loss of each batch")
axes[0, 0].semilogx(test.rates, test.losses, label="smoothed loss")
axes[0, 0].axvline(suggestion, color="C2", ls="--", label=f"steepest descent {suggestion:.2g}")
axes[0, 0].axvline(at_minimum, color="C3", ls=":", label=f"minimum {at_minimum:.2g}")
axes[0, 0].set(xlabel="learning rate", ylabel="loss", title="the range test",
               ylim=(0, 2.5 * max(test.losses[0], test.losses[lowest])))
axes[0, 0].legend(fontsize=8)
steps = np.arange(total)
for name in ("warmup-cosine", "one-cycle"):
    axes[0, 1].plot(steps, rates[name], label=name)
axes[0, 1].plot(steps, suggestion * np.repeat(scales, steps_per_epoch), label="plateau (this run)")
axes[0, 1].axhline(at_minimum, color="C3", ls=":", label="constant at the minimum")
axes[0, 1].set(xlabel="optimizer step", ylabel="learning rate", yscale="log", title="the policies, step by step")
axes[0, 1].legend(fontsize=8)
for name, rows in histories.items():
    epochs = [r["epoch"] + (6 if "48 px" in name else 0) for r in rows]
    axes[1, 0].semilogy(epochs, [r["loss"] for r in rows], marker=".", label=name)
    axes[1, 1].plot(epochs, [r["val_iou"] for r in rows], marker=".", label=name)
axes[1, 0].set(xlabel="epoch (fine-tuning: 7, 8)", ylabel="training loss", title="training loss")
axes[1, 1].set(xlabel="epoch (fine-tuning: 7, 8)", ylabel="val_iou", title="validation IoU", ylim=(0, 1))
axes[1, 1].legend(fontsize=7)
fig.tight_layout()
lesson.save(fig)
print("\nlesson 13 done: every check passed")
