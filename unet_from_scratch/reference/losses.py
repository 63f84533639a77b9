"""Segmentation losses and their gradients with respect to the logits, in NumPy.

Every loss takes the network's raw scores ``logits`` (N, C, H, W) float32/float64 and the target classes
``target`` (N, H, W) integer in [0, C), and returns ``(loss, dlogits)``: the scalar loss (a NumPy scalar of the
logits' dtype) and its gradient (N, C, H, W) in the same dtype — what backpropagation hands to the last layer.
Everything is computed in the logits' dtype. ``P = N·H·W`` is the number of pixels, ``p = softmax(logits)`` over
the class axis, ``t`` the target class of a pixel, ``p_t`` the probability given to it.

One identity carries every softmax gradient below. With ``p_k = exp(z_k) / Σ_j exp(z_j)``,

    ∂p_k / ∂z_j = p_k · (δ_kj - p_j),      so      ∂ log p_t / ∂z_j = δ_tj - p_j,

and a loss that depends on the probabilities through ``∂L/∂p`` has

    ∂L/∂z_j = p_j · (∂L/∂p_j - Σ_k p_k ∂L/∂p_k).

The semantics are the project's contract, shared with ``kernels/fused_loss.py`` and ``nn/losses.py``. As the
checking policy of ``reference/_checks.py`` has it, the logits and the weights must be finite, and a batch with no
pixel (N, H or W = 0) is refused: a mean over no pixel is 0/0. ``softmax`` and ``log_softmax`` refuse non-finite
values (one infinity makes a whole row NaN: ``softmax([inf, 0])`` is ``[nan, nan]``) and an empty class axis.
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference._checks import check_finite, check_float_array, check_int, check_int_array, check_real


def softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """softmax(x)_k = exp(x_k - m) / Σ_j exp(x_j - m) along ``axis``, m = max_j x_j (same shape and dtype).

    Subtracting the maximum changes nothing mathematically (it cancels between numerator and denominator) but
    keeps every exponent ≤ 0, so logits of ±1e4 neither overflow nor give 0/0. ``x`` must be finite and hold at
    least one class along ``axis``.
    """
    axis = _check_softmax_input(x, axis)
    return _softmax(x, axis)


def _check_softmax_input(x, axis) -> int:
    check_float_array(x, "x")
    check_int(axis, "axis", minimum=None)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis must lie in [{-x.ndim}, {x.ndim}) for x of shape {x.shape}, got {axis}")
    if x.shape[axis] == 0:
        raise ValueError(f"x must hold at least one class along axis {axis}, got shape {x.shape}")
    check_finite(x, "x")
    return int(axis)


def _softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """log softmax(x)_k = (x_k - m) - log Σ_j exp(x_j - m) along ``axis``, m = max_j x_j (same shape and dtype).

    Never ``log(softmax(x))``: a probability that underflows to 0 would give -inf, where this gives the exact,
    finite value (e.g. -2e4 for logits (1e4, -1e4)). The sum is ≥ 1 (its largest term is exp(0)). ``x`` must be
    finite and hold at least one class along ``axis``.
    """
    axis = _check_softmax_input(x, axis)
    return _log_softmax(x, axis)


def _log_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp of -|x| only."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), exact for large |x| of either sign."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _check_logits_target(logits, target, ignore_index=None, num_labels=None) -> tuple[int, int, int, int]:
    """Validate the contract's inputs (labels in [0, num_labels), by default [0, C)); return (N, C, H, W)."""
    check_float_array(logits, "logits", 4, "(N, C, H, W)")
    check_int_array(target, "target", 3, "(N, H, W)")
    n, c, h, w = logits.shape
    if target.shape != (n, h, w):
        raise ValueError(
            f"target must have shape (N, H, W) = {(n, h, w)} to match logits {logits.shape}, got {target.shape}"
        )
    if n * h * w == 0 or c == 0:
        raise ValueError(f"logits must hold at least one pixel and one class, got shape {logits.shape}")
    check_finite(logits, "logits")
    num_labels = c if num_labels is None else num_labels
    labels = target if ignore_index is None else target[target != ignore_index]
    if labels.size and (labels.min() < 0 or labels.max() >= num_labels):
        ignored = "" if ignore_index is None else f" (or ignore_index={ignore_index})"
        raise ValueError(
            f"target labels must lie in [0, {num_labels}){ignored}, got values in [{labels.min()}, {labels.max()}]"
        )
    return n, c, h, w


def _check_binary(logits, target) -> None:
    """Validate the one-channel binary inputs: logits (N, 1, H, W), target (N, H, W) in {0, 1}."""
    check_float_array(logits, "logits", 4, "(N, 1, H, W)")
    if logits.shape[1] != 1:
        raise ValueError(f"logits of a binary loss must have one channel (N, 1, H, W), got shape {logits.shape}")
    _check_logits_target(logits, target, num_labels=2)


