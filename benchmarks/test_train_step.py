"""The trainer's optimizer step against a bare torch loop, and the data pipeline against the step.

Same model (the quick preset's UNet, depth 3, 16 base channels, batch norm, "same" padding), same batch (4 images
of 128x128 with their weight maps), same loss (the preset's 0.7 Dice + 0.3 CE weighted by the map) and Adam with
max-norm clipping:

- ``trainer``: what ``Trainer._train_epoch`` runs per batch: the rate of the step, the torch engine's
  ``train_step`` (autocast and scaler wrappers, the finite-loss check, the confusion counts) and ``_account`` (the
  epoch line's sums).
- ``bare``: the five lines a hand-written loop would have: zero_grad, forward, loss, backward, clip, step.

Goal: the trainer within 5% of the bare loop. The data test times one batch of the training loader (synthetic
image read, cached weight map, flips and rotations, crop, collation) in images/s, to compare with the step's
images/s: the data must never be the bottleneck.

    pytest benchmarks/test_train_step.py --benchmark-group-by=group --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from unet_from_scratch.nn import combined_loss_torch
from unet_from_scratch.training import Trainer
from unet_from_scratch.training.config import TrainConfig, apply_overrides, validate
from unet_from_scratch.training.progress import Progress


@pytest.fixture(scope="module")
def setup(tmp_path_factory, request):
    smoke = bool(request.config.getoption("benchmark_disable"))
    overrides = {"data.images": 24, "run.out": str(tmp_path_factory.mktemp("run"))}
    if smoke:  # CI's single pass: a small model and image keep it to a second
        overrides |= {"data.size": 32, "model.base_channels": 4}
    trainer = Trainer(validate(apply_overrides(TrainConfig(), overrides)), progress=Progress(enabled=False))
    trainer.sampler.set_epoch(0)
    batch = next(iter(trainer.loader))
    return trainer, batch


@pytest.mark.benchmark(group="train step")
def test_trainer_step(benchmark, setup):
    trainer, batch = setup
    sums = trainer._empty_sums()

    def step():
        loss, counts = trainer.engine.train_step(batch, trainer._rate(0))
        trainer._account(sums, loss, counts)

    benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    assert sums["steps"] >= 1 and np.sum(sums["confusion"]) == sums["steps"] * batch[1].numel()


@pytest.mark.benchmark(group="train step")
def test_bare_torch_step(benchmark, setup):
    trainer, (image, target, weights) = setup
    model = copy.deepcopy(trainer.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=trainer._rate(0))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = combined_loss_torch(model(image), target, weights, validate=False, **vars(trainer.engine.criterion.options))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss

    loss = benchmark.pedantic(step, rounds=20, warmup_rounds=3)
    assert torch.isfinite(loss)


@pytest.mark.benchmark(group="data")
def test_data_pipeline_batch(benchmark, setup):
    trainer, batch = setup

    def one_batch():
        return next(iter(trainer.loader))

    image, target, weights = benchmark.pedantic(one_batch, rounds=10, warmup_rounds=1)
    assert image.shape == batch[0].shape and target.shape == weights.shape == batch[1].shape
