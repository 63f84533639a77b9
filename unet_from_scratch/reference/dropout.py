"""Dropout, forward and backward (Srivastava et al., "Dropout: a simple way to prevent neural networks from
overfitting", JMLR 2014; the U-Net paper puts it at the end of the contracting path, Sec. 3.1).

Inverted dropout, as torch does it: in training each value is kept with probability 1 - p and scaled by
1 / (1 - p), so the expectation is unchanged and evaluation needs no rescaling:

    y = x * m / (1 - p),    m ~ Bernoulli(1 - p) elementwise;    dx = dy * m / (1 - p)

In evaluation (or with p == 0) dropout is the identity, with an all-true mask. ``dropout`` returns ``(y, cache)``,
the cache holding the mask (``cache["mask"]``, the one thing the backward needs, and what a test injects to
compare with another implementation), p and the mode.
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference._checks import check_cache, check_float_array


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0 <= p < 1:
        raise ValueError(f"p must be a number in [0, 1), got {p!r}")
    return float(p)


def _scale(p: float, dtype) -> np.ndarray:
    return np.asarray(1.0 / (1.0 - p), dtype=dtype)


def dropout(x: np.ndarray, p: float, rng: np.random.Generator, training: bool = True):
    """Inverted dropout of ``x`` (any shape, float32/float64) with drop probability ``p`` in [0, 1).

    Returns ``(y, cache)``: ``y`` like ``x``; ``cache["mask"]`` a bool array of ``x``'s shape, True where a value
    was kept. ``rng`` (a numpy Generator) draws the mask; nothing is drawn in evaluation or when p == 0.
    """
    check_float_array(x, "x")
    p = _check_p(p)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    identity = not training or p == 0
    if identity:
        y, mask = x.copy(), np.ones(x.shape, dtype=bool)
    else:
        mask = rng.random(x.shape) >= p  # P(keep) = P(U >= p) = 1 - p
        y = x * mask * _scale(p, x.dtype)
    return y, {"layer": "dropout", "mask": mask, "p": p, "identity": identity}


def dropout_backward(dy: np.ndarray, cache: dict) -> np.ndarray:
    """Gradient of ``dropout``: ``dy * mask / (1 - p)`` in training, ``dy`` in evaluation.

    ``cache`` is the one ``dropout`` returned (its mask has ``dy``'s shape).
    """
    check_cache(cache, "dropout")
    check_float_array(dy, "dy")
    mask = cache["mask"]
    if mask.shape != dy.shape:
        raise ValueError(f"dy must have the output shape {mask.shape}, got {dy.shape}")
    if cache["identity"]:
        return dy.copy()
    return dy * mask * _scale(cache["p"], dy.dtype)
