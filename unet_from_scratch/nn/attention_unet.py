"""An attention U-Net: the U-Net skeleton with batch norm, dropout and self-attention where it is affordable.

The paper's network (``nn.unet``) with four changes, each a common remedy for what it lacks:

- batch norm after every 3x3 convolution, dropout (0.2) at the end of every conv block and on the residual
  branch of every attention block: steadier training and regularisation at every level, not only the deepest;
- ``SelfAttention2d`` (residual multi-head attention over positions) after the bottleneck and after the
  coarse decoder levels, so that any two places of the image can exchange information in one step, where
  convolutions would need many;
- an extra conv block (two 3x3 conv + BN + ReLU) before the 1x1 output convolution, to smooth the last
  concatenation of fine encoder features and upsampled context;
- ``padding="same"`` by default: any input whose sides are divisible by 2^depth (16) works and keeps its size.

Where the attention goes. Attention over T = H·W / stride² positions costs O(T² C) time, and on a path that
forms the T x T score matrix (the pure-torch fallback may) O(T²) memory per head. At stride 8 a 512x512 tile
gives T = 4096 (16.8M scores per head); at stride 4 it would be 16384 (268M scores, 1 GB per head in float32),
more than all the convolutions of that level cost. So attention sits at the bottleneck and at every decoder
level whose stride is at least ``attention_min_stride`` (8): with the default depth 4 that is the bottleneck
(stride 16, 1024 channels) and the first decoder level (stride 8, 512 channels). Lower it to 4 to add the next
level where memory allows (a fused kernel on a GPU).

The blocks (``DoubleConv``, ``Up``), the size arithmetic, the normalisation buffers and class names are those of
``nn.unet``. Convolutions are He-normal initialised from ``seed``; the attention blocks keep their own scheme,
drawn from torch's generator seeded by the same ``seed`` (the caller's global generator is left untouched).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unet_from_scratch.nn.attention import SelfAttention2d
from unet_from_scratch.nn.init import he_normal_
from unet_from_scratch.nn.unet import DoubleConv, SegmentationModel, Up, check_dropout
from unet_from_scratch.reference._checks import check_int


class AttentionUNet(SegmentationModel):
    """U-Net with batch norm, dropout, self-attention at the bottleneck and coarse decoder levels, an extra conv block.

    Args:
        in_channels, num_classes, depth, base_channels, padding, seed: as ``UNet`` (padding defaults to "same").
        num_heads: attention heads; every attended level's channels must be divisible by it.
        dropout: drop probability at the end of every conv block and on every attention block's residual branch,
            in [0, 1).
        attention_min_stride: decoder levels at this stride or coarser get attention (see the module docstring).

    ``forward``: (N, in_channels, H, W) -> (N, num_classes, H, W) with "same" padding (H, W divisible by
    2^depth); with "valid" padding the output is 4 pixels smaller than a ``UNet``'s (the extra conv block). As
    ``UNet``: bad arguments raise ValueError at construction, and an input of another dtype is cast to the model's.
    """

    extra_convs = 2  # the extra conv block before the output
    name = "attention-unet"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        base_channels: int = 64,
        num_heads: int = 8,
        dropout: float = 0.2,
        padding: str = "same",
        seed: int = 0,
        attention_min_stride: int = 8,
    ):
        super().__init__(in_channels, num_classes, depth, base_channels, padding)
        dropout, seed = check_dropout(dropout), check_int(seed, "seed", minimum=0)
        num_heads = check_int(num_heads, "num_heads")
        attention_min_stride = check_int(attention_min_stride, "attention_min_stride")
        self._record_config(locals())
        widths = [base_channels * 2**level for level in range(depth + 1)]  # 64, 128, 256, 512, 1024
        with torch.random.fork_rng(devices=[]):  # the attention blocks' own init, seeded, and no global side effect
            torch.manual_seed(seed)
            self.encoder = nn.ModuleList(
                DoubleConv(c_in, c_out, padding, batch_norm=True, dropout=dropout)
                for c_in, c_out in zip([in_channels] + widths[:-2], widths[:-1])
            )
            self.pool = nn.MaxPool2d(2)
            self.bottleneck = DoubleConv(widths[-2], widths[-1], padding, batch_norm=True, dropout=dropout)
            self.bottleneck_attention = SelfAttention2d(widths[-1], num_heads, dropout)
            self.decoder = nn.ModuleList(Up(c, padding, batch_norm=True, dropout=dropout) for c in reversed(widths[1:]))
            # Decoder level i outputs widths[depth - 1 - i] channels at stride 2^(depth - 1 - i).
            self.decoder_attention = nn.ModuleList(
                SelfAttention2d(widths[level], num_heads, dropout)
                if 2**level >= attention_min_stride
                else nn.Identity()
                for level in reversed(range(depth))
            )
            self.refine = DoubleConv(widths[0], widths[0], padding, batch_norm=True, dropout=dropout)
            self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        rng = np.random.default_rng(seed)
        for part in (self.encoder, self.bottleneck, self.decoder, self.refine, self.head):  # not the attention blocks
            he_normal_(part, rng)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)  # (N, C_in, H, W), checked and normalised
        skips = []
        for down in self.encoder:
            x = down(x)  # (N, c, h, w) same | (N, c, h - 4, w - 4) valid; c = 64, 128, ...
            skips.append(x)
            x = self.pool(x)  # (N, c, h/2, w/2)
        x = self.bottleneck_attention(self.bottleneck(x))  # (N, 2^depth * base, H/2^depth, W/2^depth)
        for up, attend, skip in zip(self.decoder, self.decoder_attention, reversed(skips)):
            x = attend(up(x, skip))  # (N, c/2, 2h, 2w); attention (shape-preserving) at coarse levels only
        return self.head(self.refine(x))  # (N, base, H, W) -> (N, num_classes, H, W)
