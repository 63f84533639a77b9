"""Prediction on whole images of any size: mirror the borders out to a size the network takes, crop what it gives.

A U-Net takes only certain sizes (``nn.unet``'s size rules) and, with valid convolutions, returns less than it
is given: the output of the paper's network is the centre of its input, 92 pixels in from every side. To predict
every pixel of an H x W image, the image is extended to the input size of the smallest output window that covers
it, by mirroring (the paper's Fig. 2: "the missing input data is extrapolated by mirroring"), and the output is cut
back to H x W:

    out = smallest output side >= H          (any side for "same" padding divisible by 2^depth)
    input = out + 2 · margin                  margin = (input - output) / 2: 0 for "same", 92 for the paper's net
    image padded by margin on top/left and margin + (out - H) on bottom/right  ->  model  ->  output[:H, :W]

The mirror is numpy's "symmetric" (d c b a | a b c d), the same extension ``data.RandomCrop`` gives training
crops, so the network sees the same kind of border at training and at inference.
"""

from __future__ import annotations

import torch


def mirror_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Extend ``x`` (..., H, W) by mirroring, edge pixels repeated (numpy's "symmetric"); pads may exceed H, W."""
    for dim, before, after in ((-2, top, bottom), (-1, left, right)):
        while before > 0 or after > 0:  # one reflection covers at most the current size; repeat for wider pads
            size = x.shape[dim]
            b, a = min(before, size), min(after, size)
            parts = [x.narrow(dim, 0, b).flip(dim), x, x.narrow(dim, size - a, a).flip(dim)]
            x = torch.cat(parts, dim=dim)
            before, after = before - b, after - a
    return x


def covering_input(model, size: int) -> tuple[int, int]:
    """(input side, output side) of the smallest output window of ``model`` that covers ``size`` pixels."""
    n = model.valid_input_size(size)
    while model.output_size(n) < size:  # valid sizes recur every 2^depth; a few steps at most
        n = model.valid_input_size(n + 1)
    return n, model.output_size(n)


@torch.no_grad()
def predict_logits(model, images: torch.Tensor) -> torch.Tensor:
    """Logits (N, K, H, W) of ``images`` (N, C, H, W), any H and W, in one pass (the model's mode is left as is)."""
    height, width = images.shape[-2:]
    (in_h, out_h), (in_w, out_w) = covering_input(model, height), covering_input(model, width)
    margin_h, margin_w = (in_h - out_h) // 2, (in_w - out_w) // 2
    padded = mirror_pad(images, margin_h, margin_h + out_h - height, margin_w, margin_w + out_w - width)
    return model(padded)[..., :height, :width]
