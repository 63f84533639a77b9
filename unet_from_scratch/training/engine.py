"""What the training loop asks of an engine: one step, one validation batch, weights and state in and out.

The loop (``loop.py``) owns the run: data, schedule, validation scores, progress lines, history, plots,
checkpoints, signals. The engine owns the numbers of a step: the model's forward and backward pass, the loss and
the optimizer. Two engines speak this protocol:

- ``TorchEngine`` (``torch_engine.py``): ``nn.UNet`` / ``AttentionUNet``, ``CombinedLoss`` (the fused Triton
  kernel on CUDA), ``torch.optim``, mixed precision, DistributedDataParallel.
- ``NumpyEngine`` (``numpy_engine.py``): the reference's ``NumpyUNet``, ``combined_loss`` and optimizers, on
  NumPy arrays alone; its batches come from ``data.batches`` without torch.

Both write the same checkpoint: ``weights()`` is the torch model's ``state_dict()`` (tensors under the same names),
so ``training.load_model``, ``evaluate``, ``predict`` and ``export`` take a run of either engine, and either engine
starts from (``--init-from``) or resumes the other's weights.

This module imports neither torch nor the engines.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import numpy as np


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch and step."""


def confusion_counts(target: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 pixel counts, rows the target class, columns the predicted one, of (N, H, W) class maps."""
    flat = target.reshape(-1).astype(np.int64) * num_classes + prediction.reshape(-1)
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


class Engine(Protocol):
    """The methods ``Trainer`` calls; ``batch`` is whatever ``loader`` yields, arrays are NumPy."""

    name: str  # "torch" or "numpy"
    model: object  # the network (an nn.Module, or a NumpyUNet)
    model_config: dict  # the architecture, ``UNet(...).config``: rebuilds the torch model from a checkpoint
    num_parameters: int
    device_line: str  # what the run's first line says about where it computes

    def set_normalization(self, mean, std, class_names) -> None:
        """The training split's per-channel statistics and class names, stored with the weights."""

    def loader(self, dataset, sampler, batch_size: int, workers: int, seed: int) -> Iterable:
        """The epoch's full batches of ``dataset[item]`` for the items ``sampler`` yields, as this engine takes them."""

    def train_step(self, batch, lr: float) -> tuple[float, np.ndarray]:
        """One optimizer step at rate ``lr`` -> (loss, (K, K) confusion counts of the batch); NonFiniteLoss first."""

    def evaluate(self, image: np.ndarray, target: np.ndarray, weights: np.ndarray) -> tuple[float, np.ndarray]:
        """Eval-mode (loss, predicted classes (N, H, W)) of whole images (N, C, H, W) of any size."""

    def weights(self) -> dict:
        """The model as the torch model's ``state_dict()`` (CPU tensors)."""

    def load_weights(self, state: dict) -> None:
        """Load a ``state_dict()`` of the same architecture; ValueError (one line) if it does not fit."""

    def state_dict(self) -> dict:
        """The optimizer's state (and any other of the engine's), loadable with ``weights_only``."""

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()``."""
