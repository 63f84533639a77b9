"""The pictures of a run, for what a person would rather look at than read.

- ``curves.png``        loss, scores and learning rate per epoch (from the history rows)
- ``predictions.png``   validation images beside their ground truth and the prediction, errors marked
                        (false positives red, false negatives blue)
- ``weight_map.png``    one training image and its U-Net weight map (the paper's Fig. 3d)
- ``lr_finder.png``     the LR range test: smoothed loss against the learning rate, the suggestion marked

``matplotlib.figure.Figure`` is used directly (no pyplot): no global state, no display needed, safe in workers.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def plot_curves(rows: list[dict], path) -> None:
    """Loss, scores and learning rate against the epoch."""
    epochs = [r["epoch"] for r in rows]
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    loss, scores, rate = figure.subplots(1, 3)
    for name, style in (("loss", "-"), ("val_loss", "--")):
        loss.plot(epochs, [r[name] for r in rows], style, marker=".", label=name)
    loss.set(title="loss", xlabel="epoch")
    for name in ("iou", "val_iou", "val_f1", "val_instance_f1"):
        scores.plot(epochs, [r[name] for r in rows], marker=".", label=name)
    lowest = min(0.9, *(r["val_iou"] for r in rows))  # zoom in on the interesting top, but show a weak start
    scores.set(title="scores (foreground)", xlabel="epoch", ylim=(max(0.0, lowest - 0.05), 1.0))
    rate.plot(epochs, [r["lr"] for r in rows], marker=".")
    rate.set(title="learning rate (end of epoch)", xlabel="epoch", yscale="log")
    for axes in (loss, scores):
        axes.legend()
        axes.grid(alpha=0.3)
    rate.grid(alpha=0.3)
    figure.savefig(path, dpi=100)


def plot_predictions(images: list[np.ndarray], truths: list[np.ndarray], predictions: list[np.ndarray], path,
                     titles: list[str] | None = None) -> None:  # fmt: skip
    """A row per image: the image (first channel), the true classes, the predicted classes, the errors."""
    n = len(images)
    figure = Figure(figsize=(12, 3 * n), layout="constrained")
    axes = np.asarray(figure.subplots(n, 4, squeeze=False))
    for row, (image, truth, prediction) in enumerate(zip(images, truths, predictions)):
        errors = np.zeros(truth.shape + (3,))
        errors[(prediction > 0) & (truth == 0)] = (1.0, 0.2, 0.2)  # false positive: red
        errors[(prediction == 0) & (truth > 0)] = (0.2, 0.4, 1.0)  # false negative: blue
        correct = (prediction == truth) & (truth > 0)
        errors[correct] = (0.85, 0.85, 0.85)
        panels = [(image[0], "gray", "image"), (truth, "viridis", "ground truth"),
                  (prediction, "viridis", "prediction"), (errors, None, "errors: FP red, FN blue")]  # fmt: skip
        for column, (data, cmap, title) in enumerate(panels):
            ax = axes[row, column]
            ax.imshow(data, cmap=cmap, interpolation="nearest")
            ax.set_title(title if not titles or column else f"{titles[row]}", fontsize=9)
            ax.axis("off")
    figure.savefig(path, dpi=80)


def plot_weight_map(image: np.ndarray, weights: np.ndarray, path) -> None:
    """A training image and its weight map w(x) = w_c(x) + w0 exp(-(d1 + d2)^2 / (2 sigma^2))."""
    figure = Figure(figsize=(9, 4.2), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.imshow(image[0], cmap="gray")
    left.set_title("training image")
    shown = right.imshow(weights, cmap="magma")
    right.set_title("U-Net weight map w(x)")
    figure.colorbar(shown, ax=right, shrink=0.85)
    for ax in (left, right):
        ax.axis("off")
    figure.savefig(path, dpi=100)


def plot_lr_finder(rates: np.ndarray, losses: np.ndarray, suggestion: float, path) -> None:
    """The LR range test's smoothed loss on a log rate axis, the suggested rate marked."""
    figure = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = figure.subplots()
    ax.plot(rates, losses)
    ax.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested lr {suggestion:.2e} (steepest descent)")
    ax.set(xscale="log", xlabel="learning rate", ylabel="smoothed loss", title="LR range test")
    ax.legend()
    ax.grid(alpha=0.3)
    figure.savefig(path, dpi=100)