def _check_weights(weights, name: str, shape: tuple, dtype) -> np.ndarray | None:
    """A float array of ``shape``, finite and non-negative, cast to ``dtype``; None stays None."""
    if weights is None:
        return None
    check_float_array(weights, name)
    if weights.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {weights.shape}")
    check_finite(weights, name)
    if weights.size and weights.min() < 0:
        raise ValueError(f"{name} must be non-negative, got a minimum of {weights.min()}")
    return weights.astype(dtype, copy=False)


def _check_scalar(value, name: str, minimum: float | None = None) -> float:
    """A finite real number (≥ ``minimum`` if given), as a Python float so that it keeps float32 arrays float32."""
    return check_real(value, name, minimum)


def _one_hot(target: np.ndarray, num_classes: int, dtype) -> np.ndarray:
    """g[n, c, h, w] = 1 where target[n, h, w] == c, else 0: (N, C, H, W) in ``dtype``."""
    return (target[:, None] == np.arange(num_classes).reshape(1, -1, 1, 1)).astype(dtype)


def _gather(x: np.ndarray, target: np.ndarray) -> np.ndarray:
    """x[n, target[n, h, w], h, w]: (N, C, H, W) -> (N, H, W)."""
    return np.take_along_axis(x, target[:, None].astype(np.intp), axis=1)[:, 0]


def bce_with_logits(logits: np.ndarray, target: np.ndarray):
    """Binary cross-entropy on one-channel logits, mean over pixels.

    Args:
        logits: (N, 1, H, W) float, the score z of the foreground.
        target: (N, H, W) integer (or bool) in {0, 1}.

    Returns:
        loss = mean_x [ -t·log σ(z) - (1 - t)·log(1 - σ(z)) ] = mean_x [ softplus(z) - t·z ],
        dlogits = (σ(z) - t) / P, shaped like ``logits``.

    Why: log σ(z) = -softplus(-z) and log(1 - σ(z)) = -softplus(z), and softplus(-z) = softplus(z) - z, which turns
    the loss into softplus(z) - t·z. Its derivative is σ(z) - t (softplus' = σ): the prediction minus the truth,
    divided by P for the mean. As torch.nn.functional.binary_cross_entropy_with_logits.
    """
    _check_binary(logits, target)
    z = logits[:, 0]
    t = target.astype(logits.dtype)
    pixels = z.size
    loss = (_softplus(z) - t * z).sum() / pixels
    dlogits = ((_sigmoid(z) - t) / pixels)[:, None]
    return logits.dtype.type(loss), dlogits


def cross_entropy(logits, target, pixel_weights=None, class_weights=None, ignore_index=None):
    """Weighted cross-entropy: the U-Net paper's energy, normalised by the sum of the weights.

    Args:
        logits: (N, C, H, W) float32/float64.
        target: (N, H, W) integer in [0, C), or ``ignore_index``.
        pixel_weights: optional (N, H, W) non-negative float, e.g. the paper's weight map.
        class_weights: optional (C,) non-negative float, one weight per class.
        ignore_index: optional target value whose pixels get weight 0.

    Returns:
        loss = -Σ_x w(x)·log p_t(x) / Σ_x w(x), with w(x) = pixel_weights[x]·class_weights[t(x)] (a missing factor
        is 1; w = 0 where the target is ``ignore_index``), and dlogits (N, C, H, W).

    Ronneberger et al. 2015 (arXiv 1505.04597) train on E = Σ_x w(x)·log p_t(x) (to be maximised). With
    ``class_weights`` alone this equals ``torch.nn.functional.cross_entropy(weight=class_weights)``, which also
    divides by the weight sum. If every weight is 0 (every pixel ignored) the loss and the gradient are 0, where
    torch returns NaN.

    Gradient: each pixel contributes -(w(x)/W)·log p_t(x), W = Σ w, and ∂ log p_t / ∂z_j = δ_tj - p_j, so
    dlogits[x, j] = (w(x)/W)·(p_j(x) - δ_tj): push the probabilities down, the right class's up, in proportion to
    the pixel's weight.
    """
    n, c, h, w = _check_logits_target(logits, target, ignore_index)
    dtype = logits.dtype
    pixel_weights = _check_weights(pixel_weights, "pixel_weights", (n, h, w), dtype)
    class_weights = _check_weights(class_weights, "class_weights", (c,), dtype)
    counted = np.ones(target.shape, bool) if ignore_index is None else target != ignore_index
    t = np.where(counted, target, 0)  # an ignored pixel points at class 0; its weight is 0
    weight = counted.astype(dtype)
    if pixel_weights is not None:
        weight = weight * pixel_weights
    if class_weights is not None:
        weight = weight * class_weights[t]
    total = weight.sum()
    if total == 0:
        return dtype.type(0), np.zeros_like(logits)
    log_p = _log_softmax(logits)
    loss = -(weight * _gather(log_p, t)).sum() / total
    share = (weight / total)[:, None]  # (N, 1, H, W)
    dlogits = share * (np.exp(log_p) - _one_hot(t, c, dtype))
    return dtype.type(loss), dlogits


