"""The attention U-Net: forward/backward at small sizes with gradients reaching the attention blocks, where the
attention sits, batch norm and dropout throughout, the extra conv block, sizes, seeding and what it stores."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
import torch
from torch import nn

from unet_from_scratch.nn.attention import SelfAttention2d
from unet_from_scratch.nn.attention_unet import AttentionUNet
from unet_from_scratch.nn.unet import DoubleConv, UNet
from unet_from_scratch.reference.init import he_normal

SMALL = dict(in_channels=2, num_classes=3, base_channels=4, num_heads=2)  # heads of 32 and 16 channels


@pytest.mark.parametrize("size", [(32, 32), (48, 48), (32, 48)])
def test_forward_backward_reaches_the_attention_weights(size):
    model = AttentionUNet(**SMALL)
    x = torch.randn(2, 2, *size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 3, *size)  # same padding: the input's size
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    attention = [m for m in model.modules() if isinstance(m, SelfAttention2d)]
    assert len(attention) == 2
    for block in attention:
        for p in (block.qkv.weight, block.proj.weight, block.norm.weight):
            assert p.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "depth, min_stride, expected",
    [
        # (channels, side) of each attention block's input for a 64x64 input with base 4: the bottleneck is at
        # stride 2^depth with 4·2^depth channels, decoder level l (coarsest first) at stride 2^l with 4·2^l.
        (4, 8, [(64, 4), (32, 8)]),  # the default: bottleneck and the stride-8 decoder level
        (4, 4, [(64, 4), (32, 8), (16, 16)]),
        (2, 8, [(16, 16)]),  # the bottleneck always has attention
    ],
)
def test_attention_sits_at_the_bottleneck_and_the_coarse_decoder_levels(depth, min_stride, expected):
    model = AttentionUNet(**SMALL, depth=depth, attention_min_stride=min_stride)
    seen = []
    for m in model.modules():
        if isinstance(m, SelfAttention2d):
            m.register_forward_hook(lambda m, a, out: seen.append((a[0].shape[1], a[0].shape[-1])))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 2, 64, 64))
    assert seen == expected


def test_batch_norm_and_dropout_throughout_and_an_extra_conv_block():
    model = AttentionUNet(**SMALL)
    blocks = [m for m in model.modules() if isinstance(m, DoubleConv)]
    assert len(blocks) == 4 + 1 + 4 + 1  # encoder, bottleneck, decoder, the extra block before the output
    for block in blocks:
        assert isinstance(block.norm1, nn.BatchNorm2d) and isinstance(block.norm2, nn.BatchNorm2d)
        assert block.conv1.bias is None and block.conv2.bias is None  # redundant before batch norm
        assert isinstance(block.dropout, nn.Dropout) and block.dropout.p == 0.2
    assert all(m.dropout.p == 0.2 for m in model.modules() if isinstance(m, SelfAttention2d))
    # The extra block (two 3x3 convs) runs on the last decoder level's output and feeds the 1x1 output conv.
    handed = {}
    model.decoder[-1].register_forward_hook(lambda m, a, out: handed.__setitem__("decoder", out))
    model.refine.register_forward_pre_hook(lambda m, a: handed.__setitem__("refine in", a[0]))
    model.refine.register_forward_hook(lambda m, a, out: handed.__setitem__("refine out", out))
    model.head.register_forward_pre_hook(lambda m, a: handed.__setitem__("head in", a[0]))
    model(torch.randn(2, 2, 32, 32))
    assert handed["refine in"] is handed["decoder"] and handed["head in"] is handed["refine out"]
    assert model.head.kernel_size == (1, 1) and model.refine.conv1.kernel_size == (3, 3)


def test_sizes_same_by_default_and_valid_on_request():
    model = AttentionUNet(**SMALL)
    assert model.output_size(64) == 64
    with pytest.raises(ValueError, match="nearest valid sizes are 32 and 48"):  # multiples of 2^4 = 16
        model(torch.zeros(1, 2, 40, 32))
    # Valid padding, depth 2: n = 4 b + 28 for bottleneck output b; decoding gives 4 b - 12, and the extra block
    # takes 4 more, so b >= 5 (b = 4 would leave 0): the smallest input is 48, its output 4, 4 less than a UNet's.
    valid = AttentionUNet(**SMALL, depth=2, padding="valid")
    assert valid.valid_input_size(1) == 48 and valid.output_size(48) == 4
    assert UNet(depth=2, base_channels=2).output_size(48) == 8
    assert valid(torch.randn(2, 2, 48, 52)).shape == (2, 3, 4, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(dropout=1.0), "dropout must be finite and ≥ 0.0 and < 1.0, got 1.0"),
        (dict(dropout=-0.5), "dropout must be finite and ≥ 0.0 and < 1.0, got -0.5"),
        (dict(dropout=float("nan")), "dropout must be finite and ≥ 0.0 and < 1.0, got nan"),
        (dict(attention_min_stride=0), "attention_min_stride must be a positive integer, got 0"),
        (dict(num_heads=0), "num_heads must be a positive integer, got 0"),
        (dict(seed=-3), "seed must be an integer >= 0, got -3"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        AttentionUNet(**(SMALL | kwargs))


def test_a_float64_input_is_cast_to_the_models_dtype():
    model = AttentionUNet(**SMALL).eval()
    x = torch.randn(1, 2, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)  # was a dtype error from the first convolution
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, model(x.float()), rtol=0, atol=0)


def test_heads_must_divide_the_attended_channels():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        AttentionUNet(base_channels=4, num_heads=3)


def test_seeded_construction_is_reproducible_and_leaves_the_global_generator_alone():
    state = torch.get_rng_state()
    a, b, c = AttentionUNet(**SMALL, seed=5), AttentionUNet(**SMALL, seed=5), AttentionUNet(**SMALL, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    for (name, ta), tb, tc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        if name.endswith("weight") and ta.dim() == 4:  # every conv, the attention blocks' 1x1 convs included
            assert torch.equal(ta, tb) and not torch.equal(ta, tc), name
    # The U-Net convolutions are He-normal from the NumPy reference: the first conv takes the seed's first draws.
    first = he_normal((4, 2, 3, 3), np.random.default_rng(5), fan_in=2 * 9)
    assert np.array_equal(a.encoder[0].conv1.weight.detach().numpy(), np.asarray(first, dtype=np.float32))


def test_normalisation_class_names_and_summary():
    model = AttentionUNet(**SMALL)
    model.set_normalization([0.5, 1.0], [2.0, 4.0])
    model.class_names = ["background", "nucleus", "membrane"]
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = AttentionUNet(**SMALL, seed=1)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.class_names == ["background", "nucleus", "membrane"]
    assert torch.equal(restored.input_mean, torch.tensor([0.5, 1.0]))
    assert torch.equal(restored.input_std, torch.tensor([2.0, 4.0]))
    x = torch.randn(1, 2, 32, 32)
    model.eval(), restored.eval()
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))
    text = model.summary()
    assert "bottleneck_attention" in text and "decoder_attention.0" in text and "refine" in text
    assert text.splitlines()[-1].split()[-1] == f"{sum(p.numel() for p in model.parameters()):,}"
