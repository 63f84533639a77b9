"""The U-Net weight map: windowed distance transforms against one full-image transform per cell.

Synthetic images of random ellipse cells (semi-axes 6-14 pixels, some touching, some cut by the edges) at a fixed
density of one cell per 2,621 pixels: 100 cells in 512x512, 400 in 1024x1024. The naive map costs K full-image
distance transforms and a sort of K x H x W distances, so its time grows with the square of the area at fixed
density; the fast map's windows add up to a fixed multiple of the area, so its time grows linearly.

With benchmarks disabled (CI) every case runs once on a small image, the fast map checked against the naive one.
"""

import numpy as np
import pytest

from tests.reference.test_weight_map import random_cell_labels
from unet_from_scratch.reference.weight_map import unet_weight_map, unet_weight_map_naive

PIXELS_PER_CELL = 512 * 512 // 100
SMOKE_SIDE = 96


def cells_image(side: int, smoke: bool) -> np.ndarray:
    """A seeded side x side image (SMOKE_SIDE when smoke) with cells at the benchmarks' density."""
    side = SMOKE_SIDE if smoke else side
    return random_cell_labels((side, side), side * side // PIXELS_PER_CELL, np.random.default_rng(side))


@pytest.mark.parametrize("side", [512, 1024])
@pytest.mark.parametrize("way", ["fast", "naive"])
def test_fast_vs_naive(benchmark, smoke, side, way):
    labels = cells_image(side, smoke)
    benchmark.group = f"weight_map {side}x{side}, {side * side // PIXELS_PER_CELL} cells: fast vs naive"
    if way == "fast":
        out = benchmark(unet_weight_map, labels)
    else:
        # One naive run on 1024x1024 takes a minute or more: a single round, no calibration.
        out = benchmark.pedantic(unet_weight_map_naive, args=(labels,), rounds=1 if side > 512 else 3, iterations=1)
    if smoke:
        other = unet_weight_map_naive(labels) if way == "fast" else unet_weight_map(labels)
        np.testing.assert_allclose(out, other, rtol=0, atol=1e-4)


@pytest.mark.parametrize("side", [256, 512, 1024, 2048])
def test_fast_scaling(benchmark, smoke, side):
    labels = cells_image(side, smoke)
    benchmark.group = "weight_map fast: time against image area at fixed cell density"
    out = benchmark(unet_weight_map, labels)
    assert out.shape == labels.shape and np.all(np.isfinite(out))
