"""Training a U-Net: the config tree, the loop, schedules, the LR finder, checkpoints, progress lines, plots, DDP.

``Trainer(load_config("quick")).fit()`` is what ``python -m unet_from_scratch.train`` runs; ``load_model(path)``
rebuilds a trained model from any checkpoint the trainer wrote.
"""

from unet_from_scratch.training.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from unet_from_scratch.training.config import ConfigError, TrainConfig, apply_overrides, load_config, to_toml
from unet_from_scratch.training.loop import Interrupted, NonFiniteLoss, Trainer

__all__ = [
    "CheckpointError", "ConfigError", "Interrupted", "NonFiniteLoss", "TrainConfig", "Trainer", "apply_overrides",
    "load_checkpoint", "load_config", "load_model", "save_checkpoint", "to_toml",
]
