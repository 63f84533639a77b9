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

from unet_from_scratch.data.epochs import EpochSampler, minority_fractions
from unet_from_scratch.reference._checks import check_real


def oversampling_sampler(
    image_class_counts: np.ndarray, smoothing: float = 1.0, num_samples: int | None = None, generator=None
) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` drawing ``num_samples`` (default N) images with p_i of the module docstring.

    ``image_class_counts`` (N, K) is ``dataset.statistics.image_class_counts`` of the training dataset (one row per
    item, in item order).
    """
    smoothing = check_real(smoothing, "smoothing", 0.0)
    fractions = minority_fractions(image_class_counts)
    weights = fractions + smoothing * fractions.mean()
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double),
        num_samples=len(weights) if num_samples is None else num_samples,
        replacement=True,
        generator=generator,
    )


class _LoaderEpochs(EpochSampler):
    """``EpochSampler`` for ``make_loader``: each pass over the loader is the next epoch (0, 1, 2, ...), so a loader
    iterated again shuffles and augments anew, reproducibly; ``set_epoch(e)`` makes the next pass epoch ``e``."""

    def __iter__(self):
        pairs = list(super().__iter__())  # this epoch's items, fixed before the epoch moves on
        self.set_epoch(self.epoch + 1)
        return iter(pairs)


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
    available (page-locked batches copy to the GPU asynchronously).

    ``seed`` fixes the order and the augmentations, with any number of workers, the same with 0 workers as with
    2: the loader then samples through an ``EpochSampler`` seeded by it, which hands every item its own
    augmentation seed (a dataset such as ``SegmentationDataset`` takes ``(index, seed)`` items). The k-th pass over
    the loader is epoch k (``loader.sampler.set_epoch(e)`` chooses the next one). An ``oversampling_sampler``
    (a ``WeightedRandomSampler``) becomes an ``EpochSampler`` with its weights and number of samples; an
    ``EpochSampler`` is used as given (its own seed applies); another sampler with a seed raises ValueError.
    Without ``seed``, the order follows torch's global generator and the augmentations torch's global seed
    (without workers) or the workers' seeds.
    """
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
        if sampler is None:
            sampler = _LoaderEpochs(len(dataset), shuffle=shuffle, seed=seed)
        elif isinstance(sampler, WeightedRandomSampler) and sampler.replacement:
            sampler = _LoaderEpochs(len(dataset), sampler.num_samples, weights=sampler.weights.numpy(), seed=seed)
        elif not isinstance(sampler, EpochSampler):
            raise ValueError(
                f"seed fixes the augmentations through an EpochSampler or an oversampling_sampler, got a "
                f"{type(sampler).__name__}: seed that sampler itself and leave seed=None"
            )
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
