"""Prediction on images of any size: whole-image passes, overlap-tile inference, test-time augmentation.

A U-Net takes only certain sizes (``sizes``) and, with valid convolutions, returns less than it is given: the
output of the paper's network is the centre of its input, ``sizes.context_margin`` = 92 pixels in from every side.

**Whole image** (``predict_logits``). To predict every pixel of an H x W image in one pass, the image is extended
to the input size of the smallest output window that covers it, by mirroring (the paper's Fig. 2: "the missing
input data is extrapolated by mirroring"), and the output is cut back to H x W:

    out = smallest output side >= H          (any side for "same" padding divisible by 2^depth)
    input = out + 2 · margin                  margin = (input - output) / 2: 0 for "same", 92 for the paper's net
    image padded by margin on top/left and margin + (out - H) on bottom/right  ->  model  ->  output[:H, :W]

The mirror is numpy's "symmetric" (d c b a | a b c d), the same extension ``data.RandomCrop`` gives training
crops, so the network sees the same kind of border at training and at inference.

**Overlap-tile** (``predict_tiled``, Ronneberger et al. 2015, Fig. 2). The output is cut into tiles of side
``tile`` (rounded up to a side the network gives); each tile's input window carries the ``margin`` of context
around it, taken from the same mirrored extension of the image, so memory grows with the tile, not the image.
Tiles start at multiples of ``step``, itself a multiple of 2^depth, so every window sees the max-pool grid of
the whole-image pass; the windows go through the model ``batch_size`` at a time and are stitched as a weighted
mean of the tiles that cover each pixel:

    logits(p) = sum_t w_t(p) · tile_t(p) / sum_t w_t(p)

- ``padding="valid"``: every output pixel sees exactly the input it sees in a whole-image pass (same context,
  same pool grid), so the tiles agree wherever they overlap and w = 1: the tiled result *equals* the whole-image
  result up to float rounding, for every tile size. Neighbouring tiles overlap by less than 2^depth pixels
  (step = tile rounded down to a multiple of 2^depth), the last one by what it takes to end at the image's edge.
- ``padding="same"``: the zero padding of every convolution makes a tile's border pixels differ from what a
  whole-image pass gives there, so tiles overlap by ``overlap`` (a fraction of the tile, 0.5 by default) and are
  blended with a Gaussian importance map, w(y, x) = exp(-(y - c_y)^2 / (2 σ_y^2) - (x - c_x)^2 / (2 σ_x^2)),
  σ = ``sigma_scale`` · tile side (1/8, nnU-Net's choice, Isensee et al. 2021): the centre of one tile outweighs
  the border of its neighbour, and the result has no seams.

**Test-time augmentation** (``tta=True``): the mean of the logits over the 8 symmetries of the square (4
rotations by 90 degrees, each with and without a horizontal flip), each prediction transformed back before the
mean. The paper averaged rotated versions of its EM images the same way.

Shapes: images (N, C, H, W), any real dtype (the model casts and normalises them); logits (N, K, H, W) float32
(``predict_tiled``, ``predict``) or the model's dtype (``predict_logits``). The model's train/eval mode is left
as it is; call ``model.eval()`` first (``training.load_model`` returns it in eval mode).
"""

from __future__ import annotations

import math

import torch

from unet_from_scratch import sizes

DEFAULT_TILE = 512  # output pixels per tile side: ~0.5 GB of activations for the quick preset's model, float32
SYMMETRIES = tuple((k, flip) for flip in (False, True) for k in range(4))  # the 8 elements of the dihedral group D4


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


def _architecture(model) -> tuple[int, str, int]:
    return model.depth, model.padding, getattr(model, "extra_convs", 0)


def covering_input(model, size: int) -> tuple[int, int]:
    """(input side, output side) of the smallest output window of ``model`` that covers ``size`` pixels."""
    return sizes.covering_input(size, *_architecture(model))


