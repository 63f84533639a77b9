"""The segmentation losses stated in torch: the oracles of tests/reference/test_losses.py and the baselines of
benchmarks/test_losses.py.

Each function is a direct statement of the formula of the project's loss contract (see
``unet_from_scratch.reference.losses``) in torch operations, differentiated by autograd — an implementation
independent of the NumPy one, whose gradients are written by hand. Arguments are torch tensors: logits
(N, C, H, W) float, target (N, H, W) int64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def one_hot(target: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """(N, H, W) class ids -> (N, C, H, W) one-hot in ``dtype``."""
    return F.one_hot(target, num_classes).permute(0, 3, 1, 2).to(dtype)


def torch_bce_with_logits(logits, target):
    """Mean binary cross-entropy of one-channel logits (N, 1, H, W) against targets in {0, 1}."""
    return F.binary_cross_entropy_with_logits(logits[:, 0], target.to(logits.dtype))


def torch_cross_entropy(logits, target, pixel_weights=None, class_weights=None, ignore_index=None):
    """-Σ w·log p_t / Σ w, w = pixel_weights·class_weights[t], 0 where target == ignore_index (NaN if Σ w = 0)."""
    counted = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    t = torch.where(counted, target, 0)
    weight = counted.to(logits.dtype)
    if pixel_weights is not None:
        weight = weight * pixel_weights
    if class_weights is not None:
        weight = weight * class_weights[t]
    log_p_t = F.log_softmax(logits, dim=1).gather(1, t[:, None])[:, 0]
    return -(weight * log_p_t).sum() / weight.sum()


def torch_focal_loss(logits, target, alpha=0.25, gamma=2.0):
    """Softmax focal loss with one scalar alpha, as kornia.losses.focal_loss (reduction="mean")."""
    log_p = F.log_softmax(logits, dim=1)
    focal = -alpha * (1 - log_p.exp()) ** gamma * log_p
    return (one_hot(target, logits.shape[1], logits.dtype) * focal).sum(dim=1).mean()


def torch_sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss(reduction="mean") on one-channel logits (N, 1, H, W), line for line."""
    inputs, targets = logits[:, 0], target.to(logits.dtype)
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    return loss.mean()


def torch_dice_loss(logits, target, smooth=1.0, include_background=False):
    """1 - mean over images and included classes of (2·Σ p·g + smooth) / (Σ p + Σ g + smooth)."""
    num_classes = logits.shape[1]
    p = F.softmax(logits, dim=1)
    g = one_hot(target, num_classes, logits.dtype)
    dice = (2 * (p * g).sum(dim=(2, 3)) + smooth) / (p.sum(dim=(2, 3)) + g.sum(dim=(2, 3)) + smooth)
    first = 0 if include_background or num_classes == 1 else 1
    return 1 - dice[:, first:].mean()


def torch_combined_loss(
    logits,
    target,
    pixel_weights=None,
    class_weights=None,
    alpha=0.25,
    gamma=2.0,
    smooth=1.0,
    include_background=False,
    coefficients=(0.4, 0.4, 0.2),
):
    """coefficients · (dice, focal, weighted cross-entropy)."""
    c_dice, c_focal, c_ce = coefficients
    return (
        c_dice * torch_dice_loss(logits, target, smooth, include_background)
        + c_focal * torch_focal_loss(logits, target, alpha, gamma)
        + c_ce * torch_cross_entropy(logits, target, pixel_weights, class_weights)
    )
