"""Training a U-Net: the config tree, the loop, schedules, the LR finder, checkpoints, progress lines, plots, DDP.

``Trainer(load_config("quick")).fit()`` is what ``python -m unet_from_scratch.train`` runs; ``load_model(path)``
rebuilds a trained model from any checkpoint the trainer wrote.

The names below are imported on first use (PEP 562), so that ``training.config`` — and with it ``--help`` and the
check of every flag — loads without torch.
"""

from importlib import import_module

_HOMES = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "load_model": "checkpoint",
    "save_checkpoint": "checkpoint", "ConfigError": "config", "TrainConfig": "config", "apply_overrides": "config",
    "load_config": "config", "to_toml": "config", "Interrupted": "loop", "NonFiniteLoss": "engine", "Trainer": "loop",
}  # fmt: skip
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
