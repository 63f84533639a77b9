"""Class weights: how much each class's pixels count in a weighted loss, so rare classes are not drowned out.

Two standard recipes, both computed from the label counts of a training set:

- ``"balanced"`` (scikit-learn's ``compute_class_weight("balanced")``): with n labelled pixels, k classes and
  count_c pixels of class c,

      w_c = n / (k * count_c)

  so every class contributes the same total weight, n / k. Counts {0: 36, 1: 91, 2: 160} (n = 287, k = 3) give
  w = (287/108, 287/273, 287/480) ≈ (2.657, 1.051, 0.598).

- ``"median_frequency"`` (Eigen & Fergus 2015, "Predicting Depth, Surface Normals and Semantic Labels with a Common
  Multi-Scale Convolutional Architecture", section 4.3): freq_c = count_c / (pixels of the images in which c
  appears), and

      w_c = median_c(freq_c) / freq_c

  the median taken over the classes that appear. A class as common as the median class gets weight 1.

An absent class (count_c = 0) gets weight 0 under both recipes: it has no pixel to weight, and 0 keeps every
downstream product finite (never inf or NaN).
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference._checks import check_int_array, check_num_classes

METHODS = ("balanced", "median_frequency")


def _check_labels(labels, num_classes) -> np.ndarray:
    check_int_array(labels, "labels")
    check_num_classes(num_classes)
    if labels.size == 0:
        raise ValueError(f"labels must hold at least one pixel, got shape {labels.shape}")
    low, high = labels.min(), labels.max()
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got values in [{low}, {high}]")
    return labels.astype(np.intp, copy=False)


def class_weights_from_counts(counts, image_pixels=None, method: str = "balanced") -> np.ndarray:
    """Per-class weights from pixel counts ``counts`` (num_classes,) -> (num_classes,) float64.

    ``image_pixels`` (num_classes,): for each class, the number of pixels of the images in which it appears; only
    ``"median_frequency"`` needs it. The formulas are in the module docstring; classes with count 0 get weight 0.
    Lets a caller that already counts (a data loader over a whole set, the weight map) skip a pass over the pixels.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0 or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError(f"counts must be a non-empty 1-D array of finite counts >= 0, got {counts!r}")
    present = counts > 0
    weights = np.zeros(counts.size, dtype=np.float64)
    if method == "balanced":
        weights[present] = counts.sum() / (counts.size * counts[present])
        return weights

    if image_pixels is None:
        raise ValueError("median_frequency needs image_pixels, the pixels of the images in which each class appears")
    image_pixels = np.asarray(image_pixels, dtype=np.float64)
    if image_pixels.shape != counts.shape or np.any(image_pixels < counts):
        raise ValueError(f"image_pixels must match counts {counts.shape}, each >= its count, got {image_pixels!r}")
    freq = counts[present] / image_pixels[present]
    weights[present] = np.median(freq) / freq
    return weights


def class_weights(labels: np.ndarray, num_classes: int, method: str = "balanced") -> np.ndarray:
    """Per-class weights from integer ``labels`` with values in [0, num_classes) -> (num_classes,) float64.

    ``labels`` holds one image (H, W) or several (N, H, W); for ``"median_frequency"`` the first axis indexes
    images when ``labels.ndim >= 3`` and the whole array is one image otherwise (``"balanced"`` only counts, so
    any shape works). ``method`` is ``"balanced"`` (n / (k * count_c)) or ``"median_frequency"``
    (median(freq) / freq_c); see the module docstring for both formulas and their sources. Classes that never
    occur get weight 0.
    """
    labels = _check_labels(labels, num_classes)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    if method == "balanced":
        return class_weights_from_counts(counts, method=method)

    images = labels.reshape(labels.shape[0], -1) if labels.ndim >= 3 else labels.reshape(1, -1)
    n_images, pixels_per_image = images.shape
    # Count every class in every image with one bincount: image i's labels are shifted to [i*k, (i+1)*k).
    offsets = (np.arange(n_images) * num_classes)[:, None]
    per_image = np.bincount((images + offsets).ravel(), minlength=n_images * num_classes)
    images_with_class = (per_image.reshape(n_images, num_classes) > 0).sum(axis=0)
    return class_weights_from_counts(counts, images_with_class * pixels_per_image, method)
