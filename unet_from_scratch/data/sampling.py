"""Batches: oversampling of the images rich in the minority class, and the DataLoader.

Class imbalance hurts a CNN more the harder the task, and oversampling the minority class is the remedy that almost
always works best (Buda, Maki & Mazurowski 2018, "A systematic study of the class imbalance problem in convolutional
neural networks"). A segmentation image holds every class at once, so the unit of oversampling is the image: image i
is drawn with probability proportional to

    p_i ∝ f_i + smoothing * mean(f),    f_i = (pixels of the minority class in image i) / (pixels of image i)

where the minority class is the rarest class present in the training split. ``smoothing`` keeps images without
any minority pixel in play: with smoothing 1 such an image is drawn half as often as an image of average minority
fraction (and smoothing 0 never draws it).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, WeightedRandomSampler


def minority_fractions(image_class_counts: np.ndarray) -> np.ndarray:
    """f_i of the module docstring from per-image class pixel counts (N, K) -> (N,) float64.

    The minority class is the present class (count > 0 over all images) with the fewest pixels.
    """
    counts = np.asarray(image_class_counts)
    if counts.ndim != 2 or counts.shape[1] < 2 or np.any(counts < 0) or not np.all(counts.sum(axis=1) > 0):
        raise ValueError(
            f"image_class_counts must be (N, K >= 2) counts >= 0 with pixels in every image, got shape {counts.shape}"
        )
    totals = counts.sum(axis=0)
    present = np.flatnonzero(totals > 0)
    minority = present[np.argmin(totals[present])]
    return counts[:, minority] / counts.sum(axis=1)


def oversampling_sampler(
    image_class_counts: np.ndarray, smoothing: float = 1.0, num_samples: int | None = None, generator=None
) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` drawing ``num_samples`` (default N) images with p_i of the module docstring.

    ``image_class_counts`` (N, K) is ``dataset.statistics.image_class_counts`` of the training dataset (one row per
    item, in item order).
    """
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0, got {smoothing!r}")
    fractions = minority_fractions(image_class_counts)
    weights = fractions + smoothing * fractions.mean()
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=len(weights) if num_samples is None else num_samples,
        replacement=True,
        generator=generator,
    )


def make_loader(
    dataset: Dataset,
    batch_size: int = 4,
    shuffle: bool = True,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    pin_memory: bool | None = None,
    drop_last: bool = False,
    seed: int | None = None,
) -> DataLoader:
    """A standard ``DataLoader`` over ``dataset``.

    A ``sampler`` (e.g. ``oversampling_sampler``) replaces shuffling. Workers are kept alive across epochs
    (``persistent_workers``), so each keeps its weight-map cache. ``pin_memory`` defaults to True where CUDA is
    available (page-locked batches copy to the GPU asynchronously). ``seed`` fixes the shuffling order and the
    workers' random streams, hence their augmentations; without workers, augmentations follow torch's global seed.
    """
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        generator=generator,
    )
