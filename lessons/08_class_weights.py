# %% [markdown]
# # Lesson 8: class imbalance: class weights, oversampling, thresholding
#
# Teaches `unet_from_scratch/reference/class_weights.py` and `unet_from_scratch/data/sampling.py`. The notes
# meet imbalance twice. A training guide prints
#
#     Class distribution: {0: 36, 1: 91, 2: 160}
#     Class weights: {0: 2.63, 1: 1.04, 2: 0.59}
#
# and says "class 0 (with only 36 examples) gets 2.63x more importance". And notes on Buda et al. 2018: class
# imbalance hurts a CNN more as the task gets harder; "oversampling almost always outperform[s] any other
# method"; "to optimize over accuracy, we can use oversampling with thresholding"; "accuracy is not a good metric
# to compare models when we have imbalanced dataset".
#
# **The printed weights do not fit the printed counts.** 36 + 91 + 160 = 287, and the balanced weights
# n / (k·count) are 287/108, 287/273, 287/480 = **2.66, 1.05, 0.60**. The guide's 2.63, 1.04, 0.59 are what a
# total of 284 gives (284/108 = 2.63, 284/273 = 1.04, 284/480 = 0.59): computed on other counts than those shown.
#
# Run: `python lessons/08_class_weights.py [--out DIR] [--fast]`.

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
# check(what, ok) asserts each claim it prints (an AssertionError if it stops being true), also under python -O.
from _lesson import check, check_close, section, start

from unet_from_scratch.data import SyntheticCells, oversampling_sampler
from unet_from_scratch.data.sampling import minority_fractions
from unet_from_scratch.reference import accuracy, class_weights, class_weights_from_counts, f1

lesson = start("08_class_weights", "class weights, oversampling, thresholding")

# %% [markdown]
# ## Balanced class weights: {0: 36, 1: 91, 2: 160}
#
# scikit-learn's "balanced" recipe: with n samples, k classes and count_c of class c, w_c = n / (k·count_c).
# Then every class carries the same total weight, count_c·w_c = n / k: the 36 examples of class 0 weigh as much
# in the loss as the 160 of class 2.

# %%
section("balanced class weights of the notes' example")
counts = np.array([36, 91, 160])
weights = class_weights_from_counts(counts)
print(f"  counts {counts.tolist()} (n = {counts.sum()}): weights {np.round(weights, 3).tolist()}")
check_close("w_0 = 287/108 = 2.657", weights[0], 287 / 108, rtol=1e-12)
check_close("w_1 = 287/273 = 1.051", weights[1], 287 / 273, rtol=1e-12)
check_close("w_2 = 287/480 = 0.598", weights[2], 287 / 480, rtol=1e-12)
check("rounded: 2.66, 1.05, 0.60 (not the notes' 2.63, 1.04, 0.59)",
      np.round(weights, 2).tolist() == [2.66, 1.05, 0.60])
check("the notes' numbers are the weights of a total of 284",
      np.round(284 / (3 * counts), 2).tolist() == [2.63, 1.04, 0.59])
check("every class carries the same total weight n / k = 95.67", np.allclose(counts * weights, 287 / 3))
check("the same weights from a label array with those counts",
      np.allclose(class_weights(np.repeat([0, 1, 2], counts), num_classes=3), weights))

# %% [markdown]
# ## Pixels: balanced and median-frequency weights
#
# In segmentation the samples are pixels, and the background usually dominates. Images of sparse cells from the
# package's synthetic dataset, at cell coverages from 0.5% to 25%: the balanced weights make the rare cell
# pixels count as much in total as the background. The median-frequency recipe (Eigen & Fergus 2015) divides
# the median class frequency by each class's own, a frequency counted over the images in which the class
# appears. Here every image holds both classes, so the frequencies are count_c / n, their median (of two) is
# their mean 1/2, and median / freq_c = n / (2·count_c): the two recipes coincide.

