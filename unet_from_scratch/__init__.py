"""unet-from-scratch: U-Net image segmentation from the ground up.

Floors, each importing only the ones below it:

- ``reference``  NumPy only: every layer, loss, metric, the weight map and the optimizers, forward and backward.
- ``kernels``    Triton: the fused loss and flash attention (torch + triton only).
- ``data``       the synthetic touching-cells dataset, image folders, transforms, weight maps.
- ``nn``         torch modules: UNet, AttentionUNet, SelfAttention2d, CombinedLoss.
"""

__version__ = "0.1.0"
