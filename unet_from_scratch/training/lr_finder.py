"""The learning-rate range test (Smith 2017, "Cyclical Learning Rates for Training Neural Networks", sec. 3.3).

Train for a few dozen steps while the rate grows exponentially from ``start`` to ``end``,

    lr_k = start · (end / start)^(k / (steps - 1)),

and watch the loss. It first stays flat (too small a rate to move), then falls (the useful range), then shoots up
(divergence). The raw loss of single batches is noisy, so it is smoothed by an exponential moving average with
bias correction (as Adam corrects its moments):

    avg_k = beta · avg_{k-1} + (1 - beta) · loss_k,    smoothed_k = avg_k / (1 - beta^(k+1))

The test stops once the smoothed loss exceeds ``diverge`` times its minimum. The suggestion is the rate where the
smoothed loss falls fastest against log(lr), before its minimum: the minimum itself sits at the edge of divergence
(a run at that rate would be unstable), while the steepest slope is where a step of the rate buys the most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np


@dataclass
class RangeTest:
    rates: np.ndarray  # (k,) learning rates tried
    losses: np.ndarray  # (k,) smoothed losses
    suggestion: float  # the steepest descent before the minimum


def suggest(rates: np.ndarray, losses: np.ndarray, skip: int = 3) -> float:
    """The rate of the steepest descent of ``losses`` against log(rates), before the minimum."""
    minimum = int(np.argmin(losses))
    if minimum <= skip + 1:  # no descent to speak of: fall back to a tenth of the minimum's rate
        return float(rates[minimum] / 10)
    slope = np.gradient(losses[: minimum + 1], np.log(rates[: minimum + 1]))
    return float(rates[skip + int(np.argmin(slope[skip:]))])


def range_test(train_step: Callable[[float, object], float], batches: Iterator, start: float = 1e-6,
               end: float = 1.0, steps: int = 100, beta: float = 0.98, diverge: float = 4.0) -> RangeTest:  # fmt: skip
    """Run ``train_step(lr, batch) -> loss`` over ``steps`` batches with exponentially growing rates.

    The caller saves and restores the model and optimizer around the test: it changes the weights.
    """
    rates = start * (end / start) ** (np.arange(steps) / max(steps - 1, 1))
    tried, smoothed = [], []
    average, best = 0.0, np.inf
    for k, (rate, batch) in enumerate(zip(rates, batches)):
        loss = train_step(float(rate), batch)
        if not np.isfinite(loss):
            break
        average = beta * average + (1 - beta) * loss
        value = average / (1 - beta ** (k + 1))
        tried.append(rate)
        smoothed.append(value)
        best = min(best, value)
        if value > diverge * best:
            break
    if len(tried) < 2:
        raise ValueError("the LR range test diverged at once: lower its start rate")
    rates_tried, losses = np.asarray(tried), np.asarray(smoothed)
    return RangeTest(rates_tried, losses, suggest(rates_tried, losses))
