# %% [markdown]
# # Lesson 14: reading a training log
#
# Teaches `unet_from_scratch/training/progress.py` (the epoch line, `history.csv`, `read_history`). The notes'
# training guide reads a Keras line:
#
#     23/23 - 14s - loss: 0.2082 - accuracy: 0.9150 - val_loss: 0.1089 - val_accuracy: 0.9535 - lr: 1.0000e-04 ...
#
# and names three patterns:
#
# - a good run: "Both losses decrease over time", "Both accuracies increase", "Final validation accuracy is high
#   (>80% for most use cases)", "Training and validation metrics are reasonably close";
# - **overfitting**: "Training accuracy keeps improving", "Validation accuracy stalls or decreases", "Gap between
#   training and validation grows"; remedies "More data augmentation, fewer epochs, more dropout";
# - **underfitting**: "Both accuracies are low", "Loss decreases very slowly"; remedies "More epochs, larger model,
#   higher learning rate".
#
# The trainer prints the same line, with segmentation scores for accuracy: `iou` (the training epoch's foreground
# IoU), `val_iou`, `val_f1`, `val_instance_f1` (lesson 4 shows why not accuracy: on a mostly-background mask it is
# high for a network that finds nothing). Here the three runs are produced for real, on small configurations, and
# the lesson's own `diagnose` reads each from its `history.csv`.
#
# Run: `python lessons/14_training_log.py [--out DIR] [--fast]`.

# %%
import io
import re
import shutil

import matplotlib.pyplot as plt
import numpy as np
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, section, start

from unet_from_scratch.training import Trainer, plots
from unet_from_scratch.training.config import TrainConfig, apply_overrides, validate
from unet_from_scratch.training.progress import LINE_FIELDS, Progress, read_history

lesson = start("14_training_log", "reading a training log: a good run, overfitting, underfitting")
if lesson.fast:  # a tiny run spends most of its time drawing its end-of-run pictures: --fast skips them
    plots.plot_curves = plots.plot_predictions = plots.plot_weight_map = lambda *args, **kwargs: None
BASE = {"data.size": 32, "model.depth": 2, "run.batch_size": 4, "run.device": "cpu", "run.progress": "lines"}
RUNS = {
    # 24 training images, augmented (flips, 90-degree rotations), a fitting model and rate.
    "good": {"data.images": 30, "model.base_channels": 8, "run.epochs": 6, "data.samples_per_epoch": 32},
    # 2 training images, no augmentation, a wider model, many epochs at a constant rate: it can memorise them.
    "overfitting": {"data.images": 10, "data.val_fraction": 0.8, "model.base_channels": 16, "run.epochs": 12,
                    "data.samples_per_epoch": 16, "run.batch_size": 2, "data.augment": [], "schedule.name": "constant"},
    # A model of 2 channels at lr 1e-5: too small a step, too little capacity, few steps.
    "underfitting": {"data.images": 30, "model.base_channels": 2, "run.epochs": 6, "data.samples_per_epoch": 32,
                     "optimizer.lr": 1e-5, "schedule.name": "constant"},
}  # fmt: skip

# %% [markdown]
# ## Three real runs
#
# Each run writes its lines to a `Progress` of its own (a string here, the terminal in a real run) and its
# `history.csv`. We show the lines of the first, a middle and the last epoch, as the notes do.