@torch.no_grad()
def predict_logits(model, images: torch.Tensor) -> torch.Tensor:
    """Logits (N, K, H, W) of ``images`` (N, C, H, W), any H and W, in one pass (the model's mode is left as is).

    ``images`` must be on the model's device; the logits come in the model's dtype (or autocast's).
    """
    height, width = images.shape[-2:]
    (in_h, out_h), (in_w, out_w) = covering_input(model, height), covering_input(model, width)
    margin_h, margin_w = (in_h - out_h) // 2, (in_w - out_w) // 2
    padded = mirror_pad(images, margin_h, margin_h + out_h - height, margin_w, margin_w + out_w - width)
    return model(padded)[..., :height, :width]


# ----------------------------------------------------------------------------------------------------------------
# Overlap-tile


def importance_map(height: int, width: int, sigma_scale: float = 0.125) -> torch.Tensor:
    """The Gaussian blending weights (height, width) float32 of one tile, 1 at its centre.

    w(y, x) = exp(-(y - c_y)^2 / (2 σ_y^2) - (x - c_x)^2 / (2 σ_x^2)), c = (side - 1) / 2, σ = sigma_scale · side.
    At 1/8 a tile's edge (4 σ from its centre) weighs exp(-8) ≈ 3e-4 of its centre, never 0.
    """
    if not (isinstance(sigma_scale, (int, float)) and math.isfinite(sigma_scale) and sigma_scale > 0):
        raise ValueError(f"sigma_scale must be a positive number, got {sigma_scale!r}")
    axes = []
    for side in (height, width):
        t = torch.arange(side, dtype=torch.float64) - (side - 1) / 2
        axes.append(torch.exp(-(t**2) / (2 * (sigma_scale * side) ** 2)))
    return (axes[0][:, None] * axes[1][None, :]).float()


