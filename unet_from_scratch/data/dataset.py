"""SegmentationDataset: a source's items as (image, target classes, weight map) arrays, for a DataLoader or NumPy.

One item, step by step (docs/architecture.md, "the data path of a training step"):

1. ``source[index]`` -> image (C, H, W) float, mask (H, W).
2. The mask's labels and weight map (``targets.py``), computed once per mask and cached in memory by source index:
   the paper precomputes its weight maps, and they cost a distance transform per object.
3. The transform moves image, labels and weight map together (``transforms.py``), drawing from a NumPy generator
   seeded by the item's own seed when the sampler gives one (``EpochSampler``: the same augmentation in any
   worker), else from torch's generator where torch is installed: ``torch.manual_seed`` makes a run reproducible,
   DataLoader workers get their own streams, and every epoch sees new augmentations (without torch: fresh entropy).
4. The labels become target classes. The image is left as the source gives it: normalisation belongs to the
   model (``model.set_normalization(statistics.mean, statistics.std)``), so the training split's numbers are
   saved with the weights and applied to every later input, at inference too.

A source is any object with ``len``, ``source[i] -> (image, mask)``, ``mask_kind`` ("instances" or "classes") and
``class_names`` (index k names class k). Every item is checked as it is read (``targets.check_item``, the policy of
``reference/_checks.py``): an image (C, H, W), or (H, W), which is read as one channel (never as H channels), of
finite real values with the training images' channels; a mask (H, W) of the image's size, of integer labels (a
float mask is refused, not rounded) within the classes. A bad item raises a one-line ValueError naming it, in
whichever split it is.

Weight maps follow the mask through the transforms rather than being recomputed from the moved mask: the paper's
way, and the same map whenever the transform is a flip or a 90-degree rotation (the distances are isotropic); after
elastic or affine warps it is the warped map. With several DataLoader workers each worker fills its own cache;
``precompute()`` before building the loader fills it once, for all of them.

Items are NumPy arrays and this module imports no torch: a ``DataLoader``'s collation stacks them into tensors,
``data.epochs.batches`` into arrays (the NumPy engine), so both backends train on the same numbers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from unet_from_scratch.data.split import train_val_split
from unet_from_scratch.data.statistics import DataStatistics, compute_statistics
from unet_from_scratch.data.targets import MASK_KINDS, check_item, prepare_labels, target_classes, weight_map
from unet_from_scratch.data.transforms import Sample, Transform


class SegmentationDataset:
    """Items ``indices`` of ``source`` (all by default) -> (image, target, weights) arrays.

    ``dataset[i]`` -> (image float32 (C, H_in, W_in) as the source gives it, target int64 (H, W) class indices, weights float32
    (H, W)); H_in = H unless the transform pads or crops the image wider for a valid-convolution network.
    ``statistics`` are the training split's; None computes them from these very items (this is the training split),
    with ``class_weight_method``. ``w0``, ``sigma``: the weight map's border term; ``separate_touching``: carve the
    background gap between touching instances (see ``targets.py``).
    """

    def __init__(
        self,
        source,
        indices: Sequence[int] | None = None,
        transform: Transform | None = None,
        statistics: DataStatistics | None = None,
        class_weight_method: str | None = "balanced",
        w0: float = 10.0,
        sigma: float = 5.0,
        separate_touching: bool = True,
    ):
        if getattr(source, "mask_kind", None) not in MASK_KINDS or not hasattr(source, "class_names"):
            raise ValueError(
                f"source must have mask_kind in {MASK_KINDS} and class_names, got {type(source).__name__}"
            )
        self.source = source
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= len(source)):
            raise ValueError(f"indices must lie in [0, {len(source)}), got {self.indices.min()}..{self.indices.max()}")
        self.transform = transform
        self.w0, self.sigma, self.separate_touching = w0, sigma, separate_touching
        if statistics is None:
            statistics = compute_statistics(source, self.indices, class_weight_method, separate_touching)
        if tuple(statistics.class_names) != tuple(source.class_names):
            raise ValueError(
                f"statistics are for classes {statistics.class_names}, the source has {tuple(source.class_names)}"
            )
        self.statistics = statistics
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.statistics.class_names

    @property
    def class_weights(self) -> np.ndarray:
        """(K,) float64: the training split's class weights, in class order."""
        return np.asarray(self.statistics.class_weights)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i``'s (image (C, H, W), mask (H, W)) from the source, checked (``targets.check_item``)."""
        index = int(self.indices[i])
        image, mask = check_item(*self.source[index], index, self.source.mask_kind, len(self.class_names))
        if image.shape[0] != len(self.statistics.mean):
            raise ValueError(
                f"item {index}: image must have {len(self.statistics.mean)} channel(s), as the training images, "
                f"got shape {image.shape}"
            )
        return image, mask

    def labels_and_weights(self, i: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Item ``i``'s untransformed labels int32 (H, W) and weight map float32 (H, W), from the cache.

        ``mask`` is the item's mask as ``read`` returns it (read from the source when None).
        """
        index = int(self.indices[i])
        if index not in self._cache:
            if mask is None:
                mask = self.read(i)[1]
            kind = self.source.mask_kind
            labels = prepare_labels(mask, kind, self.separate_touching)
            self._cache[index] = labels, weight_map(labels, kind, self.class_weights, self.w0, self.sigma)
        return self._cache[index]

    def precompute(self) -> None:
        """Fill the weight-map cache for every item now (before forking DataLoader workers, so they share it)."""
        for i in range(len(self)):
            self.labels_and_weights(i)

    def __getitem__(self, item) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item ``i``, or ``(i, seed)`` (from ``EpochSampler``): then the augmentation draws from ``default_rng(seed)``."""
        i, seed = item if isinstance(item, tuple) else (item, None)
        image, mask = self.read(i)
        labels, weights = self.labels_and_weights(i, mask)
        sample = Sample(np.asarray(image, dtype=np.float32), labels, weights)
        if self.transform is not None:
            rng = np.random.default_rng(_torch_seed() if seed is None else seed)
            sample = self.transform(sample, rng)
            if self.source.mask_kind == "instances" and self.separate_touching:
                # Carved again: a warp resamples the labels by nearest neighbour and can skip a one-pixel gap,
                # merging touching cells in the target. After flips and rotations this changes nothing.
                sample = Sample(sample.image, prepare_labels(sample.labels, "instances"), sample.weights)
        target = target_classes(sample.labels, self.source.mask_kind)
        return (
            np.ascontiguousarray(sample.image, dtype=np.float32),
            np.ascontiguousarray(target, dtype=np.int64),
            np.array(sample.weights, dtype=np.float32),  # a copy: never hand out the cache itself
        )


def _torch_seed() -> int | None:
    """A seed from torch's global generator (``torch.manual_seed``, each DataLoader worker's own), if torch is there."""
    try:
        import torch  # only for the draw: this module otherwise runs without torch
    except ImportError:
        return None
    return int(torch.randint(2**62, ()))


def make_datasets(
    source,
    val_fraction: float = 0.2,
    seed: int = 0,
    transform: Transform | None = None,
    val_transform: Transform | None = None,
    **options,
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """(train, val) datasets over a seeded split of ``source``; both use the training split's statistics.

    ``transform`` augments training items; ``val_transform`` (e.g. only ``MirrorPad`` for a valid-convolution
    model) prepares validation items. ``options`` go to both ``SegmentationDataset``s (``class_weight_method``,
    ``w0``, ``sigma``, ``separate_touching``).
    """
    train_indices, val_indices = train_val_split(len(source), val_fraction, seed)
    train = SegmentationDataset(source, train_indices, transform, **options)
    val = SegmentationDataset(source, val_indices, val_transform, statistics=train.statistics, **options)
    return train, val