# %%
section("class weights of a segmentation set")
size = 64 if lesson.fast else 128
coverages = np.geomspace(0.005, 0.25, 8 if lesson.fast else 16)
labels = np.stack([
    SyntheticCells(1, size=size, seed=i, preset="sparse", coverage=c, max_foreground=min(1.0, 2 * c))[0][1] > 0
    for i, c in enumerate(coverages)
]).astype(np.int64)  # (N, H, W): 0 background, 1 cell
pixel_counts = np.bincount(labels.ravel(), minlength=2)
balanced = class_weights(labels, num_classes=2)
median = class_weights(labels, num_classes=2, method="median_frequency")
print(f"  {len(labels)} images: {pixel_counts[1] / pixel_counts.sum():.1%} cell pixels; "
      f"balanced {np.round(balanced, 3).tolist()}, median frequency {np.round(median, 3).tolist()}")
check("balanced: each class carries half the total weight", np.allclose(pixel_counts * balanced, labels.size / 2))
check("with both classes in every image the two recipes coincide", np.allclose(balanced, median))

# %% [markdown]
# ## Oversampling the images rich in the minority class
#
# In segmentation every image holds every class, so one oversamples images: `oversampling_sampler` draws image i
# with probability proportional to f_i + smoothing·mean(f), f_i its fraction of minority (cell) pixels. Images
# with many cells come up more often, and a batch holds more cell pixels on average. We draw from it and count.

# %%
section("oversampling")
image_counts = np.stack([np.bincount(lab.ravel(), minlength=2) for lab in labels])  # (N, 2) pixels per class
fractions = minority_fractions(image_counts)
sampler = oversampling_sampler(image_counts, smoothing=1.0, num_samples=4000,
                               generator=torch.Generator().manual_seed(0))
drawn = np.bincount(np.fromiter(iter(sampler), dtype=np.int64), minlength=len(labels))
probability = sampler.weights.numpy() / sampler.weights.numpy().sum()
uniform_share = fractions.mean()
expected_share = float(probability @ fractions)
drawn_share = float(drawn @ fractions / drawn.sum())
print(f"  cell pixels per drawn image: uniform {uniform_share:.2%}, oversampled {expected_share:.2%} expected, "
      f"{drawn_share:.2%} in 4000 draws")
check("p_i is proportional to f_i + mean(f)",
      np.allclose(probability, (fractions + fractions.mean()) / (fractions + fractions.mean()).sum()))
check("oversampling raises the expected share of cell pixels by more than 1.5x", expected_share > 1.5 * uniform_share)
check("the draws agree with the expectation (within 5%)", abs(drawn_share - expected_share) < 0.05 * expected_share)

# %% [markdown]
# ## Accuracy vs F1, and thresholding
#
# A detector that scores items, 5% of them positive. Declaring everything negative is 95% accurate and finds
# nothing: F1 = 0. With calibrated probabilities the 0.5 threshold maximises accuracy, not F1; F1 wants a lower
# threshold when positives are rare (for calibrated scores the F1-optimal threshold is half the best F1, Lipton,
# Elkan & Naryanaswamy 2014). We pick the threshold on one half of the data and check it on the other. The
# same thresholding is how one undoes what oversampling does to the probabilities: a network trained on
# oversampled data over-predicts the minority class, and a threshold tuned on data with the true frequencies
# brings it back.

