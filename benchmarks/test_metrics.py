"""The NumPy metrics against torchmetrics on the CPU.

Label maps N=8, 256x256, C=2 and C=8 (int64; the prediction is the target with 10% of the pixels relabelled at
random). Every class scored on both sides (``include_background=True``), torch with one thread; torchmetrics
with its argument checks (the default) and without (``validate_args=False``; ours always checks its labels).
instance_f1 has no torch counterpart; its group times it alone on 8 images of 64 touching square cells.

    pytest benchmarks/test_metrics.py --benchmark-group-by=group --benchmark-columns=min,median,rounds
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchmetrics.functional import classification as tmc

from unet_from_scratch.reference import metrics

FULL_SIZE, SMOKE_SIZE = (8, 256, 256), (1, 16, 16)  # (N, H, W)

# name -> (ours(y_true, y_pred, C), torchmetrics(preds, target, C, validate_args)): the same numbers.
METRICS = {
    "confusion per image": (
        lambda t, p, c: metrics.confusion(t, p, c),
        lambda p, t, c, v: tmc.multiclass_stat_scores(
            p, t, c, average=None, multidim_average="samplewise", validate_args=v
        ),
    ),
    "iou macro": (
        lambda t, p, c: metrics.iou(t, p, c, reduction="macro", include_background=True),
        lambda p, t, c, v: tmc.multiclass_jaccard_index(p, t, c, average="macro", validate_args=v),
    ),
    "f1 macro": (
        lambda t, p, c: metrics.f1(t, p, c, reduction="macro", include_background=True),
        lambda p, t, c, v: tmc.multiclass_f1_score(p, t, c, average="macro", validate_args=v),
    ),
    "accuracy micro": (
        lambda t, p, c: metrics.accuracy(t, p, c),
        lambda p, t, c, v: tmc.multiclass_accuracy(p, t, c, average="micro", validate_args=v),
    ),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _label_maps(rng, classes, smoke):
    shape = SMOKE_SIZE if smoke else FULL_SIZE
    y_true = rng.integers(0, classes, size=shape)
    relabel = rng.random(shape) < 0.1
    y_pred = np.where(relabel, rng.integers(0, classes, size=shape), y_true)
    return y_true, y_pred


def _group(name, classes, smoke):
    n, h, w = SMOKE_SIZE if smoke else FULL_SIZE
    return f"{name} cpu N={n} C={classes} {h}x{w}"


@pytest.mark.parametrize("classes", [2, 8])
@pytest.mark.parametrize("name", METRICS)
def test_numpy(benchmark, rng, smoke, name, classes):
    y_true, y_pred = _label_maps(rng, classes, smoke)
    benchmark.group = _group(name, classes, smoke)
    result = benchmark(METRICS[name][0], y_true, y_pred, classes)
    assert np.all(np.isfinite(result))


@pytest.mark.parametrize("validate_args", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("classes", [2, 8])
@pytest.mark.parametrize("name", METRICS)
def test_torchmetrics(benchmark, rng, smoke, name, classes, validate_args):
    """torchmetrics checked (the default: its argument checks include a torch.unique of the inputs) and not."""
    y_true, y_pred = _label_maps(rng, classes, smoke)
    benchmark.group = _group(name, classes, smoke)
    preds, target = torch.from_numpy(y_pred), torch.from_numpy(y_true)
    result = benchmark(METRICS[name][1], preds, target, classes, validate_args)
    ours = METRICS[name][0](y_true, y_pred, classes)
    if name == "confusion per image":  # torchmetrics: (N, C, 5) = tp, fp, tn, fn, support
        ours = np.stack([ours[0], ours[1], ours[3], ours[2], ours[0] + ours[2]], axis=-1)
    np.testing.assert_allclose(ours, result.numpy(), rtol=1e-6)


def _touching_cells(images, side, cells_per_row):
    """Instance images of a grid of square cells touching their neighbours, and a prediction with a gap between
    every two rows of cells but gaps between the cells of a row in every other row only: half the cells are found,
    the other rows merge into strips."""
    step = side // cells_per_row
    rows, cols = np.indices((side, side)) // step
    instances = np.broadcast_to(1 + rows * cells_per_row + cols, (images, side, side)).copy()
    boundary = np.arange(side) % step == 0
    prediction = np.ones((images, side, side), bool)
    prediction[:, boundary, :] = False
    prediction[:, :, boundary] &= rows[:, :1] % 2 == 1  # column gaps (False) in the even rows of cells only
    return instances, prediction


def test_instance_f1(benchmark, smoke):
    n, h = (1, 64) if smoke else FULL_SIZE[:2]  # cells of 8x8 pixels at least, so that a separated one is found
    instances, prediction = _touching_cells(n, h, 8)
    benchmark.group = f"instance_f1 cpu N={n} {h}x{h} 64 cells"
    scores = benchmark(metrics.instance_f1, instances, prediction)
    assert (scores.n_true, scores.matched, scores.n_pred) == (64 * n, 32 * n, 36 * n)
