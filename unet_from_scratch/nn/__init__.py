"""torch modules built from the reference's parts: the models, the attention block and the combined loss.

On CUDA tensors (with Triton installed) ``CombinedLoss`` and ``SelfAttention2d`` run the Triton kernels of
``unet_from_scratch.kernels``; everywhere else they run plain torch, so the same code trains on a laptop.
"""

from unet_from_scratch.nn.attention import SelfAttention2d
from unet_from_scratch.nn.attention_unet import AttentionUNet
from unet_from_scratch.nn.init import he_normal_
from unet_from_scratch.nn.losses import CombinedLoss, combined_loss_torch
from unet_from_scratch.nn.registry import MODELS, from_config
from unet_from_scratch.nn.unet import UNet, output_size, valid_input_size

__all__ = [
    "MODELS", "AttentionUNet", "CombinedLoss", "SelfAttention2d", "UNet", "combined_loss_torch", "from_config",
    "he_normal_", "output_size", "valid_input_size",
]
