"""Learning-rate policies: the rate of every optimizer step as a pure function of the step, and plateau reduction.

Pure functions of (step, total steps) make a run resumable by construction: the rate of step 4711 is the same
whether the run got there in one go or was resumed at step 4000, and there is no scheduler state to lose.
``peak`` is the configured learning rate, ``total`` the number of optimizer steps in the run, ``step`` counts
from 0. Plain Python, so the torch trainer and the NumPy engine set their optimizers' ``lr`` from the same lines.

- constant        lr(t) = peak
- warmup-cosine   lr(t) = peak · (t + 1) / W for t < W (a linear warmup: large steps on random weights diverge),
                  then final + (peak - final) · (1 + cos(π (t - W) / (total - W))) / 2, final = peak · final_ratio
                  (Loshchilov & Hutter 2017, SGDR, without restarts; the warmup of Goyal et al. 2017)
- one-cycle       from peak / 25 up to peak over the first pct_start of the run, then down to peak · final_ratio,
                  both halves cosine-shaped (Smith & Topin 2018, "Super-convergence"): the large middle rates explore
                  and keep the weights out of sharp minima, the low end settles. Equal to ``torch.optim.lr_scheduler
                  .OneCycleLR`` with ``div_factor=25, final_div_factor=1 / (25 · final_ratio)``.
- step            lr(t) = peak · gamma^⌊t / step_size⌋, the classic step decay (``torch.optim.lr_scheduler.StepLR``;
                  the ResNet recipe of He et al. 2016 divides by 10 at fixed points)
- plateau         constant per step; after each epoch ``Plateau`` lowers the rate by ``factor`` once the validation
                  score has not improved for ``patience`` epochs (``torch.optim.lr_scheduler.ReduceLROnPlateau``,
                  mode "max", its default relative threshold 1e-4).

Bad arguments (a negative step, a ratio outside [0, 1], an unknown policy) raise a one-line ValueError.
"""

from __future__ import annotations

import math

from unet_from_scratch.reference._checks import check_int, check_real

__all__ = ["ONE_CYCLE_DIV", "SCHEDULES", "Plateau", "learning_rate", "one_cycle", "step_decay", "warmup_cosine"]

ONE_CYCLE_DIV = 25.0
SCHEDULES = ("constant", "warmup-cosine", "one-cycle", "step", "plateau")


def _cosine(start: float, end: float, fraction: float) -> float:
    """From ``start`` at fraction 0 to ``end`` at fraction 1 along half a cosine."""
    return end + (start - end) * (1.0 + math.cos(math.pi * fraction)) / 2.0


def _check_common(step, total, peak) -> None:
    check_int(step, "step", 0)
    check_int(total, "total")
    check_real(peak, "peak", 0.0)


def warmup_cosine(step: int, total: int, peak: float, warmup: int, final_ratio: float = 0.0) -> float:
    """The warmup-cosine rate of optimizer step ``step`` (0-based) of ``total``, ``warmup`` of them warming up."""
    _check_common(step, total, peak)
    check_int(warmup, "warmup", 0)
    check_real(final_ratio, "final_ratio", 0.0, 1.0)
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(total - warmup, 1)
    return _cosine(peak, peak * final_ratio, min(step - warmup, span) / span)


def one_cycle(step: int, total: int, peak: float, pct_start: float = 0.3, final_ratio: float = 1e-4) -> float:
    """The one-cycle rate of optimizer step ``step`` of ``total`` (torch's OneCycleLR, cosine, two phases)."""
    _check_common(step, total, peak)
    check_real(pct_start, "pct_start", above=0.0, below=1.0)
    check_real(final_ratio, "final_ratio", 0.0, 1.0)
    initial, final = peak / ONE_CYCLE_DIV, peak * final_ratio
    rise_end = float(pct_start * total) - 1  # torch's phase boundaries, so the two agree step for step
    fall_end = float(total - 1)
    if step <= rise_end:
        return _cosine(initial, peak, step / rise_end if rise_end > 0 else 1.0)
    return _cosine(peak, final, (step - rise_end) / (fall_end - rise_end) if fall_end > rise_end else 1.0)


def step_decay(step: int, peak: float, step_size: int, gamma: float = 0.1) -> float:
    """The step-decay rate of optimizer step ``step``: ``peak · gamma ** (step // step_size)`` (torch's StepLR)."""
    check_int(step, "step", 0)
    check_real(peak, "peak", 0.0)
    check_int(step_size, "step_size")
    check_real(gamma, "gamma", above=0.0, maximum=1.0)
    return peak * gamma ** (step // step_size)


def learning_rate(name: str, step: int, total: int, peak: float, warmup: int = 0, pct_start: float = 0.3,
                  final_ratio: float = 0.0, step_size: int = 1, gamma: float = 0.1) -> float:  # fmt: skip
    """The rate of step ``step`` for the policy ``name`` (``plateau``: the peak; ``Plateau`` scales it)."""
    if name in ("constant", "plateau"):
        _check_common(step, total, peak)
        return float(peak)
    if name == "warmup-cosine":
        return warmup_cosine(step, total, peak, warmup, final_ratio)
    if name == "one-cycle":
        return one_cycle(step, total, peak, pct_start, final_ratio)
    if name == "step":
        _check_common(step, total, peak)
        return step_decay(step, peak, step_size, gamma)
    raise ValueError(f"unknown schedule {name!r}; expected one of {', '.join(SCHEDULES)}")


class Plateau:
    """Multiply the rate by ``factor`` after more than ``patience`` epochs without a better score (higher is better).

    ``step(score)`` once per epoch returns the current scale (1, factor, factor², ...). As in torch's
    ReduceLROnPlateau: a score counts as better when it exceeds the best so far by the relative threshold 1e-4, and a
    drop that would lower the rate ``peak · scale`` by no more than ``eps`` (1e-8) is skipped, so a rate never sinks
    far below eps. ``peak`` is the rate the scale multiplies (the trainer's peak learning rate).
    """

    threshold = 1e-4
    eps = 1e-8

    def __init__(self, factor: float = 0.5, patience: int = 3, peak: float = 1.0):
        self.factor = check_real(factor, "factor", above=0.0, below=1.0)
        self.patience = check_int(patience, "patience", 0)
        self.peak = check_real(peak, "peak", above=0.0)
        self.best, self.bad_epochs, self.scale = -math.inf, 0, 1.0

    def step(self, score: float) -> float:
        if score > self.best * (1 + self.threshold):
            self.best, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
        if self.bad_epochs > self.patience:
            if self.peak * self.scale * (1 - self.factor) > self.eps:
                self.scale *= self.factor
            self.bad_epochs = 0
        return self.scale

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "scale": self.scale}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs, self.scale = state["best"], state["bad_epochs"], state["scale"]
