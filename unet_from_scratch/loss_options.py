"""The combined loss's parameters and their defaults, stated once, in plain Python.

``LossOptions`` is what the fused kernel, the torch path (``nn.losses``), ``CombinedLoss`` and the trainer's config
all take; it checks its values when it is built, so a bad ``gamma`` fails where it is written. This module imports
neither torch nor triton: the trainer's config (and so ``--help``) can read the defaults without loading either.
The kernels never import the reference, so ``_real`` restates its rule for a real parameter: a finite Python or
NumPy number (or a 0-d tensor or array holding one), not bool.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


@dataclass(frozen=True)
class LossOptions:
    """The parameters of the combined loss c0·Dice + c1·focal + c2·weighted CE, with their defaults.

    alpha, gamma: the focal term -alpha (1 - p_t)^gamma log p_t (Lin et al. 2017; gamma >= 0).
    smooth: added to the Dice numerator and denominator (>= 0). include_background: Dice over class 0 too.
    coefficients: (c0, c1, c2), the weights of (Dice, focal, cross-entropy).

    Built once per call or module; the values are checked here (one-line ValueError) and stored as plain floats.
    """

    alpha: float = 0.25
    gamma: float = 2.0
    smooth: float = 1.0
    include_background: bool = False
    coefficients: tuple[float, float, float] = (0.4, 0.4, 0.2)

    def __post_init__(self):
        check_loss_parameters(self.alpha, self.gamma, self.smooth, self.coefficients)
        for name in ("alpha", "gamma", "smooth"):
            object.__setattr__(self, name, _real(getattr(self, name), name))
        object.__setattr__(self, "include_background", bool(self.include_background))
        object.__setattr__(self, "coefficients", tuple(_real(k, "coefficients") for k in self.coefficients))


def _real(value, name: str, minimum: float | None = None) -> float:
    """``value`` as a float if it is a finite real number (>= ``minimum`` if given), not bool; else ValueError."""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item") and not isinstance(value, numbers.Number):
        value = value.item()  # a 0-d tensor or array; a complex one then fails the Real test below
    try:  # numbers.Real covers Python and NumPy ints and floats; bool is an int, and refused
        number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    except OverflowError:  # a Python int beyond float range, e.g. 10**400
        number = math.inf
    if not math.isfinite(number) or (minimum is not None and number < minimum):
        bound = "" if minimum is None else f" >= {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return number


def check_loss_parameters(alpha=0.25, gamma=2.0, smooth=1.0, coefficients=(0.4, 0.4, 0.2)) -> None:
    """Raise ValueError (one line) unless alpha is finite, gamma and smooth finite and >= 0, and coefficients three
    finite numbers (dice, focal, cross-entropy)."""
    try:
        ok = len(coefficients) == 3
    except TypeError:
        ok = False
    if ok:
        try:
            for k in coefficients:
                _real(k, "coefficients")
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"coefficients must be three finite numbers (dice, focal, CE), got {coefficients!r}")
    _real(alpha, "alpha")
    _real(gamma, "gamma", 0.0)
    _real(smooth, "smooth", 0.0)
