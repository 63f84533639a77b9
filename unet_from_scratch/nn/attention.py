"""Multi-head self-attention over the positions of a feature map, as a residual block.

Each of the H·W positions of an (N, C, H, W) map is a token with C features; the C channels are split into
``num_heads`` heads of ``C / num_heads`` features, and every position attends to every other (Vaswani et al.
2017, eq. 1-2). Convolutions see a neighbourhood; this block lets a U-Net's bottleneck relate any two places of
the image in one step. The block is the one of diffusion U-Nets (Ho et al. 2020, "Denoising Diffusion
Probabilistic Models", and its successors):

    h   = GroupNorm(x)                                   normalised, so attention scores start O(1)
    q, k, v = split(Conv1x1(h))                          (N, heads, H·W, C/heads) each
    a   = softmax(q kᵀ / √(C/heads)) v                   per head
    out = x + Dropout(Conv1x1(merge(a)))                 residual: the block can start near the identity

The attention itself runs on one of two backends:

- ``"triton"``: ``unet_from_scratch.kernels.attention.flash_attention`` (O(H·W) memory, CUDA, or CPU under
  Triton's interpreter, where it is slow: for tests only);
- ``"torch"``: ``torch.nn.functional.scaled_dot_product_attention``;
- ``"auto"`` (default): the Triton kernel for CUDA tensors when Triton is installed and the head size and dtype
  are ones it supports, else torch. It never picks the CPU interpreter.

Checks (the policy of ``reference/_checks.py``): the constructor's parameters, and in ``forward`` the input's type,
shape and dtype, not its values (the models' rule, ``nn.unet``). An input of another real dtype than the block's
weights (float64 into a float32 block) is cast to theirs first; under autocast float16/bfloat16/float32 inputs are
left to autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unet_from_scratch import kernels
from unet_from_scratch.nn.unet import check_dropout, match_dtype
from unet_from_scratch.reference._checks import check_int

BACKENDS = ("auto", "triton", "torch")
# Mirrors kernels.attention.HEAD_DIM_RANGE / DTYPES, restated so that choosing a backend needs no Triton import.
_FLASH_HEAD_DIMS = (16, 128)
_FLASH_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class SelfAttention2d(nn.Module):
    """Residual multi-head self-attention over the H·W positions of an (N, C, H, W) feature map.

    Args:
        channels: C, the input's channels (and the output's).
        num_heads: heads to split C into; C must be divisible by it. Head size C / num_heads.
        dropout: drop probability on the block's output before the residual sum (the same on both backends,
            since the flash kernel has no dropout on the attention weights).
        backend: "auto", "triton" or "torch" (see the module docstring).

    The norm is a GroupNorm with gcd(32, C) groups: 32 groups as in diffusion U-Nets where C allows, else the
    largest power of two below 32 that divides C. Input and output: (N, C, H, W); the output has the weights'
    dtype (an input of another dtype is cast to it first). Bad arguments raise ValueError at construction.
    """

    def __init__(self, channels: int, num_heads: int = 8, dropout: float = 0.0, backend: str = "auto"):
        super().__init__()
        channels, num_heads = check_int(channels, "channels"), check_int(num_heads, "num_heads")
        dropout = check_dropout(dropout)
        if channels % num_heads != 0:
            raise ValueError(f"channels must be divisible by num_heads, got channels={channels}, num_heads={num_heads}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        head_dim = channels // num_heads
        if backend == "triton":
            if not kernels.HAS_TRITON:
                raise ValueError("backend='triton' needs the triton package, which is not installed")
            low, high = _FLASH_HEAD_DIMS
            if not low <= head_dim <= high:
                raise ValueError(
                    f"backend='triton' needs channels/num_heads in [{low}, {high}], "
                    f"got {channels}/{num_heads} = {head_dim}"
                )
        self.channels = channels
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.backend = backend
        self.norm = nn.GroupNorm(math.gcd(32, channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj = nn.Conv2d(channels, channels, kernel_size=1)
        self.dropout = nn.Dropout(dropout)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_heads={self.num_heads}, backend={self.backend!r}"

    def _use_triton(self, q: torch.Tensor) -> bool:
        """Whether this call goes to the flash kernel. Decided on q, whose dtype autocast may have changed."""
        if self.backend != "auto":
            return self.backend == "triton"
        low, high = _FLASH_HEAD_DIMS
        return q.is_cuda and kernels.HAS_TRITON and low <= self.head_dim <= high and q.dtype in _FLASH_DTYPES

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = match_dtype(x, self.qkv.weight.dtype, "x")
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"x must be (N, {self.channels}, H, W), got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x))  # (N, 3C, H, W)
        # Channel index = (which of q/k/v, head, feature); positions flatten to tokens.
        q, k, v = qkv.reshape(n, 3, self.num_heads, self.head_dim, h * w).transpose(-1, -2).unbind(1)  # (N, nh, HW, hd)
        if self._use_triton(q):
            from unet_from_scratch.kernels.attention import flash_attention  # Triton is Linux-only: import on use

            a = flash_attention(q, k, v)
        else:
            a = F.scaled_dot_product_attention(q, k, v)
        a = a.transpose(-1, -2).reshape(n, c, h, w)  # heads back into channels, in the order they were split
        return x + self.dropout(self.proj(a))
