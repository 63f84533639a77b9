"""Checkpoints: everything a run needs to continue exactly, written so that a kill never leaves a broken file.

A checkpoint is one ``torch.save`` of a dict of plain values and tensors:

    format, version        says it is ours (anything else is refused in one line)
    model_config, model    the architecture (``model.config``) and its ``state_dict()`` — normalisation statistics
                           and class names included, so ``load_model(path)`` alone gives a model ready to predict
    config                 the run's whole ``TrainConfig`` as nested dicts
    statistics             the training split's class names, mean/std and class weights
    optimizer, scaler, plateau, trainer   their state dicts; ``trainer`` holds epoch, step, the partial sums of an
                           interrupted epoch, best score, early-stopping count and the history rows so far
    rng                    python, numpy and torch (and CUDA) generator states at the moment of saving; the
                           sampler and the augmentations need none: ``data.EpochSampler`` derives each epoch's
                           order and each item's augmentation seed from (seed, epoch) alone

Writing is atomic: the bytes go to a temporary file in the same folder, are flushed and fsync'ed, and only then
``os.replace`` swaps it for the old file (one rename, atomic on POSIX and Windows). A process killed mid-write
leaves the previous checkpoint intact and at most a stray temporary file.

Loading runs no code: ``torch.load(weights_only=True)`` unpickles tensors and plain containers only, so a
checkpoint from elsewhere cannot execute anything on this machine.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

from unet_from_scratch.nn.registry import from_config

FORMAT = "unet-from-scratch checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is missing or is not one of our checkpoints (one line, naming the file)."""


def rng_state() -> dict:
    """Every global generator's state, as tensors and plain values (loadable with ``weights_only``)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                  "has_gauss": has_gauss, "gauss": gauss},  # fmt: skip
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["position"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value):
    """NumPy scalars as Python numbers, recursively: ``weights_only`` loading refuses NumPy's scalar type."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value.item() if isinstance(value, np.generic) else value


def save_checkpoint(checkpoint: dict, path) -> Path:
    """Write ``checkpoint`` (``format`` and ``version`` added) to ``path`` atomically; returns the path."""
    checkpoint = _plain(checkpoint)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            torch.save({"format": FORMAT, "version": VERSION, **checkpoint}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        directory = os.open(path.parent, os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return path


def load_checkpoint(path, map_location="cpu") -> dict:
    """The dict ``save_checkpoint`` wrote; CheckpointError (one line) for a missing file or anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # not a torch file, truncated, or holding objects that weights_only refuses
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = next((line for line in lines if "Unpickler error" in line), lines[0] if lines else type(error).__name__)
        raise CheckpointError(f"{path} is not a unet-from-scratch checkpoint ({reason[:160]})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a unet-from-scratch checkpoint (no {FORMAT!r} marker)")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(f"{path} is checkpoint version {checkpoint.get('version')}, this package reads {VERSION}")
    return checkpoint


def load_model(path, map_location="cpu") -> torch.nn.Module:
    """The trained model of a checkpoint, rebuilt from its own config, in eval mode, ready to predict."""
    checkpoint = load_checkpoint(path, map_location)
    model = from_config(checkpoint["model_config"])
    model.load_state_dict(checkpoint["model"])
    return model.eval()
