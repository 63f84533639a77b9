"""The torch-free size arithmetic (``unet_from_scratch.sizes``) against the networks it describes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from unet_from_scratch import sizes
from unet_from_scratch.nn import AttentionUNet, UNet


def test_the_paper_numbers():
    assert sizes.output_size(572) == 388 and sizes.valid_input_size(570) == 572
    assert sizes.context_margin() == 92  # (572 - 388) / 2
    assert sizes.covering_input(388) == (572, 388) and sizes.covering_input(389) == (588, 404)
    assert sizes.grid_step(4) == 16 and sizes.context_margin(4, "same") == 0


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("extra_convs", [0, 2])
def test_context_margin_is_half_of_what_every_valid_input_loses(depth, extra_convs):
    margin = sizes.context_margin(depth, "valid", extra_convs)
    assert margin == 6 * 2**depth - 4 + extra_convs  # the docstring's closed form
    n = sizes.valid_input_size(1, depth, "valid", extra_convs)
    for _ in range(5):  # the next few valid inputs, each 2^depth further
        assert sizes.output_size(n, depth, "valid", extra_convs) == n - 2 * margin
        assert sizes.valid_input_size(n + 1, depth, "valid", extra_convs) == n + 2**depth
        n += 2**depth


@pytest.mark.parametrize("model", [UNet(depth=2, base_channels=2), UNet(depth=3, base_channels=2, padding="same"),
                                   AttentionUNet(depth=2, base_channels=4, num_heads=1, padding="valid")])  # fmt: skip
def test_the_models_give_what_the_arithmetic_says(model):
    extra = model.extra_convs
    n = sizes.covering_input(30, model.depth, model.padding, extra)[0]
    with torch.no_grad():
        out = model(torch.zeros(1, 1, n, n + 2**model.depth))
    assert out.shape[-2:] == (sizes.output_size(n, model.depth, model.padding, extra),
                              sizes.output_size(n + 2**model.depth, model.depth, model.padding, extra))  # fmt: skip
    assert out.shape[-1] - out.shape[-2] == 2**model.depth


def test_bad_arguments_raise_one_line():
    with pytest.raises(ValueError, match="depth must be a positive integer, got True"):
        sizes.output_size(572, depth=True)
    with pytest.raises(ValueError, match="padding must be one of"):
        sizes.valid_input_size(10, padding="full")
    with pytest.raises(ValueError, match="size must be a positive integer, got 0"):
        sizes.covering_input(0)


def test_sizes_imports_no_torch():
    code = "import sys, unet_from_scratch.sizes; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
