"""Batch normalisation over (N, H, W) per channel, training and eval, with running statistics like torch's.

Ioffe & Szegedy, "Batch Normalization", 2015, Algorithm 1, for a map x of shape (N, C, H, W) and M = N*H*W values
per channel:

    mean_c = (1/M) sum x,    var_c = (1/M) sum (x - mean_c)^2          (biased: this is what normalises)
    xhat   = (x - mean_c) / sqrt(var_c + eps),    y = gamma_c * xhat + beta_c

Running statistics, updated in place in training exactly as ``torch.nn.BatchNorm2d`` does (its docs give the rule;
note torch's momentum weighs the new value, the opposite of an exponential-decay "momentum"):

    running_mean <- (1 - momentum) * running_mean + momentum * mean_c
    running_var  <- (1 - momentum) * running_var  + momentum * var_c * M / (M - 1)   (unbiased, Bessel-corrected)

In eval the running statistics replace the batch's: ``y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``,
a fixed affine map of x.
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference._checks import (
    check_cache,
    check_finite,
    check_float_array,
    check_real,
    check_same_dtype,
)


def batch_norm(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> tuple[np.ndarray, dict]:
    """Batch norm of ``x`` (N, C, H, W) -> ``(y, cache)``; ``y`` has x's shape and dtype.

    ``gamma``, ``beta``, ``running_mean`` and ``running_var`` are (C,) arrays of x's dtype (float32/float64).
    In training the batch statistics normalise and the running ones are updated in place (so pass writable
    arrays you own); in eval the running ones normalise and nothing changes. ``cache`` holds what
    ``batch_norm_backward`` needs. Matches ``F.batch_norm(x, running_mean, running_var, gamma, beta, training,
    momentum, eps)``.

    ValueError for: bad shapes or dtypes; NaN/infinity in ``x`` or the running statistics (they would be averaged
    into the running statistics for good); a negative ``running_var``; ``momentum`` outside [0, 1]; ``eps <= 0``;
    and, as torch, a single value per channel (N*H*W == 1) in training, whose variance is undefined. An empty batch
    (N*H*W == 0) has no statistics: as in torch, the output is empty and the running statistics are left as they
    are, in training too (averaging the NaN mean of no value into them would spoil them for good).
    """
    check_float_array(x, "x", ndim=4, layout="(N, C, H, W)")
    c = x.shape[1]
    params = dict(gamma=gamma, beta=beta, running_mean=running_mean, running_var=running_var)
    for name, a in params.items():
        check_float_array(a, name, ndim=1, layout="(C,)")
        if a.shape != (c,):
            raise ValueError(f"{name} must have shape ({c},) for x with {c} channels, got {a.shape}")
    check_same_dtype(x=x, **params)
    check_finite(x, "x")
    check_finite(running_mean, "running_mean")
    check_finite(running_var, "running_var")
    if np.any(running_var < 0):
        raise ValueError(f"running_var must be >= 0, got min {running_var.min()}")
    momentum = check_real(momentum, "momentum", 0.0, 1.0)
    eps = check_real(eps, "eps", above=0.0)
    m = x.shape[0] * x.shape[2] * x.shape[3]
    if training and m == 1:
        raise ValueError(f"expected more than 1 value per channel when training, got input shape {x.shape}")

    c4 = (None, slice(None), None, None)  # index that broadcasts a (C,) array over (N, C, H, W)
    if training and m == 0:  # nothing to normalise and nothing learnt; the running statistics stay
        mean, var = np.zeros(c, x.dtype), np.ones(c, x.dtype)
        xhat, y = x - mean[c4], np.empty_like(x)
    elif training:
        mean = x.mean(axis=(0, 2, 3))
        xhat = x - mean[c4]  # centred now, scaled to xhat below
        y = np.square(xhat)  # y's buffer holds the squares until y is written
        var = y.mean(axis=(0, 2, 3))  # biased (1/M): the batch is normalised by its own spread
        running_mean *= 1 - momentum
        running_mean += momentum * mean
        running_var *= 1 - momentum
        running_var += momentum * var * (m / (m - 1))  # unbiased: an estimate of the population's variance
    else:
        mean, var = running_mean, running_var
        xhat, y = x - mean[c4], np.empty_like(x)
    inv_std = 1.0 / np.sqrt(var + eps)
    # In place, one pass each, on arrays no one else holds: this layer runs on every map of the U-Net.
    xhat *= inv_std[c4]
    np.multiply(xhat, gamma[c4], out=y)
    y += beta[c4]
    cache = dict(layer="batch_norm", xhat=xhat, gamma=gamma, inv_std=inv_std, training=training)
    return y, cache


def batch_norm_backward(dy: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``batch_norm`` -> ``(dx, dgamma, dbeta)``, shaped like x, (C,), (C,).

    ``dy`` has x's shape and dtype, ``cache`` is the one ``batch_norm`` returned. With sums over (N, H, W) per
    channel and M = N*H*W:

        dbeta  = sum dy,    dgamma = sum dy * xhat
        training:  dx = gamma * inv_std / M * (M * dy - sum dy - xhat * sum dy * xhat)
        eval:      dx = gamma * inv_std * dy          (the statistics are constants)

    The training form is Ioffe & Szegedy's chain rule through mean and variance (2015, Sec. 3) collapsed into one
    line, as in CS231n's assignment 2 (``batchnorm_backward_alt``): the two subtracted terms remove the parts of
    ``dy`` that shifting the mean and scaling the variance would undo.
    """
    check_cache(cache, "batch_norm")
    xhat, gamma, inv_std = cache["xhat"], cache["gamma"], cache["inv_std"]
    check_float_array(dy, "dy", ndim=4, layout="(N, C, H, W)")
    if dy.shape != xhat.shape:
        raise ValueError(f"dy must have the forward input's shape {xhat.shape}, got {dy.shape}")
    check_same_dtype(dy=dy, x=xhat)

    c4 = (None, slice(None), None, None)  # index that broadcasts a (C,) array over (N, C, H, W)
    scale = gamma * inv_std  # (C,)
    dbeta = dy.sum(axis=(0, 2, 3))
    dx = dy * xhat  # the buffer of dx holds dy * xhat until dgamma is summed
    dgamma = dx.sum(axis=(0, 2, 3))
    if not cache["training"]:
        return np.multiply(dy, scale[c4], out=dx), dgamma, dbeta
    m = dy.shape[0] * dy.shape[2] * dy.shape[3]
    if m == 0:  # an empty batch: nothing flows back
        return np.zeros_like(dy), dgamma, dbeta
    # dx = scale * (dy - xhat * dgamma / M - dbeta / M), the formula above; in place, one pass per operation.
    np.multiply(xhat, (dgamma / m)[c4], out=dx)
    np.subtract(dy, dx, out=dx)
    dx -= (dbeta / m)[c4]
    dx *= scale[c4]
    return dx, dgamma, dbeta
