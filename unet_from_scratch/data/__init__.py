"""What a U-Net trains on: the built-in synthetic touching-cells dataset, image folders, transforms, weight maps.

``source[i] -> (image, mask)`` (``SyntheticCells``, ``FolderDataset``) -> transforms -> ``SegmentationDataset``
(target classes and the cached weight map) -> ``make_loader``.
"""

from unet_from_scratch.data.dataset import SegmentationDataset, make_datasets
from unet_from_scratch.data.folder import FolderDataset
from unet_from_scratch.data.sampling import EpochSampler, make_loader, oversampling_sampler
from unet_from_scratch.data.split import train_val_split
from unet_from_scratch.data.statistics import DataStatistics, compute_statistics
from unet_from_scratch.data.synthetic import SyntheticCells
from unet_from_scratch.data.transforms import (
    Compose,
    ElasticDeform,
    MirrorPad,
    RandomAffine,
    RandomContrast,
    RandomCrop,
    RandomFlip,
    RandomRotate90,
    Sample,
)

__all__ = [
    "Compose", "DataStatistics", "ElasticDeform", "EpochSampler", "FolderDataset", "MirrorPad", "RandomAffine", "RandomContrast",
    "RandomCrop", "RandomFlip", "RandomRotate90", "Sample", "SegmentationDataset", "SyntheticCells",
    "compute_statistics", "make_datasets", "make_loader", "oversampling_sampler", "train_val_split",
]
