"""One training step of the NumPy engine against the same step in torch on the CPU, float32.

A step is forward (training mode: batch statistics) + the combined loss (0.7 Dice + 0.3 cross-entropy weighted by a
pixel weight map, the quick preset's) + backward + one Adam update, on the same weights and batch:

- ``NumpyUNet.forward`` -> ``reference.losses.combined_loss`` (loss and dlogits) -> ``NumpyUNet.backward`` ->
  ``reference.optim.Adam.step``;
- ``UNet`` -> ``nn.combined_loss_torch`` -> ``loss.backward()`` -> ``torch.optim.Adam.step``.

Two models (``CONFIGS``): the default small configuration (depth 3, 16 base channels, batch norm, "same" padding;
a batch of 4 images of 128x128) and one paper-sized level: a depth-1 U-Net with 64 base channels, i.e. the
paper's first level (two 3x3 convolutions of 64 channels at 128x128), a 128-channel bottleneck at 64x64 and the
decoder level back at 64 channels, batch 1. torch runs on as many threads as NumPy's BLAS
(``same_threads_as_numpy`` of ``benchmarks/conftest.py``). Goal (issue 10): the NumPy step within 2x of torch's.

Correctness, cheaply: both sides start from the same weights, so the step's loss must agree. With benchmarks
disabled (CI) each model runs once at a tiny size (8 base channels at most, 16x16 images).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import assert_close
from unet_from_scratch.nn import UNet, combined_loss_torch
from unet_from_scratch.reference.losses import combined_loss
from unet_from_scratch.reference.optim import Adam
from unet_from_scratch.reference.unet import NumpyUNet

pytestmark = pytest.mark.usefixtures("same_threads_as_numpy")  # benchmarks/conftest.py

COEFFICIENTS = (0.7, 0.0, 0.3)  # Dice, focal, weighted cross-entropy: the quick preset's loss
LR = 1e-3

# name -> (model config, batch, image side)
CONFIGS = {
    "small": (dict(in_channels=1, num_classes=2, depth=3, base_channels=16, padding="same", batch_norm=True), 4, 128),
    "paper level": (dict(in_channels=1, num_classes=2, depth=1, base_channels=64, padding="same", batch_norm=True),
                    1, 128),  # fmt: skip
}


def batch(n: int, side: int, seed: int = 0):
    """Seeded float32 images (N, 1, side, side), int64 labels (N, side, side) and a weight map in [1, 10]."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, side, side), dtype=np.float32)
    target = (rng.random((n, side, side)) < 0.3).astype(np.int64)
    weights = rng.uniform(1.0, 10.0, (n, side, side)).astype(np.float32)
    return x, target, weights


def numpy_step(config: dict, x, target, weights, seed: int = 0):
    """A function running one training step of ``NumpyUNet(config)`` (weights of ``UNet(**config, seed=seed)``)
    on the batch; it returns the step's loss."""
    model = NumpyUNet(config, np.random.default_rng(seed))
    optimizer = Adam(model.params, LR)

    def step() -> float:
        logits = model.forward(x, training=True)
        loss, dlogits = combined_loss(logits, target, weights, coefficients=COEFFICIENTS)
        optimizer.step(model.backward(dlogits.astype(np.float32, copy=False)))
        return float(loss)

    return step


def torch_step(config: dict, x, target, weights, seed: int = 0):
    """The same step in torch: ``UNet(**config, seed=seed)``, ``combined_loss_torch``, ``torch.optim.Adam``."""
    model = UNet(**config, seed=seed).train()
    optimizer = torch.optim.Adam(model.parameters(), LR)
    tx, tt, tw = map(torch.from_numpy, (x, target, weights))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = combined_loss_torch(model(tx), tt, tw, coefficients=COEFFICIENTS)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def case(name: str, smoke: bool):
    """(config, x, target, weights) of model ``name``; tiny under ``smoke``."""
    config, n, side = CONFIGS[name]
    if smoke:
        config, n, side = config | {"base_channels": min(config["base_channels"], 8)}, min(n, 2), 16
    return config, *batch(n, side)


@pytest.fixture(scope="module", autouse=True)
def steady_state(request):
    """Two untimed steps of each model, NumPy and torch, before any timing. OpenBLAS runs the matmuls of a fresh
    process up to 2x slower until it has run some larger ones (``steady_state`` of ``benchmarks/test_conv.py``),
    and the NumPy step itself runs faster once torch has run in the process: 326 ms before a torch step, 292 ms
    after, on the benchmark machine (default model, one thread). Without this, whichever side ran first would
    be measured in another state of the process than the other."""
    if not request.config.getoption("benchmark_disable"):
        for name in CONFIGS:
            for make_step in (numpy_step, torch_step, numpy_step, torch_step):
                make_step(*case(name, smoke=False))()


@pytest.mark.parametrize("impl", ["numpy", "torch"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_step(benchmark, smoke, name, impl):
    config, *data = case(name, smoke)
    benchmark.group = f"training step {name}"
    step = (numpy_step if impl == "numpy" else torch_step)(config, *data)
    step()  # warm-up: a fresh process's first step allocates and brings BLAS to its steady state
    loss = benchmark.pedantic(step, rounds=1 if smoke else 5, warmup_rounds=0 if smoke else 1)
    assert np.isfinite(loss)
    # The first step of a fresh pair: same weights and batch, so the same loss (float32 sums in another order).
    first_numpy, first_torch = numpy_step(config, *data)(), torch_step(config, *data)()
    assert_close(first_numpy, first_torch, name="loss", rtol=1e-4)
