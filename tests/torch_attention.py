"""Attention stated in torch: the naive baseline of benchmarks/test_attention.py, an oracle of the reference tests.

torch only (no Triton), so that the benchmarks' CPU group and the tests that use it run wherever torch does.
"""

from __future__ import annotations

import torch


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(scale · q kᵀ) v in plain torch, materialising the (seq × seq) weights: the baseline to beat.

    q (B, H, n, d), k (B, H, m, d), v (B, H, m, dv) -> (B, H, n, dv); ``scale`` defaults to 1/√d.
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return torch.softmax(scale * (q @ k.transpose(-1, -2)), dim=-1) @ v
