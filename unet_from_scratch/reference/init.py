"""Weight initialisation: He normal (the paper's choice) and Glorot uniform (for comparison).

He et al. ("Delving deep into rectifiers", 2015, Sec. 2.2) keep the variance of activations constant through a
stack of ReLU layers: a ReLU halves the second moment, so each layer's weights need Var[w] = 2 / fan_in, where
fan_in is the number of inputs one output sums (C_in * kh * kw for a convolution). Ronneberger et al. (2015,
Sec. 3) initialise the U-Net this way, "a Gaussian distribution with a standard deviation of sqrt(2/N)".

``fans(shape)`` follows torch (``torch.nn.init._calculate_fan_in_and_fan_out``): for a weight of shape
(C_out, C_in, *kernel), fan_in = C_in * prod(kernel) and fan_out = C_out * prod(kernel); a (out, in) matrix
is the 1x1 case. It reads only the shape, so it is right for a convolution and Glorot's rule uses it.

``fan_in(kind, shape, stride, groups)`` is the He-normal fan of a layer's weight, the one rule every model of the
package is initialised by (``nn.init`` for the torch modules, ``reference.unet.unet_parameters`` for the U-Net's
spec). The paper's N, "the number of incoming nodes of one neuron", per layer kind:

- ``"conv"``, weight (C_out, C_in / groups, kh, kw): an output pixel sums C_in / groups channels over a kh x kw
  window, n = (C_in / groups) kh kw, torch's fan_in too (``fans(shape)[0]``).
- ``"conv_transpose"``, weight (C_in, C_out / groups, kh, kw): each input pixel stamps its kernel onto the output
  at stride s, so an output pixel receives kh kw / (sh sw) taps of each of its C_in / groups input channels (on
  average; exactly, when the stride divides the kernel). For the U-Net's 2x2, stride-2 up-convolution that is
  n = C_in: every output pixel is one input pixel's channels times one kernel tap. Torch's fan_in for this weight
  (``weight.shape[1] * kh * kw`` = C_out kh kw, 4 C_out for the up-convolution) counts the inputs of a neuron of
  the adjoint convolution instead, and would make the up-convolutions' std sqrt(2) times too small here.
"""

from __future__ import annotations

import math

import numpy as np

from unet_from_scratch.reference._checks import FLOAT_DTYPES, is_int

# Standard deviation of a standard normal truncated to [-2, 2]:
# sqrt(1 - 2 * 2 * phi(2) / (Phi(2) - Phi(-2))) = sqrt(1 - 0.21596 / 0.95450) = 0.87962566...,
# with phi and Phi the standard normal pdf and cdf (the moments of a truncated normal, e.g. Johnson, Kotz &
# Balakrishnan, "Continuous Univariate Distributions", vol. 1, Sec. 10.1). Dividing by it restores the
# requested std after the cut; Keras' "truncated_normal" variance scaling uses the same constant.
TRUNCATED_STD = 0.87962566103423978


def _check_shape(shape) -> tuple[int, ...]:
    ok = isinstance(shape, (tuple, list)) and all(is_int(d) and d >= 0 for d in shape)
    if not ok:
        raise ValueError(f"shape must be a tuple of non-negative ints, got {shape!r}")
    return tuple(int(d) for d in shape)


