"""What training learns about its data: class names in order, per-channel normalisation, class weights.

All of it comes from the training split only (statistics of the validation images would leak into the model),
and all of it must travel with the trained model: a prediction needs the same normalisation and must read class
index k as the same ``class_names[k]``. ``DataStatistics.state_dict()`` is the form stored in a checkpoint.

- Normalisation: per channel c, mean_c and std_c over every pixel of every training image (before augmentation).
  A channel with std 0 (a constant channel) keeps std 1. They are applied in one place only, by the model
  (``model.set_normalization(statistics.mean, statistics.std)``: its ``forward`` computes (x - mean_c) / std_c).
- Class weights: ``reference.class_weights.class_weights_from_counts`` over the training targets' pixel counts per
  class and image, ``"balanced"`` (n / (k count_c)) or ``"median_frequency"`` (median(freq) / freq_c with
  freq_c = count_c / (pixels of the images in which c appears), Eigen & Fergus 2015); None gives every class
  weight 1. Counting per image makes both work for training images of different sizes, and for images of one size
  gives exactly ``reference.class_weights`` of the stacked targets.

The items are checked as they are read (``targets.check_item``: one-line ValueErrors naming the item).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from unet_from_scratch.data.targets import check_item, prepare_labels, target_classes
from unet_from_scratch.reference.class_weights import METHODS, class_weights_from_counts


@dataclass(frozen=True)
class DataStatistics:
    """Training-split facts: ``class_names`` (K,), ``mean``/``std`` (C,), ``class_weights`` (K,).

    ``image_class_counts`` (N, K) int64 holds the pixel count of each class in each training image, in the order
    of the indices the statistics were computed on (what oversampling needs); it is not part of the state dict.
    """

    class_names: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_weights: tuple[float, ...]
    image_class_counts: np.ndarray | None = field(default=None, compare=False, repr=False)

    def state_dict(self) -> dict:
        """Plain lists and strings, ready for ``torch.save`` or JSON."""
        return {
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "class_weights": list(self.class_weights),
        }

    @classmethod
    def from_state_dict(cls, state: dict) -> "DataStatistics":
        return cls(
            class_names=tuple(state["class_names"]),
            mean=tuple(float(v) for v in state["mean"]),
            std=tuple(float(v) for v in state["std"]),
            class_weights=tuple(float(v) for v in state["class_weights"]),
        )


def compute_statistics(
    source, indices: Sequence[int], class_weight_method: str | None = "balanced", separate_touching: bool = True
) -> DataStatistics:
    """``DataStatistics`` of ``source`` items ``indices`` (the training split), in one pass over them.

    ``source[i]`` gives (image (C, H, W) or (H, W), mask (H, W)), checked by ``targets.check_item``; every image
    must have the same channels. ``source.mask_kind`` and ``source.class_names`` say how masks become targets
    (``targets.py``), with ``separate_touching`` as the dataset will use it.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("the training split is empty: statistics need at least one image")
    if class_weight_method is not None and class_weight_method not in METHODS:
        raise ValueError(f"class_weight_method must be one of {METHODS} or None, got {class_weight_method!r}")
    num_classes = len(source.class_names)
    total = sum_x = sum_x2 = 0.0
    counts = []
    for index in indices:
        image, mask = check_item(*source[index], index, source.mask_kind, num_classes)
        if counts and image.shape[0] != channels:
            raise ValueError(f"item {index}: image has {image.shape[0]} channels, item {indices[0]} has {channels}")
        channels = image.shape[0]
        pixels = image.reshape(channels, -1).astype(np.float64)
        sum_x = sum_x + pixels.sum(axis=1)
        sum_x2 = sum_x2 + np.square(pixels).sum(axis=1)
        total += pixels.shape[1]
        target = target_classes(prepare_labels(mask, source.mask_kind, separate_touching), source.mask_kind)
        counts.append(np.bincount(target.ravel(), minlength=num_classes))
    mean = sum_x / total
    std = np.sqrt(np.maximum(sum_x2 / total - mean**2, 0.0))
    std[std == 0] = 1.0
    image_class_counts = np.stack(counts).astype(np.int64)
    return DataStatistics(
        class_names=tuple(source.class_names),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        class_weights=tuple(float(v) for v in class_weights_per_image(image_class_counts, class_weight_method)),
        image_class_counts=image_class_counts,
    )


def class_weights_per_image(image_class_counts: np.ndarray, method: str | None = "balanced") -> np.ndarray:
    """Class weights (K,) float64 from the pixel count of each class in each image, ``image_class_counts`` (N, K).

    count_c = Σ_i counts[i, c]; for ``"median_frequency"`` the pixels of the images in which c appears are
    Σ_i [counts[i, c] > 0] · Σ_k counts[i, k], whatever each image's size; the formulas are those of
    ``reference.class_weights``. None gives every class weight 1.
    """
    counts = np.asarray(image_class_counts, dtype=np.int64)
    if method is None:
        return np.ones(counts.shape[1])
    pixels_per_image = counts.sum(axis=1, keepdims=True)  # (N, 1)
    image_pixels = ((counts > 0) * pixels_per_image).sum(axis=0)  # (K,)
    return class_weights_from_counts(counts.sum(axis=0), image_pixels, method)