def focal_loss(logits, target, alpha: float = 0.25, gamma: float = 2.0):
    """Multi-class (softmax) focal loss: mean_x [ -alpha·(1 - p_t)^gamma·log p_t ].

    Lin et al. 2017 (arXiv 1708.02002): the factor (1 - p_t)^gamma shrinks the loss of pixels already classified
    well (p_t near 1), so the many easy background pixels stop drowning out the few hard ones. ``alpha`` is one
    scalar for every class, as kornia's ``focal_loss``; gamma = 0, alpha = 1 is the plain cross-entropy.

    Args:
        logits: (N, C, H, W) float; target: (N, H, W) integer in [0, C); alpha: finite; gamma: ≥ 0.

    Returns:
        (loss, dlogits (N, C, H, W)).

    Gradient. Write q = 1 - p_t. One pixel's loss is L = -alpha·q^gamma·log p_t, a function of p_t alone:

        dL/dp_t = alpha·gamma·q^(gamma-1)·log p_t - alpha·q^gamma / p_t,

    and ∂p_t/∂z_j = p_t·(δ_tj - p_j), so

        ∂L/∂z_j = G·(δ_tj - p_j),   G = alpha·q^gamma·(gamma·p_t·log p_t / q - 1),

    divided by P for the mean. As p_t → 1, p_t·log p_t / q → -1, which is used where q = 0 (so 0 < gamma < 1 gives
    no 0·inf); q = -expm1(log p_t) avoids the cancellation of 1 - p_t when p_t is close to 1.
    """
    n, c, h, w = _check_logits_target(logits, target)
    alpha = _check_scalar(alpha, "alpha")
    gamma = _check_scalar(gamma, "gamma", minimum=0.0)
    pixels = n * h * w
    log_p = _log_softmax(logits)
    p = np.exp(log_p)
    log_p_t = _gather(log_p, target)
    p_t = np.exp(log_p_t)
    q = -np.expm1(log_p_t)
    modulation = q**gamma
    loss = -alpha * (modulation * log_p_t).sum() / pixels
    ratio = np.where(q > 0, p_t * log_p_t / np.where(q > 0, q, 1), -1)
    g = alpha * modulation * (gamma * ratio - 1)
    dlogits = (g / pixels)[:, None] * (_one_hot(target, c, logits.dtype) - p)
    return logits.dtype.type(loss), dlogits


def sigmoid_focal_loss(logits, target, alpha: float = 0.25, gamma: float = 2.0):
    """Binary focal loss on one-channel logits, with the semantics of torchvision.ops.sigmoid_focal_loss (mean).

    Per pixel: p_t = σ(z) if t = 1 else 1 - σ(z); alpha_t = alpha if t = 1 else 1 - alpha (alpha < 0: alpha_t = 1);
    L = alpha_t·(1 - p_t)^gamma·BCE(z, t), with BCE = -log p_t; the loss is the mean over pixels.

    Args:
        logits: (N, 1, H, W) float; target: (N, H, W) integer in {0, 1}; alpha: finite; gamma: ≥ 0.

    Returns:
        (loss, dlogits (N, 1, H, W)).

    Gradient. Let s = 2t - 1 (+1 or -1) and u = s·z: then p_t = σ(u), q = 1 - p_t = σ(-u), BCE = softplus(-u),
    so the loss is a function of u alone. With dσ(u)/du = σ(u)σ(-u) = p_t·q and d softplus(-u)/du = -q:

        dL/du = alpha_t·[gamma·q^(gamma-1)·(-p_t·q)·BCE + q^gamma·(-q)]
              = -alpha_t·q^gamma·(gamma·p_t·BCE + q),

    and dL/dz = s·dL/du, divided by P. No negative power of q is left, so every gamma ≥ 0 is safe at q = 0.
    """
    _check_binary(logits, target)
    alpha = _check_scalar(alpha, "alpha")
    gamma = _check_scalar(gamma, "gamma", minimum=0.0)
    dtype = logits.dtype
    t = target.astype(dtype)
    pixels = t.size
    sign = 2 * t - 1
    u = sign * logits[:, 0]
    p_t, q = _sigmoid(u), _sigmoid(-u)
    bce = _softplus(-u)
    alpha_t = alpha * t + (1 - alpha) * (1 - t) if alpha >= 0 else np.ones_like(t)
    modulation = q**gamma
    loss = (alpha_t * modulation * bce).sum() / pixels
    d_u = -alpha_t * modulation * (gamma * p_t * bce + q)
    dlogits = (sign * d_u / pixels)[:, None]
    return dtype.type(loss), dlogits


