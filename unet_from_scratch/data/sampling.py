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

from unet_from_scratch.reference._checks import check_real


class EpochSampler(Sampler):
    """The items of one epoch as ``(index, augmentation seed)`` pairs, a pure function of ``(seed, epoch)``.

    A training run needs three things of its sampler that torch's samplers do not give together:

    - Reproducible augmentations with or without DataLoader workers: each item carries its own seed, drawn here in
      the main process, and ``SegmentationDataset`` augments item ``(i, s)`` from ``default_rng(s)`` whatever process
      loads it (torch's own way seeds workers by worker id, so the same item is augmented differently with 0 and 2).
    - Exact resumption, mid-epoch too: ``set_epoch(epoch, skip)`` regenerates the epoch's order and drops the
      ``skip`` items that were already trained on; no generator state has to be saved.
    - Sharding for DistributedDataParallel (``rank``, ``world_size``), as ``DistributedSampler`` does: rank r takes
      items r, r + W, r + 2W, ... of the epoch's order, so the W shards of a global batch of W·B items are exactly
      the batch of B items each rank trains on, and W processes see what one process with batch W·B would see.

    ``num_samples`` items per epoch (default ``n``; more than ``n`` repeats the images, as a few large images cropped
    at random need): a random permutation (repeated as needed) when ``shuffle``, draws with replacement with
    probabilities proportional to ``weights`` (oversampling, see the module docstring) when given, else 0..n-1 in
    order. The epoch's order is padded by wrapping to a multiple of ``world_size``, so every rank gets as many items.
    """

    def __init__(self, n: int, num_samples: int | None = None, shuffle: bool = True, weights=None, seed: int = 0,
                 rank: int = 0, world_size: int = 1):  # fmt: skip
        if n < 1 or (num_samples is not None and num_samples < 1) or not 0 <= rank < world_size:
            raise ValueError(f"need n >= 1, num_samples >= 1 and 0 <= rank < world_size, got {n}, {num_samples}, "
                             f"{rank}, {world_size}")  # fmt: skip
        self.n, self.num_samples = int(n), int(n if num_samples is None else num_samples)
        self.shuffle, self.seed, self.rank, self.world_size = shuffle, int(seed), rank, world_size
        self.weights = None if weights is None else np.asarray(weights, np.float64) / np.sum(weights)
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Iterate over epoch ``epoch``'s items, leaving out this rank's first ``skip``."""
        self.epoch, self.skip = int(epoch), int(skip)

    def order(self) -> tuple[np.ndarray, np.ndarray]:
        """(indices, seeds) of the whole epoch, every rank's items interleaved, before sharding."""
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            indices = rng.choice(self.n, size=self.num_samples, p=self.weights)
        elif self.shuffle:
            repeats = -(-self.num_samples // self.n)
            indices = np.concatenate([rng.permutation(self.n) for _ in range(repeats)])[: self.num_samples]
        else:
            indices = np.arange(self.num_samples) % self.n
        seeds = rng.integers(2**63, size=self.num_samples)
        total = -(-self.num_samples // self.world_size) * self.world_size
        wrap = np.arange(total) % self.num_samples
        return indices[wrap], seeds[wrap]

    def __iter__(self):
        indices, seeds = self.order()
        for i, s in zip(indices[self.rank :: self.world_size][self.skip :], seeds[self.rank :: self.world_size][self.skip :]):
            yield int(i), int(s)

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size) - self.skip


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
