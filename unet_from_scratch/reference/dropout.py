"""Dropout, forward and backward (Srivastava et al., "Dropout: a simple way to prevent neural networks from
overfitting", JMLR 2014; the U-Net paper puts it at the end of the contracting path, Sec. 3.1).

Inverted dropout, as torch does it: in training each value is kept with probability 1 - p and scaled by
1 / (1 - p), so the expectation is unchanged and evaluation needs no rescaling:

    y = x * m / (1 - p),    m ~ Bernoulli(1 - p) elementwise;    dx = dy * m / (1 - p)

In evaluation (or with p == 0) dropout is the identity, with an all-true mask.
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference._checks import check_float_array


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)) or not 0 <= p < 1:
        raise ValueError(f"p must be a number in [0, 1), got {p!r}")
    return float(p)


def _scale(p: float, dtype) -> np.ndarray:
    return np.asarray(1.0 / (1.0 - p), dtype=dtype)


def dropout(x: np.ndarray, p: float, rng: np.random.Generator, training: bool = True):
    """Inverted dropout of ``x`` (any shape, float32/float64) with drop probability ``p`` in [0, 1).

    Returns ``(y, mask)``: ``y`` like ``x``, ``mask`` a bool array of ``x``'s shape, True where a value was
    kept. ``rng`` (a numpy Generator) draws the mask; nothing is drawn in evaluation or when p == 0.
    """
    check_float_array(x, "x")
    p = _check_p(p)
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if not training or p == 0:
        return x.copy(), np.ones(x.shape, dtype=bool)
    mask = rng.random(x.shape) >= p  # P(keep) = P(U >= p) = 1 - p
    return x * mask * _scale(p, x.dtype), mask


def dropout_backward(dy: np.ndarray, mask: np.ndarray, p: float, training: bool = True) -> np.ndarray:
    """Gradient of ``dropout``: ``dy * mask / (1 - p)`` in training, ``dy`` in evaluation.

    ``mask`` is the one ``dropout`` returned (bool, ``dy``'s shape); ``p`` and ``training`` as given to it.
    """
    check_float_array(dy, "dy")
    p = _check_p(p)
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise ValueError(f"mask must be a bool array (from dropout), got {getattr(mask, 'dtype', type(mask).__name__)}")
    if mask.shape != dy.shape:
        raise ValueError(f"mask must have dy's shape {dy.shape}, got {mask.shape}")
    if not training or p == 0:
        return dy.copy()
    return dy * mask * _scale(p, dy.dtype)
