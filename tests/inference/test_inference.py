"""Overlap-tile inference and test-time augmentation against whole-image passes and hand-made references.

Small models (depth 2-3, 2-4 base channels, no batch norm) keep every pass cheap; He-initialised random weights
are as good as trained ones for these properties, which hold for any weights.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import assert_close
from unet_from_scratch import sizes
from unet_from_scratch.inference import (
    SYMMETRIES,
    covering_input,
    dihedral,
    importance_map,
    mirror_pad,
    predict,
    predict_logits,
    predict_tiled,
    tile_plan,
    undo_dihedral,
)
from unet_from_scratch.nn import UNet


def small(padding="valid", depth=2, base=4, classes=3, seed=0, in_channels=1):
    return UNet(in_channels, classes, depth=depth, base_channels=base, padding=padding, seed=seed).eval()


# ---------------------------------------------------------------------------------------------------------------
# The pieces


@pytest.mark.parametrize("pads", [(0, 0, 0, 0), (2, 3, 1, 0), (7, 12, 9, 20)])  # the last exceeds the 5 x 6 image
def test_mirror_pad_is_numpy_symmetric(pads, rng):
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    top, bottom, left, right = pads
    expected = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), mode="symmetric")
    np.testing.assert_array_equal(mirror_pad(torch.from_numpy(x), *pads).numpy(), expected)


def test_covering_input_is_the_smallest_window_that_covers():
    model = UNet(base_channels=2)  # the paper's depth 4, valid: outputs 4, 20, ..., 388 (input 572), 404, ...
    assert covering_input(model, 388) == (572, 388)
    assert covering_input(model, 389) == (588, 404)
    same = small("same", depth=3)
    assert covering_input(same, 33) == (40, 40)


def test_predict_logits_on_a_valid_size_is_one_plain_forward():
    model = small()
    n = model.valid_input_size(60)
    x = torch.rand(2, 1, n, n)
    margin = sizes.context_margin(2)
    crop = x[..., margin:-margin, margin:-margin]  # the output window of x, whose context is x's own border
    # Predicting the window mirrors its context in; a plain forward of x sees x's real border instead. Equal only
    # where that border is mirror-symmetric, so build x that way.
    x = mirror_pad(crop, margin, margin, margin, margin)
    assert_close(predict_logits(model, crop).numpy(), model(x).detach().numpy())


def test_importance_map_is_the_gaussian_of_its_formula():
    h, w, scale = 9, 14, 0.125
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    dy, dx = y - (h - 1) / 2, x - (w - 1) / 2
    expected = np.exp(-(dy**2) / (2 * (scale * h) ** 2) - dx**2 / (2 * (scale * w) ** 2))
    assert_close(importance_map(h, w, scale).numpy(), expected.astype(np.float32))
    assert importance_map(64, 64).min() > 0


def test_tile_plan_steps_on_the_pool_grid_and_covers_the_whole_pass_window():
    for depth, padding, tile, overlap in ((3, "valid", 20, 0.5), (4, "valid", 100, 0.5), (2, "same", 32, 0.5),
                                          (3, "same", 48, 0.25)):  # fmt: skip
        model = UNet(depth=depth, base_channels=2, padding=padding)
        for length in (5, 97, 300):
            _, out, margin, starts = tile_plan(model, length, tile, overlap)
            canvas = covering_input(model, length)[1]
            assert starts[0] == 0 and starts[-1] + out == canvas
            assert all(s % 2**depth == 0 for s in starts)
            assert all(b - a <= out for a, b in zip(starts, starts[1:]))  # no gap between tiles
            assert margin == sizes.context_margin(depth, padding)


# ---------------------------------------------------------------------------------------------------------------
# Valid padding: tiled == whole image, for every tile size


@pytest.mark.parametrize("tile", [96, 257])
def test_tiled_equals_whole_image_for_valid_padding_on_an_odd_image(tile):
    model = small("valid", depth=2, base=4)
    images = torch.rand(1, 1, 701, 533)
    whole = predict_logits(model, images)
    tiled = predict_tiled(model, images, tile=tile, batch_size=3)
    _, out, _, starts = tile_plan(model, 701, tile)
    assert len(starts) > 1 and out < 701  # really tiled
    assert tiled.shape == (1, 3, 701, 533)
    assert_close(tiled.numpy(), whole.numpy())


@pytest.mark.parametrize("tile", [13, 45])
def test_tiled_equals_whole_image_where_tiles_overlap_on_the_pool_grid(tile):
    # Depth 3: valid outputs are 4 (mod 8), never a multiple of the pool grid 8, so neighbouring tiles overlap.
    model = small("valid", depth=3, base=2, classes=2)
    images = torch.rand(2, 1, 141, 97)
    _, out, _, starts = tile_plan(model, 141, tile)
    assert any(b - a < out for a, b in zip(starts, starts[1:]))
    assert_close(predict_tiled(model, images, tile=tile, batch_size=5).numpy(), predict_logits(model, images).numpy())


def test_tiles_on_a_grid_off_the_pool_grid_would_differ():
    # Why the steps are multiples of 2^depth: a window shifted by 1 px sees another max-pool grid and gives other
    # values for the same pixels (so the equality above is not one that any tiling gets for free).
    model = small("valid", depth=2, base=4)
    images = torch.rand(1, 1, 64, 64)
    m = sizes.context_margin(2)
    padded = mirror_pad(images, m, m + 1, m, m)
    n = model.valid_input_size(40)
    a = model(padded[..., 0:n, 0:n])[..., 1:, :]  # output rows 1.. of a window at row 0
    b = model(padded[..., 1 : 1 + n, 0:n])[..., :-1, :]  # the same rows from a window at row 1
    assert (a - b).abs().max() > 1e-3


# ---------------------------------------------------------------------------------------------------------------
# Same padding: Gaussian blending leaves no seams


def _edge_and_centre_lines(model, length, tile, overlap):
    _, out, _, starts = tile_plan(model, length, tile, overlap)
    edges = {s for s in starts if s > 0} | {s + out - 1 for s in starts if s + out < length}
    centres = {c for s in starts for c in (s + out // 2 - 1, s + out // 2)}
    return sorted(edges), sorted(centres)


def _seam_errors(model, images, whole, tile, overlap):
    """Mean |tiled - whole| on tile-edge lines, on tile-centre lines, and over the image (rows and columns)."""
    error = (predict_tiled(model, images, tile=tile, overlap=overlap) - whole).abs().amax(dim=(0, 1))  # (H, W)
    rows = _edge_and_centre_lines(model, images.shape[2], tile, overlap)
    cols = _edge_and_centre_lines(model, images.shape[3], tile, overlap)
    border = torch.cat([error[rows[0]].flatten(), error[:, cols[0]].flatten()]).mean()
    centre = torch.cat([error[rows[1]].flatten(), error[:, cols[1]].flatten()]).mean()
    return float(border), float(centre), float(error.mean())


def test_gaussian_blending_has_no_seams_and_hard_stitching_has():
    model = small("same", depth=2, base=4, classes=2)
    images = torch.rand(1, 1, 253, 221)  # canvases 256 and 224: every tile edge lies on a neighbour's centre
    whole = predict_logits(model, images)
    border, centre, mean = _seam_errors(model, images, whole, tile=64, overlap=0.5)
    assert border <= 1.1 * centre  # the tile borders are as good as the tile centres
    assert border <= mean  # and no worse than the image on average: no seam stands out
    # The check can fail: tiles side by side without overlap (hard stitching) show their borders.
    hard_border, hard_centre, hard_mean = _seam_errors(model, images, whole, tile=64, overlap=0.0)
    assert hard_border > 3 * hard_centre and hard_border > 2 * hard_mean
    assert mean < hard_mean / 5


def test_same_padding_with_one_tile_per_axis_is_the_whole_image_pass():
    model = small("same", depth=2, base=4)
    images = torch.rand(2, 1, 37, 50)
    assert_close(predict_tiled(model, images, tile=512).numpy(), predict_logits(model, images).numpy())


# ---------------------------------------------------------------------------------------------------------------
# Test-time augmentation


def test_dihedral_and_its_inverse_cover_the_8_symmetries():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    seen = set()
    for k, flip in SYMMETRIES:
        y = dihedral(x, k, flip)
        seen.add(tuple(y.flatten().tolist()) + tuple(y.shape))
        assert torch.equal(undo_dihedral(y, k, flip), x)
    assert len(seen) == 8


@pytest.mark.parametrize("tile", [None, 24])
def test_tta_is_the_mean_of_the_8_transformed_passes(tile):
    model = small("valid", depth=2, base=4)
    images = torch.rand(2, 1, 45, 38)
    manual = []
    for k in range(4):
        for flip in (False, True):
            x = torch.rot90(images, k, dims=(2, 3))
            x = x.flip(3) if flip else x
            y = predict_logits(model, x)
            y = y.flip(3) if flip else y
            manual.append(torch.rot90(y, -k, dims=(2, 3)))
    expected = torch.stack(manual).mean(0)
    actual = predict(model, images, tile=tile, tta=True)
    assert_close(actual.numpy(), expected.numpy())
    assert (actual - predict(model, images)).abs().max() > 1e-3  # this model is not symmetric: TTA changes it


def _symmetrised(model):
    """The model with every kernel averaged over the 8 symmetries of the square: a D4-equivariant network."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                w = module.weight
                module.weight.copy_(torch.stack([dihedral(w, k, f) for k, f in SYMMETRIES]).mean(0))
    return model


