"""Overlap-tile inference against one whole-image pass on a 2048x2048 image: time and peak memory on the CPU.

The quick preset's model (UNet, depth 3, 16 base channels, batch norm, "same" padding), in eval mode, one grey
2048x2048 image (256x256 under ``--benchmark-disable``, CI's single pass):

- ``whole``: ``inference.predict(model, image)``, one forward pass over the whole image;
- ``tiled``: ``inference.predict(model, image, tile=512)``: tiles of 512, 50% overlap, Gaussian blending, 4 tiles
  per forward (49 tiles for 2048, so about 3x the pixels of the whole pass go through the network).

Peak memory: the process's peak resident set during one call, above its resident set before it (Linux:
``VmHWM`` of ``/proc/self/status``, reset through ``/proc/self/clear_refs``; torch's CPU allocator is not seen by
tracemalloc). It is stored in each benchmark's ``extra_info`` with the images/s.

    pytest benchmarks/test_inference.py --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unet_from_scratch.inference import predict
from unet_from_scratch.nn import UNet

STATUS = Path("/proc/self/status")


def _kib(field: str) -> int:
    line = next(line for line in STATUS.read_text().splitlines() if line.startswith(field + ":"))
    return int(line.split()[1])


def peak_memory_mb(function) -> float | None:
    """MB of resident memory ``function()`` adds at its peak (Linux only; None elsewhere)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
        before = _kib("VmRSS")
    except OSError:
        return None
    function()
    return (_kib("VmHWM") - before) / 1024


@pytest.fixture(scope="module")
def setup(request):
    smoke = bool(request.config.getoption("benchmark_disable"))
    side = 256 if smoke else 2048
    model = UNet(1, 2, depth=3, base_channels=16, padding="same", batch_norm=True).eval()
    image = torch.rand(1, 1, side, side)
    return model, image, (128 if smoke else 512), (1 if smoke else 3)


@pytest.mark.benchmark(group="inference 2048x2048")
@pytest.mark.parametrize("mode", ["whole", "tiled"])
def test_inference(benchmark, setup, mode):
    model, image, tile, rounds = setup
    run = (lambda: predict(model, image)) if mode == "whole" else (lambda: predict(model, image, tile=tile))
    logits = benchmark.pedantic(run, rounds=rounds, warmup_rounds=0 if rounds == 1 else 1)
    assert logits.shape == (1, 2, *image.shape[-2:]) and torch.isfinite(logits).all()
    memory = peak_memory_mb(run)
    if benchmark.stats is not None:  # timed: images/s from the median
        benchmark.extra_info["images_per_s"] = 1 / benchmark.stats.stats.median
    benchmark.extra_info["peak_memory_mb"] = memory
    benchmark.extra_info["tile"] = tile if mode == "tiled" else None
    print(f"\n{mode}: {image.shape[-1]}x{image.shape[-2]}, peak memory +{memory:.0f} MB" if memory is not None else "")
