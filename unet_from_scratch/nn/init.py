"""He-normal initialisation of a torch module's convolutions, drawn by the NumPy reference's ``he_normal``.

He, Zhang, Ren & Sun, "Delving Deep into Rectifiers" (ICCV 2015, eq. 10): a layer followed by ReLU keeps the
variance of its signal from layer to layer when its weights have std sqrt(2 / n), n the number of inputs one
output neuron sums over. The U-Net paper (Sec. 3) prescribes exactly this: "a Gaussian distribution with a
standard deviation of sqrt(2/N), where N denotes the number of incoming nodes of one neuron".

The draws come from ``reference.init.he_normal`` with a seeded NumPy generator: the distribution is the
reference's, and NumPy code that draws the same shapes in the same order (``module.modules()``) with the same seed
and fans starts from exactly the same weights.

The fan n, per layer kind:

- ``Conv2d``, weight (C_out, C_in / groups, kh, kw): an output pixel sums C_in / groups channels over a kh x kw
  window, n = (C_in / groups) kh kw (torch's fan_in, too).
- ``ConvTranspose2d``, weight (C_in, C_out / groups, kh, kw): each input pixel stamps its kernel onto the output
  at stride s, so an output pixel receives kh kw / (sh sw) taps of each of its C_in / groups input channels (on
  average; exactly, when the stride divides the kernel). For the U-Net's 2x2, stride-2 up-convolution that is
  n = C_in: every output pixel is one input pixel's channels times one kernel tap. Torch's fan_in for this weight
  (``weight.shape[1] * kh * kw`` = C_out kh kw, 4 C_out for the up-convolution) counts the inputs of a neuron of
  the adjoint convolution instead, and would make the up-convolutions' std sqrt(2) times too small here.

Biases start at zero. Other layers (norms, attention blocks with their own scheme) are left as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unet_from_scratch.reference.init import he_normal


def fan_in(layer: nn.Conv2d | nn.ConvTranspose2d) -> float:
    """The number of incoming connections of one output neuron of ``layer`` (see the module docstring)."""
    kh, kw = layer.kernel_size
    c_in = layer.in_channels // layer.groups
    if isinstance(layer, nn.ConvTranspose2d):
        sh, sw = layer.stride
        return c_in * kh * kw / (sh * sw)
    return c_in * kh * kw


def he_normal_(module: nn.Module, rng: np.random.Generator | int = 0) -> nn.Module:
    """Set every ``Conv2d``/``ConvTranspose2d`` weight in ``module`` to He-normal draws, its bias to zero.

    ``rng`` is a NumPy Generator (consumed in the order of ``module.modules()``, so one generator can be passed
    to several modules in turn) or a seed for a fresh one. The draws are copied into each weight's dtype and
    device. Returns ``module``.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                w = he_normal(tuple(layer.weight.shape), rng, fan_in=fan_in(layer))
                layer.weight.copy_(torch.from_numpy(np.asarray(w)))
                if layer.bias is not None:
                    layer.bias.zero_()
    return module