# %%
section("accuracy vs F1 on an imbalanced set, thresholding")
rng = np.random.default_rng(0)
n = 100_000 if lesson.fast else 400_000
truth = (rng.random(n) < 0.05).astype(np.int64)
evidence = rng.normal(np.where(truth == 1, 2.0, 0.0), 1.0)  # a positive's evidence is 2 standard deviations higher
log_odds = np.log(0.05 / 0.95) + 2.0 * evidence - 2.0  # the exact posterior log-odds: calibrated scores
prob = 1 / (1 + np.exp(-log_odds))
val, test = slice(0, n // 2), slice(n // 2, n)
as_map = lambda a: a[None]  # noqa: E731  (the metrics take label maps; one row of n items is one)
everything_negative = np.zeros(n // 2, np.int64)
acc_none = accuracy(as_map(truth[test]), as_map(everything_negative))
f1_none = f1(as_map(truth[test]), as_map(everything_negative))
print(f"  all negative: accuracy {acc_none:.3f}, F1 {f1_none:.3f}")
check("predicting all negative is about 95% accurate", 0.94 < acc_none < 0.96)
check("... with F1 = 0", f1_none == 0.0)

thresholds = np.linspace(0.02, 0.9, 45)
scores = {"F1": [], "accuracy": []}
for t in thresholds:
    pred = (prob[val] > t).astype(np.int64)
    scores["F1"].append(f1(as_map(truth[val]), as_map(pred)))
    scores["accuracy"].append(accuracy(as_map(truth[val]), as_map(pred)))
best = int(np.argmax(scores["F1"]))
t_best = thresholds[best]
on_test = {t: (f1(as_map(truth[test]), as_map((prob[test] > t).astype(np.int64))),
               accuracy(as_map(truth[test]), as_map((prob[test] > t).astype(np.int64)))) for t in (0.5, t_best)}
print(f"  threshold 0.5: test F1 {on_test[0.5][0]:.3f}, accuracy {on_test[0.5][1]:.4f}")
print(f"  threshold {t_best:.2f} (best F1 on the other half): test F1 {on_test[t_best][0]:.3f}, "
      f"accuracy {on_test[t_best][1]:.4f}")
check("the F1-optimal threshold lies below 0.5", t_best < 0.5)
check_close("... at about half the best F1", t_best, scores["F1"][best] / 2, atol=0.06)
check("it raises F1 on the held-out half", on_test[t_best][0] > on_test[0.5][0])
check("accuracy peaks near 0.5 instead", abs(thresholds[int(np.argmax(scores["accuracy"]))] - 0.5) < 0.1)

fig, axes = plt.subplots(1, 3, figsize=(15, 3.9))
x = np.arange(3)
axes[0].bar(x - 0.2, weights, 0.4, label="n = 287 (the counts shown)")
axes[0].bar(x + 0.2, [2.63, 1.04, 0.59], 0.4, label="the notes' weights (n = 284)")
for i, (c, wt) in enumerate(zip(counts, weights)):
    axes[0].text(i - 0.2, wt + 0.05, f"{wt:.2f}", ha="center", fontsize=8)
axes[0].set_xticks(x, [f"class {i}\n{c} samples" for i, c in enumerate(counts)])
axes[0].set_ylabel("balanced weight n / (k·count)")
axes[0].legend(fontsize=8)
axes[0].set_title("class weights of {0: 36, 1: 91, 2: 160}", fontsize=10)
order = np.argsort(fractions)
axes[1].bar(np.arange(len(order)), drawn[order] / drawn.sum(), label="oversampled draws")
axes[1].axhline(1 / len(order), color="C1", label="uniform")
axes[1].set_xlabel("images, by cell fraction (0.5% ... 25%)")
axes[1].set_ylabel("share of draws")
axes[1].legend(fontsize=8)
axes[1].set_title("oversampling: cell-rich images drawn more often", fontsize=10)
axes[2].plot(thresholds, scores["F1"], label="F1")
axes[2].plot(thresholds, scores["accuracy"], label="accuracy")
axes[2].axvline(t_best, color="C0", ls=":")
axes[2].axvline(0.5, color="gray", ls=":")
axes[2].set_xlabel("threshold on the predicted probability")
axes[2].legend(fontsize=8)
axes[2].set_title("5% positives: accuracy and F1 want different thresholds", fontsize=10)
lesson.save(fig)
print("\nlesson 08 done: every check passed")
