"""He-normal initialisation of torch modules, drawn by the NumPy reference's ``he_normal`` with its ``fan_in``.

He, Zhang, Ren & Sun, "Delving Deep into Rectifiers" (ICCV 2015, eq. 10): a layer followed by ReLU keeps the
variance of its signal from layer to layer when its weights have std sqrt(2 / n), n the number of inputs one
output neuron sums over. The U-Net paper (Sec. 3) prescribes exactly this: "a Gaussian distribution with a
standard deviation of sqrt(2/N), where N denotes the number of incoming nodes of one neuron".

Nothing here decides a fan: n is ``reference.init.fan_in`` of the layer's kind, weight shape, stride and groups,
where the rule for each kind (and why a transposed convolution's differs from torch's default) is written down.
The draws come from ``reference.init.he_normal`` with a seeded NumPy generator, so NumPy code that draws the same
shapes in the same order with the same seed starts from exactly the same weights. Two ways in:

- ``init_from_spec_(module, spec, rng)``: the parameters listed by a torch-free spec ``[(name, shape, fan_in)]``
  in that order, as ``reference.unet.unet_parameters(config)`` gives for a ``UNet`` (and ``NumpyUNet`` draws from
  the same spec): weights He-normal, biases 0, norm scales 1.
- ``he_normal_(module, rng)``: every ``Conv2d``/``ConvTranspose2d`` of a module in ``module.modules()`` order,
  biases 0; other layers (norms, attention blocks with their own scheme) are left as they are.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from unet_from_scratch.reference.init import fan_in, he_normal


def _generator(rng: np.random.Generator | int) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def layer_fan_in(layer: nn.Conv2d | nn.ConvTranspose2d) -> int | float:
    """``reference.init.fan_in`` of a torch convolution or transposed convolution's weight."""
    kind = "conv_transpose" if isinstance(layer, nn.ConvTranspose2d) else "conv"
    return fan_in(kind, tuple(layer.weight.shape), stride=layer.stride, groups=layer.groups)


def init_from_spec_(module: nn.Module, spec, rng: np.random.Generator | int = 0) -> nn.Module:
    """Set ``module``'s parameters from ``spec``, ``[(name, shape, fan_in)]`` in ``named_parameters()`` order.

    In the spec's order: a weight with a fan gets ``he_normal(shape, rng, fan_in=fan_in)`` (float32 draws, copied
    into the parameter's dtype and device), a ``*.weight`` without one (a norm's scale) 1, anything else (biases,
    norm shifts) 0. ``rng`` is a NumPy Generator or a seed for a fresh one. The spec's names and shapes must be
    exactly the module's ``named_parameters()``, else ValueError naming the first difference. Returns ``module``.
    """
    ours = [(name, tuple(shape)) for name, shape, _ in spec]
    theirs = [(name, tuple(p.shape)) for name, p in module.named_parameters()]
    if ours != theirs:
        at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        mine = ours[at] if at < len(ours) else "nothing"
        its = theirs[at] if at < len(theirs) else "nothing"
        raise ValueError(
            f"the parameter spec does not match {type(module).__name__}.named_parameters(): "
            f"entry {at} is {mine} in the spec, {its} in the module ({len(ours)} vs {len(theirs)} parameters)"
        )
    rng = _generator(rng)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, shape, fan in spec:
            p = params[name]
            if fan is not None:
                p.copy_(torch.from_numpy(np.asarray(he_normal(tuple(shape), rng, fan_in=fan))))
            elif name.endswith(".weight"):
                p.fill_(1.0)
            else:
                p.zero_()
    return module


def he_normal_(module: nn.Module, rng: np.random.Generator | int = 0) -> nn.Module:
    """Set every ``Conv2d``/``ConvTranspose2d`` weight in ``module`` to He-normal draws, its bias to zero.

    ``rng`` is a NumPy Generator (consumed in the order of ``module.modules()``, so one generator can be passed
    to several modules in turn) or a seed for a fresh one. The draws are copied into each weight's dtype and
    device. Returns ``module``.
    """
    rng = _generator(rng)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d)):
                w = he_normal(tuple(layer.weight.shape), rng, fan_in=layer_fan_in(layer))
                layer.weight.copy_(torch.from_numpy(np.asarray(w)))
                if layer.bias is not None:
                    layer.bias.zero_()
    return module
