"""What training learns about its data: class names in order, per-channel normalisation, class weights.

All of it comes from the training split only (statistics of the validation images would leak into the model),
and all of it must travel with the trained model: a prediction needs the same normalisation and must read class
index k as the same ``class_names[k]``. ``DataStatistics.state_dict()`` is the form stored in a checkpoint.

- Normalisation: per channel c, mean_c and std_c over every pixel of every training image (before augmentation);
  an image is normalised as (x - mean_c) / std_c. A channel with std 0 (a constant channel) keeps std 1.
- Class weights: ``reference.class_weights`` over the training targets, ``"balanced"`` (n / (k count_c)) or
  ``"median_frequency"`` (median(freq) / freq_c); None gives every class weight 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from unet_from_scratch.data.targets import prepare_labels, target_classes
from unet_from_scratch.reference.class_weights import class_weights as compute_class_weights


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

    def normalize(self, image: np.ndarray) -> np.ndarray:
        """(x - mean_c) / std_c for an image (C, H, W) -> float32 (C, H, W)."""
        if image.ndim != 3 or image.shape[0] != len(self.mean):
            raise ValueError(f"image must be (C={len(self.mean)}, H, W), got shape {image.shape}")
        mean = np.asarray(self.mean, dtype=np.float32)[:, None, None]
        std = np.asarray(self.std, dtype=np.float32)[:, None, None]
        return ((image - mean) / std).astype(np.float32)

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

    ``source[i]`` gives (image float (C, H, W), mask (H, W)); ``source.mask_kind`` and ``source.class_names``
    say how masks become targets (``targets.py``), with ``separate_touching`` as the dataset will use it.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("the training split is empty: statistics need at least one image")
    num_classes = len(source.class_names)
    total = sum_x = sum_x2 = 0.0
    counts, targets = [], []
    for index in indices:
        image, mask = source[index]
        pixels = image.reshape(image.shape[0], -1).astype(np.float64)
        sum_x = sum_x + pixels.sum(axis=1)
        sum_x2 = sum_x2 + np.square(pixels).sum(axis=1)
        total += pixels.shape[1]
        target = target_classes(prepare_labels(mask, source.mask_kind, separate_touching), source.mask_kind)
        if target.min() < 0 or target.max() >= num_classes:
            raise ValueError(
                f"item {index}: target classes must lie in [0, {num_classes}), got {target.min()}..{target.max()}"
            )
        counts.append(np.bincount(target.ravel(), minlength=num_classes))
        targets.append(target.astype(np.uint8 if num_classes <= 256 else np.int32))
    mean = sum_x / total
    std = np.sqrt(np.maximum(sum_x2 / total - mean**2, 0.0))
    std[std == 0] = 1.0
    return DataStatistics(
        class_names=tuple(source.class_names),
        mean=tuple(float(v) for v in mean),
        std=tuple(float(v) for v in std),
        class_weights=tuple(float(v) for v in _class_weights(targets, num_classes, class_weight_method)),
        image_class_counts=np.stack(counts).astype(np.int64),
    )


def _class_weights(targets: list[np.ndarray], num_classes: int, method: str | None) -> np.ndarray:
    if method is None:
        return np.ones(num_classes)
    if len({t.shape for t in targets}) == 1:
        return compute_class_weights(np.stack(targets), num_classes, method)
    if method == "median_frequency":
        raise ValueError("median_frequency class weights need training images of one size; use 'balanced'")
    return compute_class_weights(np.concatenate([t.ravel() for t in targets]), num_classes, method)