def test_tta_leaves_an_equivariant_model_unchanged():
    model = _symmetrised(small("valid", depth=2, base=4))
    # 44 and 52 are output sides of this model, so each is padded by the margin on both sides alike, and a
    # rotated or flipped image sees the rotated or flipped padding and pool grid: the model commutes with D4.
    images = torch.rand(2, 1, 44, 52)
    plain = predict(model, images)
    for k, flip in SYMMETRIES:  # the premise, checked: each transformed pass is the transformed plain pass
        assert_close(predict(model, dihedral(images, k, flip)).numpy(), dihedral(plain, k, flip).numpy())
    assert_close(predict(model, images, tta=True).numpy(), plain.numpy())


# ---------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [({"tile": 0}, "tile must be a positive integer"), ({"batch_size": True}, "batch_size must be a positive"),
     ({"overlap": 1.0}, r"overlap must be a number in \[0, 1\)")],
)  # fmt: skip
def test_bad_options_raise_one_line(kwargs, message):
    with pytest.raises(ValueError, match=message):
        predict_tiled(small(), torch.rand(1, 1, 20, 20), **kwargs)


def test_bad_images_raise_one_line():
    with pytest.raises(ValueError, match=r"images must be a tensor \(N, C, H, W\), got \(20, 20\)"):
        predict(small(), torch.rand(20, 20))
    with pytest.raises(ValueError, match="must not be empty"):
        predict_tiled(small(), torch.rand(0, 1, 20, 20))