def dice_loss(logits, target, smooth: float = 1.0, include_background: bool = False):
    """Soft Dice loss on the softmax probabilities, per image and class, averaged.

    With g = one_hot(t):  I[n,c] = Σ_hw p·g,  S[n,c] = Σ_hw p + Σ_hw g,  dice[n,c] = (2·I + smooth) / (S + smooth),
    loss = 1 - mean of dice[n,c] over the images n and the included classes (c ≥ 1 unless ``include_background``;
    with C == 1 the one class). Milletari et al. 2016 (V-Net, arXiv 1606.04797) in the squared-free form;
    ``smooth`` keeps a class absent from both prediction and target at dice 1 instead of 0/0 (smooth = 0 allowed,
    at the user's risk there).

    Args:
        logits: (N, C, H, W) float; target: (N, H, W) integer in [0, C); smooth: ≥ 0.

    Returns:
        (loss, dlogits (N, C, H, W)).

    Gradient. For one included (n, c) and a pixel x, ∂I/∂p = g(x) and ∂S/∂p = 1, so by the quotient rule

        ∂dice/∂p(x) = (2·g(x)·(S + smooth) - (2·I + smooth)) / (S + smooth)² = (2·g(x) - dice) / (S + smooth),

    and ∂loss/∂p = -(2·g - dice) / ((S + smooth)·N·K) for K included classes (0 for the others). The softmax
    then takes it to the logits: dz_j = p_j·(dp_j - Σ_k p_k·dp_k).
    """
    n, c, h, w = _check_logits_target(logits, target)
    smooth = _check_scalar(smooth, "smooth", minimum=0.0)
    p = _softmax(logits)
    g = _one_hot(target, c, logits.dtype)
    intersection = (p * g).sum(axis=(2, 3))  # (N, C)
    denominator = p.sum(axis=(2, 3)) + g.sum(axis=(2, 3)) + smooth  # (N, C)
    dice = (2 * intersection + smooth) / denominator
    included = np.arange(c) >= (0 if include_background or c == 1 else 1)
    loss = 1 - dice[:, included].mean()
    scale = included / (denominator * (n * int(included.sum())))  # (N, C), 0 for excluded classes
    dp = -(2 * g - dice[:, :, None, None]) * scale[:, :, None, None]
    dlogits = p * (dp - (p * dp).sum(axis=1, keepdims=True))
    return logits.dtype.type(loss), dlogits


def combined_loss(
    logits,
    target,
    pixel_weights=None,
    class_weights=None,
    alpha: float = 0.25,
    gamma: float = 2.0,
    smooth: float = 1.0,
    include_background: bool = False,
    coefficients=(0.4, 0.4, 0.2),
):
    """c0·dice_loss + c1·focal_loss + c2·cross_entropy, with (c0, c1, c2) = ``coefficients``.

    Dice rewards overlap whatever the class sizes, focal concentrates on the hard pixels, and the weighted
    cross-entropy (``pixel_weights``: the paper's weight map; ``class_weights``) makes the gaps between touching
    cells count. The gradient of a weighted sum is the same weighted sum of the gradients.

    Args:
        logits (N, C, H, W) float, target (N, H, W) integer, and the arguments of the three losses;
        coefficients: three finite numbers (dice, focal, weighted CE).

    Returns:
        (loss, dlogits (N, C, H, W)).
    """
    if np.shape(coefficients) != (3,):
        raise ValueError(f"coefficients must be three numbers (dice, focal, cross-entropy), got {coefficients!r}")
    coefficients = [_check_scalar(k, "coefficients") for k in coefficients]
    terms = (
        lambda: dice_loss(logits, target, smooth, include_background),
        lambda: focal_loss(logits, target, alpha, gamma),
        lambda: cross_entropy(logits, target, pixel_weights, class_weights),
    )
    # A term of coefficient 0 is not computed (a training step's loss, e.g. the quick preset's focal term): its
    # finite value and gradient would be multiplied by 0. Each term checks its own arguments, so the arguments of
    # a term left out (focal's alpha and gamma here) go unchecked.
    parts = [(k, term()) for k, term in zip(coefficients, terms) if k != 0] or [(0.0, terms[0]())]
    loss = sum(k * part_loss for k, (part_loss, _) in parts)
    dlogits = sum(k * part_grad for k, (_, part_grad) in parts)
    return logits.dtype.type(loss), dlogits
