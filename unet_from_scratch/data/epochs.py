"""One epoch of training items, and their batches, in NumPy alone.

``EpochSampler`` fixes which items an epoch trains on and with which augmentation seed, as a pure function of
(seed, epoch); ``batches`` stacks the items it names into arrays. With these two a training loop draws its
batches without torch (the NumPy engine's path); the torch backend hands the same
sampler to a ``DataLoader`` instead, whose collation stacks the same arrays into tensors, so both backends see
the same batches.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np


class EpochSampler:
    """The items of one epoch as ``(index, augmentation seed)`` pairs, a pure function of ``(seed, epoch)``.

    A plain iterable, torch-free (``torch.utils.data.DataLoader`` takes it as its ``sampler``, ``batches`` below
    without torch). A training run needs three things of its sampler that torch's samplers do not give together:

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


def batches(dataset, sampler, batch_size: int) -> Iterator[tuple[np.ndarray, ...]]:
    """The full batches of ``sampler``'s items: each ``dataset[item]`` tuple of arrays stacked on a new first axis.

    ``dataset[item]`` -> (image (C, H, W), target (H, W), weights (H, W)), e.g. ``SegmentationDataset``; a batch
    -> (images (B, C, H, W), targets (B, H, W), weights (B, H, W)) in the items' dtypes. The last, incomplete batch
    is dropped (``drop_last``: batch norm dislikes a batch of one), as the trainer's ``DataLoader`` does.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    items = []
    for item in sampler:
        items.append(dataset[item])
        if len(items) == batch_size:
            yield tuple(np.stack(field) for field in zip(*items))
            items = []