def tile_plan(model, length: int, tile: int, overlap: float = 0.5) -> tuple[int, int, int, list[int]]:
    """One axis of the tiling: (input side, output side, margin, output starts) for an image side ``length``.

    The tiles cover the output window of a whole-image pass, ``canvas`` = the smallest output side >= ``length``
    (``covering_input``), so near the image's edge a tile sees what the whole-image pass sees there: the mirrored
    extension, then (for "same") the zero padding of the convolutions. The tile's output side is the smallest
    side the model gives that is >= min(max(tile, 2^depth), length). Tiles start at 0, step, 2 step, ... and the
    last one ends at the canvas's end; step is a multiple of 2^depth (the output side rounded down to one for
    "valid" padding, the output side · (1 - ``overlap``) rounded down, at least 2^depth, for "same"), and so is
    canvas - output side (valid output sides are all alike modulo 2^depth), so every tile sees the max-pool grid
    of the whole-image pass.
    """
    depth, padding, extra = _architecture(model)
    grid = sizes.grid_step(depth)
    input_side, output_side = sizes.covering_input(min(max(tile, grid), length), depth, padding, extra)
    margin = (input_side - output_side) // 2
    if padding == "valid":
        step = max(grid, output_side // grid * grid)
    else:
        step = max(grid, int(output_side * (1 - overlap)) // grid * grid)
    canvas = sizes.covering_input(length, depth, padding, extra)[1]
    last = canvas - output_side
    starts = list(range(0, last, step)) + [last]
    return input_side, output_side, margin, starts


def _check_options(tile, batch_size, overlap) -> None:
    for name, value in (("tile", tile), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not 0 <= overlap < 1:
        raise ValueError(f"overlap must be a number in [0, 1), got {overlap!r}")


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, C, H, W), got {shape}")
    if 0 in images.shape:
        raise ValueError(f"images must not be empty, got shape {tuple(images.shape)}")


def _device_of(model) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


@torch.no_grad()
def predict_tiled(
    model,
    images: torch.Tensor,
    tile: int = DEFAULT_TILE,
    batch_size: int = 4,
    overlap: float = 0.5,
    sigma_scale: float = 0.125,
) -> torch.Tensor:
    """Logits (N, K, H, W) float32 of ``images`` (N, C, H, W) by overlap-tile inference (module docstring).

    Args:
        model: a U-Net (``depth``, ``padding``, ``extra_convs`` attributes; ``nn.UNet``, ``nn.AttentionUNet``).
        images: any H, W, on any device; the tiles are moved to the model's device, the logits stay on the images'.
        tile: output pixels per tile side, rounded up to a side the model gives (clipped to the image).
        batch_size: tiles per forward pass (tiles of all N images are batched together).
        overlap: "same" padding only: the fraction of a tile its neighbour overlaps, in [0, 1).
        sigma_scale: "same" padding only: σ of the Gaussian importance map, as a fraction of the tile side.
    """
    _check_images(images)
    _check_options(tile, batch_size, overlap)
    n, _, height, width = images.shape
    in_h, out_h, margin_h, starts_y = tile_plan(model, height, tile, overlap)
    in_w, out_w, margin_w, starts_x = tile_plan(model, width, tile, overlap)
    canvas_h, canvas_w = starts_y[-1] + out_h, starts_x[-1] + out_w  # output canvas, >= (H, W)
    padded = mirror_pad(images, margin_h, margin_h + canvas_h - height, margin_w, margin_w + canvas_w - width)
    if model.padding == "valid":
        weight = torch.ones(out_h, out_w)  # tiles agree where they overlap: a plain mean
    else:
        weight = importance_map(out_h, out_w, sigma_scale)
    weight = weight.to(images.device)
    weight_sum = torch.zeros(canvas_h, canvas_w, device=images.device)
    for y in starts_y:
        for x in starts_x:
            weight_sum[y : y + out_h, x : x + out_w] += weight
    windows = [(i, y, x) for i in range(n) for y in starts_y for x in starts_x]
    device, total = _device_of(model), None
    for first in range(0, len(windows), batch_size):
        chunk = windows[first : first + batch_size]
        batch = torch.stack([padded[i, :, y : y + in_h, x : x + in_w] for i, y, x in chunk])  # (B, C, in_h, in_w)
        logits = model(batch.to(device)).float().to(images.device)  # (B, K, out_h, out_w)
        if total is None:
            total = torch.zeros(n, logits.shape[1], canvas_h, canvas_w, device=images.device)
        for (i, y, x), tile_logits in zip(chunk, logits):
            total[i, :, y : y + out_h, x : x + out_w] += weight * tile_logits
    return (total / weight_sum)[..., :height, :width]


# ----------------------------------------------------------------------------------------------------------------
# Test-time augmentation and the one entry point


def dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """``x`` (..., H, W) rotated by k · 90 degrees (counter-clockwise, ``torch.rot90``), then flipped left-right."""
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if flip else x


def undo_dihedral(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    """The inverse of ``dihedral(·, k, flip)``: flip back first, then rotate by -k · 90 degrees."""
    if flip:
        x = x.flip(-1)
    return torch.rot90(x, -k, dims=(-2, -1))


@torch.no_grad()
def predict(
    model,
    images: torch.Tensor,
    tile: int | None = None,
    batch_size: int = 4,
    tta: bool = False,
    overlap: float = 0.5,
    sigma_scale: float = 0.125,
) -> torch.Tensor:
    """Logits (N, K, H, W) float32 of ``images`` (N, C, H, W): whole-image passes (``tile=None``) or
    overlap-tile inference (``predict_tiled``), optionally the mean over the 8 symmetries of the square (``tta``):

        logits = 1/8 · sum_{g in D4} g^-1( f( g(images) ) )

    ``images`` on any device; the logits come back on it.
    """
    _check_images(images)
    device = _device_of(model)

    def once(x: torch.Tensor) -> torch.Tensor:
        if tile is None:
            return predict_logits(model, x.to(device)).float().to(images.device)
        return predict_tiled(model, x, tile, batch_size, overlap, sigma_scale)

    if not tta:
        return once(images)
    total = None
    for k, flip in SYMMETRIES:
        logits = undo_dihedral(once(dihedral(images, k, flip)), k, flip)
        total = logits if total is None else total + logits
    return total / len(SYMMETRIES)
