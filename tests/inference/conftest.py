"""Tiny trained checkpoints shared by the predict, evaluate and export tests (trained once per session)."""

from __future__ import annotations

import pytest

from unet_from_scratch.training import Trainer
from unet_from_scratch.training.config import TrainConfig, apply_overrides, validate
from unet_from_scratch.training.progress import Progress

TINY = {
    "data.images": 10, "data.size": 40, "data.samples_per_epoch": 16, "model.depth": 2, "model.base_channels": 4,
    "run.epochs": 2, "run.batch_size": 4, "run.progress": "lines",
}  # fmt: skip


def train_tiny(out, **overrides):
    config = validate(apply_overrides(TrainConfig(), {**TINY, "run.out": str(out), **overrides}))
    Trainer(config, progress=Progress(enabled=False)).fit()
    return out / "best.pt"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """best.pt of a 2-epoch run on 10 synthetic 40x40 touching-cells images (instances, two classes)."""
    return train_tiny(tmp_path_factory.mktemp("tiny-run"))
