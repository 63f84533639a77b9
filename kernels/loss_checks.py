"""The combined loss's input checks, in torch alone: shared by the Triton kernel and the torch fallback.

This module imports no triton, so ``unet_from_scratch.nn.losses`` can use it on machines without Triton, and
both paths reject exactly the same calls with exactly the same one-line messages. ``LossOptions`` states the loss's
parameters and their defaults once, for the kernel, the torch path, the module and the trainer's config, and checks
them when it is built (``check_loss_parameters``), so a bad ``gamma`` fails where it is written.

The checking policy is the reference's (``reference/_checks.py``): shapes, dtypes and parameters always; the data
values (finite logits and weights, labels in range) too, since a loss hides a bad value inside one scalar, unless
``validate=False``; and a batch without pixels (N, H or W = 0) or without classes is refused, as a mean over no
pixel is 0/0. The parameters are ``LossOptions``' business (``unet_from_scratch/loss_options.py``, plain Python
like ``sizes.py``).
"""

from __future__ import annotations

import torch

from unet_from_scratch.loss_options import LossOptions, check_loss_parameters

__all__ = ["FLOAT_DTYPES", "FUSED_DTYPES", "FUSED_MAX_CLASSES", "INT_DTYPES", "LossOptions", "check_loss_inputs",
           "check_loss_parameters"]  # fmt: skip

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# What the fused kernel takes (it accumulates in float32 and pads the classes to a power of two): stated here, in
# torch alone, so that choosing a backend needs no Triton import.
FUSED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
FUSED_MAX_CLASSES = 16


def check_loss_inputs(
    logits,
    target,
    pixel_weights=None,
    class_weights=None,
    validate=True,
    *,
    dtypes=FLOAT_DTYPES,
    max_classes: int | None = None,
) -> None:
    """Raise ValueError (one line) unless the tensors are a valid combined-loss call (``LossOptions`` checks the rest).

    logits (N, C, H, W) of one of ``dtypes`` with C <= ``max_classes``; target (N, H, W) integer; pixel_weights
    (N, H, W) float or None; class_weights (C,) float or None; all on one device. ``validate=False`` skips the value
    checks (finite logits and weights, labels in [0, C)), which read every input once more and synchronise with the
    device; shapes and dtypes are always checked.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 4:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a 4-D tensor (N, C, H, W), got {shape}")
    if logits.dtype not in dtypes:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise ValueError(f"logits must be one of {allowed}, got {logits.dtype}")
    n, c, h, w = logits.shape
    if n * h * w == 0 or c == 0:
        raise ValueError(f"logits must hold at least one pixel and one class, got shape {tuple(logits.shape)}")
    if max_classes is not None and c > max_classes:
        raise ValueError(f"the fused loss handles 1 to {max_classes} classes, got C={c}")
    if not isinstance(target, torch.Tensor) or target.dtype not in INT_DTYPES:
        got = target.dtype if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target must be an integer tensor, got {got}")
    if tuple(target.shape) != (n, h, w):
        raise ValueError(f"target must have shape (N, H, W) = {(n, h, w)}, got {tuple(target.shape)}")
    if pixel_weights is not None:
        if not isinstance(pixel_weights, torch.Tensor) or not pixel_weights.is_floating_point():
            raise ValueError("pixel_weights must be a float tensor of shape (N, H, W)")
        if tuple(pixel_weights.shape) != (n, h, w):
            raise ValueError(f"pixel_weights must have shape (N, H, W) = {(n, h, w)}, got {tuple(pixel_weights.shape)}")
    if class_weights is not None:
        if not isinstance(class_weights, torch.Tensor) or not class_weights.is_floating_point():
            raise ValueError("class_weights must be a float tensor of shape (C,)")
        if tuple(class_weights.shape) != (c,):
            raise ValueError(f"class_weights must have shape (C,) = ({c},), got {tuple(class_weights.shape)}")
    devices = {x.device for x in (logits, target, pixel_weights, class_weights) if x is not None}
    if len(devices) > 1:
        raise ValueError(f"logits, target and weights must be on one device, got {sorted(map(str, devices))}")
    if not validate:
        return
    checks = [
        ("logits must be finite, got NaN or infinite value(s)", ~torch.isfinite(logits).all()),
        (f"target labels must be in [0, {c}), got values outside", ((target < 0) | (target >= c)).any()),
    ]
    for name, weights in (("pixel_weights", pixel_weights), ("class_weights", class_weights)):
        if weights is not None:
            checks.append((f"{name} must be finite and >= 0", ~(torch.isfinite(weights) & (weights >= 0)).all()))
    failed = torch.stack([bad for _, bad in checks]).tolist()  # one host synchronisation for all of them
    for (message, _), bad in zip(checks, failed):
        if bad:
            raise ValueError(message)