# %%
section("three runs")
logs, histories, trainers = {}, {}, {}
for name, overrides in RUNS.items():
    out = lesson.out / name
    shutil.rmtree(out, ignore_errors=True)
    stream = io.StringIO()
    trainers[name] = trainer = Trainer(validate(apply_overrides(TrainConfig(), {**BASE, **overrides,
                                                                               "run.out": str(out)})),
                                       progress=Progress("lines", stream=stream))  # fmt: skip
    trainer.fit()
    logs[name], histories[name] = stream.getvalue(), read_history(out / "history.csv")
    lines = [line for line in logs[name].splitlines() if re.match(r"\d+/\d+ - ", line)]
    epochs = len(lines)
    print(f"\n  {name}: {len(trainer.train_set)} training / {len(trainer.val_set)} validation images, "
          f"{trainer.steps_per_epoch} steps per epoch")
    for e in sorted({0, epochs // 2, epochs - 1}):
        print(f"  Epoch {e + 1}/{epochs}\n  {lines[e]}")

# %% [markdown]
# ## The line and `history.csv` say the same
#
# `k/k` is the epoch's steps (lesson 12), then the epoch's wall time, the training loss and IoU (means over the
# epoch's steps), the validation scores, the rate of the epoch's last step and the time per step. Every number of
# the line is a column of `history.csv` (which has more: val_dice, precision, recall, images/s), rounded to 4
# decimals: we parse the lines back and compare.

# %%
section("the lines against history.csv")
for name, log in logs.items():
    lines = [line for line in log.splitlines() if re.match(r"\d+/\d+ - ", line)]
    steps = trainers[name].steps_per_epoch
    agree = len(lines) == len(histories[name])
    for line, row in zip(lines, histories[name]):
        values = {k: float(v) for k, v in re.findall(r"(\w+): ([-\d.e+]+)", line)}
        agree &= line.startswith(f"{steps}/{steps} - ")
        agree &= all(abs(values[k] - row[k]) <= 5e-5 for k in LINE_FIELDS)
        agree &= abs(values["lr"] - row["lr"]) <= 5e-5 * row["lr"]
    check(f"{name}: every line is its history.csv row (k/k = {steps}/{steps}, values to 4 decimals)", agree)

# %% [markdown]
# ## Diagnosing a run from its history
#
# The notes' signs, made into numbers:
#
# - underfitting: both IoUs low (< 0.6 at the end) and the loss fell by less than 20%;
# - overfitting: the validation loss reached its minimum well before the end (before the last quarter) and rose
#   again by over 10% since, while the training loss kept falling (to under half its value there), and the
#   training IoU ended above the validation IoU by over 0.05 (the gap the notes warn of);
# - good: both losses fell, the final validation IoU is over 0.8, and training and validation IoU are within 0.05.
#
# On real problems the thresholds are a matter of judgement; the shapes are not.

# %%
section("diagnose")


def diagnose(rows: list[dict]) -> tuple[str, str]:
    """(verdict, reason) for the rows of a history.csv: 'good', 'overfitting', 'underfitting' or 'unclear'."""
    loss, iou, val_loss, val_iou = (np.array([r[k] for r in rows]) for k in ("loss", "iou", "val_loss", "val_iou"))
    n, low = len(rows), int(np.argmin(val_loss))
    gap = iou[-1] - val_iou[-1]
    if iou[-1] < 0.6 and val_iou[-1] < 0.6 and loss[-1] > 0.8 * loss[0]:
        return "underfitting", (f"iou {iou[-1]:.2f}, val_iou {val_iou[-1]:.2f}; the loss fell only "
                                f"{1 - loss[-1] / loss[0]:.0%} in {n} epochs")  # fmt: skip
    if low < n - 1 - n // 4 and val_loss[-1] > 1.1 * val_loss[low] and loss[-1] < 0.5 * loss[low] and gap > 0.05:
        return "overfitting", (f"val_loss lowest at epoch {low + 1} of {n} ({val_loss[low]:.3f}), then up to "
                               f"{val_loss[-1]:.3f} while the loss fell {loss[low]:.3f} -> {loss[-1]:.3f}; "
                               f"iou {iou[-1]:.3f} vs val_iou {val_iou[-1]:.3f}")  # fmt: skip
    if loss[-1] < loss[0] and val_loss[-1] < val_loss[0] and val_iou[-1] > 0.8 and abs(gap) < 0.05:
        return "good", (f"both losses fell ({loss[0]:.3f} -> {loss[-1]:.3f}, {val_loss[0]:.3f} -> "
                        f"{val_loss[-1]:.3f}); val_iou {val_iou[-1]:.3f}, within {abs(gap):.3f} of iou")  # fmt: skip
    return "unclear", f"iou {iou[-1]:.3f}, val_iou {val_iou[-1]:.3f}, val_loss lowest at epoch {low + 1} of {n}"


for name, rows in histories.items():
    verdict, reason = diagnose(rows)
    print(f"  {name}: {verdict} ({reason})")
    check(f"the {name} run is diagnosed as {name}", verdict == name)

# %% [markdown]
# Two more things the logs show.
#
# In the good run, as in the notes' example (loss 0.2082, val_loss 0.1089), the validation loss is *below* the
# training loss. Not a bug: the training loss is the mean over the epoch's steps, made while the weights were still
# improving, on augmented samples; the validation loss is measured once, at the end of the epoch.
#
# In the overfitting run, `best.pt` holds the weights of the best validation IoU, not the last: the trainer's
# answer to "fewer epochs" is to keep the best one. `--patience P` (early stopping) ends a run once `val_iou` has
# not improved for P epochs; replaying that rule on the history says where it would have stopped.

# %%
section("validation below training loss; early stopping")
good = histories["good"]
print("  good run, loss vs val_loss: " + ", ".join(f"{r['loss']:.3f} / {r['val_loss']:.3f}" for r in good))
check("in the good run's first epoch val_loss is below loss (the weights improved during the epoch)",
      good[0]["val_loss"] < good[0]["loss"])
over = histories["overfitting"]
patience, best, bad, stopped = 3, -np.inf, 0, None
for row in over:
    if row["val_iou"] > best:
        best, best_epoch, bad = row["val_iou"], row["epoch"], 0
    else:
        bad += 1
    if bad >= patience and stopped is None:
        stopped = row["epoch"]
print(f"  overfitting run: best val_iou {best:.4f} at epoch {best_epoch} of {len(over)}; with --patience {patience} "
      f"it would have stopped at epoch {stopped}")
check("best.pt is the epoch of the best val_iou, before the end", trainers["overfitting"].state["best_epoch"]
      == best_epoch < len(over))
if not lesson.fast and stopped is not None:
    out = lesson.out / "early_stopping"
    shutil.rmtree(out, ignore_errors=True)
    early = Trainer(validate(apply_overrides(TrainConfig(), {**BASE, **RUNS["overfitting"], "run.patience": patience,
                                                             "run.out": str(out)})), progress=Progress(enabled=False))
    early.fit()
    check(f"a real run with --patience {patience} stops at epoch {stopped}",
          len(read_history(out / "history.csv")) == stopped)

fig, axes = plt.subplots(2, 3, figsize=(15, 7), sharex="col")
for j, (name, rows) in enumerate(histories.items()):
    epochs = [r["epoch"] for r in rows]
    axes[0, j].plot(epochs, [r["loss"] for r in rows], marker=".", label="loss (training)")
    axes[0, j].plot(epochs, [r["val_loss"] for r in rows], marker=".", ls="--", label="val_loss")
    axes[1, j].plot(epochs, [r["iou"] for r in rows], marker=".", label="iou (training)")
    axes[1, j].plot(epochs, [r["val_iou"] for r in rows], marker=".", ls="--", label="val_iou")
    verdict, _ = diagnose(rows)
    axes[0, j].set_title(f"{name} run: diagnosed '{verdict}'", fontsize=10)
    axes[1, j].set(xlabel="epoch", ylim=(0, 1.02))
    axes[0, j].legend(fontsize=8)
    axes[1, j].legend(fontsize=8)
low = int(np.argmin([r["val_loss"] for r in over]))
axes[0, 1].axvline(low + 1, color="gray", ls=":")
axes[0, 1].text(low + 1.3, axes[0, 1].get_ylim()[1] * 0.8, "val_loss lowest,\nthen rises", fontsize=8)
axes[0, 0].set_ylabel("loss")
axes[1, 0].set_ylabel("foreground IoU")
fig.tight_layout()
lesson.save(fig)
print("\nlesson 14 done: every check passed")