def _check_common(rng, dtype) -> np.dtype:
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    return np.dtype(dtype)


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of ``shape`` (C_out, C_in, *kernel), computed as torch does."""
    dims = _check_shape(shape)
    if len(dims) < 2:
        raise ValueError(f"fans need a weight shape of at least 2 dimensions (C_out, C_in, ...), got {dims}")
    receptive = math.prod(dims[2:])
    return dims[1] * receptive, dims[0] * receptive


FAN_KINDS = ("conv", "conv_transpose")


def fan_in(kind: str, shape, stride=1, groups: int = 1) -> int | float:
    """The He-normal fan of a ``kind`` layer's weight of ``shape``: its incoming connections per output neuron.

    ``kind`` is "conv" (weight (C_out, C_in / groups, *kernel)) or "conv_transpose" (weight
    (C_in, C_out / groups, *kernel)); ``stride`` (an int or one per kernel dimension) and ``groups`` are the
    layer's, and only a transposed convolution's fan depends on them. The rule and why is in the module
    docstring. An int where the count is whole (always for "conv"; for "conv_transpose" when the strides divide
    the kernel), else the average count as a float.
    """
    if kind not in FAN_KINDS:
        raise ValueError(f"kind must be one of {FAN_KINDS}, got {kind!r}")
    if kind == "conv":
        return fans(shape)[0]
    dims = _check_shape(shape)
    if len(dims) < 3:
        raise ValueError(f"a conv_transpose weight has shape (C_in, C_out / groups, *kernel), got {dims}")
    kernel = dims[2:]
    strides = (stride,) * len(kernel) if is_int(stride) else tuple(stride)
    if len(strides) != len(kernel) or not all(is_int(s) and s >= 1 for s in strides):
        raise ValueError(f"stride must be a positive int or {len(kernel)} positive ints, got {stride!r}")
    if not (is_int(groups) and groups >= 1 and dims[0] % groups == 0):
        raise ValueError(f"groups must be a positive int dividing C_in = {dims[0]}, got {groups!r}")
    taps, step = dims[0] // groups * math.prod(kernel), math.prod(int(s) for s in strides)
    return taps // step if taps % step == 0 else taps / step


def he_normal(shape, rng: np.random.Generator, fan_in=None, truncated: bool = False, dtype=np.float32) -> np.ndarray:
    """He-normal weights of ``shape``: mean 0, standard deviation sqrt(2 / fan_in), in ``dtype``.

    ``fan_in`` defaults to ``fans(shape)[0]`` (C_in * kh * kw for a convolution weight) and must be given for a
    shape of fewer than 2 dimensions. ``truncated=True`` draws a normal cut at 2 of its standard deviations,
    redrawing values beyond, with its scale std' = sqrt(2 / fan_in) / ``TRUNCATED_STD`` so that the cut
    distribution still has standard deviation sqrt(2 / fan_in); no value lies beyond 2 * std'.
    Same distribution as ``torch.nn.init.kaiming_normal_(w, mode="fan_in", nonlinearity="relu")`` when not
    truncated.
    """
    dims = _check_shape(shape)
    dtype = _check_common(rng, dtype)
    if fan_in is None:
        fan_in = fans(dims)[0]
    if isinstance(fan_in, bool) or not isinstance(fan_in, (int, float, np.integer, np.floating)):
        raise ValueError(f"fan_in must be a positive number, got {fan_in!r}")
    if not (math.isfinite(fan_in) and fan_in > 0):
        raise ValueError(f"fan_in must be a positive number, got {fan_in!r}")
    std = math.sqrt(2.0 / fan_in)
    z = rng.standard_normal(dims)
    if truncated:
        outside = np.abs(z) > 2.0
        while outside.any():  # about 4.6% land outside each round
            z[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(z) > 2.0
        std /= TRUNCATED_STD
    return (z * std).astype(dtype)


def glorot_uniform(shape, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """Glorot/Xavier-uniform weights of ``shape``: U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).

    Glorot & Bengio ("Understanding the difficulty of training deep feedforward neural networks", 2010, eq. 16)
    keep the variance, 2 / (fan_in + fan_out), constant both forward and backward for a linear (or tanh)
    layer; with ReLU it is about half what He's analysis asks for. Same as ``torch.nn.init.xavier_uniform_``.
    """
    dims = _check_shape(shape)
    dtype = _check_common(rng, dtype)
    fan_in, fan_out = fans(dims)
    if fan_in + fan_out == 0:
        raise ValueError(f"glorot_uniform needs a non-empty weight shape, got {dims}")
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=dims).astype(dtype)
