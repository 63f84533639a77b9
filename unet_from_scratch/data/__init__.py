"""What a U-Net trains on: the built-in synthetic touching-cells dataset, image folders, transforms, weight maps.

``source[i] -> (image, mask)`` (``SyntheticCells``, ``FolderDataset``) -> transforms -> ``SegmentationDataset``
(target classes and the cached weight map) -> batches: ``make_loader`` (a torch ``DataLoader``) or, in NumPy alone,
``EpochSampler`` + ``batches``.

Everything here but ``make_loader`` and ``oversampling_sampler`` runs without torch; those two are imported on first
use (PEP 562), so ``import unet_from_scratch.data`` never loads torch.
"""

from importlib import import_module

from unet_from_scratch.data.dataset import SegmentationDataset, make_datasets
from unet_from_scratch.data.folder import FolderDataset
from unet_from_scratch.data.epochs import EpochSampler, batches
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
    "RandomCrop", "RandomFlip", "RandomRotate90", "Sample", "SegmentationDataset", "SyntheticCells", "batches",
    "compute_statistics", "make_datasets", "make_loader", "oversampling_sampler", "train_val_split",
]

_TORCH_NAMES = ("make_loader", "oversampling_sampler")  # in sampling.py, which needs torch


def __getattr__(name: str):
    if name not in _TORCH_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.sampling"), name)
