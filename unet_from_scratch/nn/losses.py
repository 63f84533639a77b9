"""The segmentation loss as a torch module: Dice + focal + weighted cross-entropy, Triton on CUDA, torch elsewhere.

``combined_loss_torch`` states the loss in plain torch ops (autograd does the backward): the fallback wherever
the Triton kernel cannot run, and the eager baseline the kernel is benchmarked against. ``CombinedLoss`` wraps
either path in an ``nn.Module``, so the same training code runs on a laptop and on a GPU.

The semantics are those of ``reference.losses.combined_loss``, with p = softmax(logits) over the classes,
t(x) the target class at pixel x and P = N·H·W pixels:

    loss  = c0 · Dice + c1 · Focal + c2 · CE
    CE    = -Σ_x w(x) log p_t(x) / Σ_x w(x),  w(x) = pixel_weights[x] · class_weights[t(x)]  (0 when Σw = 0)
            — the U-Net paper's weighted energy (Ronneberger et al. 2015), normalised by the weight sum
    Focal = mean_x[ -alpha (1 - p_t)^gamma log p_t ]  — Lin et al. 2017, softmax form, one alpha for every class
    Dice  = 1 - mean_{n, c} (2 Σ_hw p g + smooth) / (Σ_hw p + Σ_hw g + smooth)  — Milletari et al. 2016, soft Dice
            over images n and classes c >= 1 (every class if include_background, the one class if C == 1)
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from unet_from_scratch.kernels import HAS_TRITON
from unet_from_scratch.kernels.loss_checks import FUSED_DTYPES, FUSED_MAX_CLASSES, LossOptions, check_loss_inputs

BACKENDS = ("auto", "triton", "torch")


def combined_loss_torch(
    logits: torch.Tensor,
    target: torch.Tensor,
    pixel_weights: torch.Tensor | None = None,
    class_weights: torch.Tensor | None = None,
    *,
    validate: bool = True,
    **options,
) -> torch.Tensor:
    """c0·Dice + c1·focal + c2·weighted cross-entropy of ``logits`` in plain torch ops (formulas: module docstring).

    logits: (N, C, H, W) float, any layout. target: (N, H, W) integer labels in [0, C). pixel_weights: (N, H, W)
    float >= 0 or None. class_weights: (C,) float >= 0 or None. ``options``: the fields of
    ``kernels.loss_checks.LossOptions`` (alpha, gamma, smooth, include_background, coefficients = (dice, focal,
    cross-entropy)), by keyword, with its defaults: the same parameters as the fused kernel's, stated once.
    Returns a scalar computed in float64 for float64 logits and in float32 otherwise (float16/bfloat16 logits are
    upcast, as the fused kernel accumulates in float32). Differentiable in ``logits``; the weights are constants.
    Raises ValueError for bad input (``LossOptions``, ``check_loss_inputs``; ``validate=False`` skips the value
    checks).
    """
    o = LossOptions(**options)
    check_loss_inputs(logits, target, pixel_weights, class_weights, validate)
    alpha, gamma, smooth = o.alpha, o.gamma, o.smooth
    c_dice, c_focal, c_ce = o.coefficients
    n_classes = logits.shape[1]
    compute = torch.float64 if logits.dtype == torch.float64 else torch.float32
    log_p = F.log_softmax(logits.to(compute), dim=1)  # (N, C, H, W)
    p = log_p.exp()
    labels = target.long()
    log_p_t = log_p.gather(1, labels.unsqueeze(1)).squeeze(1)  # (N, H, W)
    p_t = log_p_t.exp()

    weight = torch.ones_like(log_p_t) if pixel_weights is None else pixel_weights.to(compute)
    if class_weights is not None:
        weight = weight * class_weights.to(compute)[labels]
    weight_sum = weight.sum()
    # Σw = 0 (everything weighted out) gives 0 rather than torch's 0/0: the numerator is 0 too.
    cross_entropy = -(weight * log_p_t).sum() / torch.where(weight_sum > 0, weight_sum, torch.ones_like(weight_sum))

    # (1 - p_t)^gamma through a guard at p_t = 1: there u^gamma has an infinite slope for gamma < 1 and autograd
    # would give inf · log p_t = inf · 0 = NaN, where the true gradient is 0 (the term is 0 to first order).
    one_minus = 1.0 - p_t
    at_zero = torch.ones_like(one_minus) if gamma == 0 else torch.zeros_like(one_minus)
    modulator = torch.where(one_minus > 0, torch.where(one_minus > 0, one_minus, 1.0) ** gamma, at_zero)
    focal = (-alpha * modulator * log_p_t).mean()

    one_hot = (labels.unsqueeze(1) == torch.arange(n_classes, device=labels.device).view(1, -1, 1, 1)).to(compute)
    intersection = (p * one_hot).sum(dim=(2, 3))  # (N, C)
    cardinality = p.sum(dim=(2, 3)) + one_hot.sum(dim=(2, 3))  # (N, C)
    dice = (2.0 * intersection + smooth) / (cardinality + smooth)
    first = 0 if o.include_background or n_classes == 1 else 1
    dice_loss = 1.0 - dice[:, first:].mean()

    return c_dice * dice_loss + c_focal * focal + c_ce * cross_entropy


class CombinedLoss(nn.Module):
    """c0·Dice + c1·focal + c2·weighted cross-entropy as a module (semantics: module docstring).

    backend: "auto" runs the fused Triton kernel where it can (CUDA tensors of float32/float16/bfloat16 with at
    most 16 classes, Triton installed) and ``combined_loss_torch`` everywhere else (float64, more classes, the CPU:
    never Triton's slow CPU interpreter); "triton" always the kernel (CUDA, or CPU under
    TRITON_INTERPRET=1); "torch" always the torch ops. ``class_weights`` (C,) is a buffer, so it follows
    ``.to(device)`` and is saved in the ``state_dict``. forward(logits (N, C, H, W), target (N, H, W),
    pixel_weights (N, H, W) or None) -> scalar loss.

    ``options`` are the fields of ``LossOptions`` (alpha, gamma, smooth, include_background, coefficients), kept as
    ``self.options``. They are checked here, at construction, by the same ``LossOptions`` the functions build (alpha
    finite, gamma and smooth finite and >= 0, three finite coefficients), and ``class_weights`` must be a 1-D
    array of finite values >= 0; ValueError otherwise. The inputs of ``forward`` are checked as
    ``combined_loss_torch`` says.
    """

    def __init__(
        self,
        class_weights: torch.Tensor | None = None,
        backend: str = "auto",
        validate: bool = True,
        **options,
    ):
        super().__init__()
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "triton" and not HAS_TRITON:
            raise ValueError("backend='triton' needs the triton package, which is not installed")
        self.options = LossOptions(**options)
        if class_weights is not None:
            message = "class_weights must be a 1-D array of finite numbers >= 0, got {!r}"
            try:
                class_weights = torch.as_tensor(class_weights, dtype=torch.float32)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(message.format(class_weights)) from None
            if class_weights.dim() != 1 or not bool((torch.isfinite(class_weights) & (class_weights >= 0)).all()):
                raise ValueError(message.format(class_weights.tolist()))
        self.register_buffer("class_weights", class_weights)
        self.backend = backend
        self.validate = validate

    def uses_triton(self, logits: torch.Tensor) -> bool:
        """Whether ``forward`` on ``logits`` runs the fused kernel."""
        if self.backend == "auto":
            fits = logits.dtype in FUSED_DTYPES and logits.dim() == 4 and logits.shape[1] <= FUSED_MAX_CLASSES
            return HAS_TRITON and logits.is_cuda and fits
        return self.backend == "triton"

    def forward(self, logits: torch.Tensor, target: torch.Tensor, pixel_weights: torch.Tensor | None = None):
        if self.uses_triton(logits):
            # Imported here: triton is Linux-only, and the package must import and train without it.
            from unet_from_scratch.kernels.fused_loss import combined_loss
        else:
            combined_loss = combined_loss_torch
        return combined_loss(
            logits, target, pixel_weights, self.class_weights, validate=self.validate, **vars(self.options)
        )

    def extra_repr(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in vars(self.options).items())
        return f"{options}, backend={self.backend!r}"
