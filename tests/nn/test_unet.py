"""The paper's U-Net: its sizes and layer counts against Ronneberger et al. 2015, its parameters against a hand
count, its initialisation against the NumPy he_normal, a forward/backward in every configuration, and what it
stores (normalisation, class names) through state_dict()."""

from __future__ import annotations

import io
import itertools
import re

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from tests.helpers import assert_close
from unet_from_scratch.nn.init import init_from_spec_
from unet_from_scratch.nn.unet import DoubleConv, UNet, Up, center_crop, output_size, valid_input_size
from unet_from_scratch.reference.crop import center_crop as reference_center_crop
from unet_from_scratch.reference.init import he_normal
from unet_from_scratch.reference.unet import unet_parameters

# The paper's Fig. 1, read off the figure: (k, C_in, C_out) of every convolution in forward order. 3x3 convs in
# pairs per level, 2x2 up-convs halving the channels, whose output is concatenated with the skip (so the next
# conv sees twice the channels), and the final 1x1 conv to two classes.
PAPER_LAYERS = [
    (3, 1, 64), (3, 64, 64),
    (3, 64, 128), (3, 128, 128),
    (3, 128, 256), (3, 256, 256),
    (3, 256, 512), (3, 512, 512),
    (3, 512, 1024), (3, 1024, 1024),
    (2, 1024, 512), (3, 1024, 512), (3, 512, 512),
    (2, 512, 256), (3, 512, 256), (3, 256, 256),
    (2, 256, 128), (3, 256, 128), (3, 128, 128),
    (2, 128, 64), (3, 128, 64), (3, 64, 64),
    (1, 64, 2),
]  # fmt: skip


def paper_parameter_count() -> int:
    """Every layer has k·k·C_in·C_out weights and C_out biases (the up-convs too: C_in·C_out 2x2 kernels)."""
    return sum(k * k * c_in * c_out + c_out for k, c_in, c_out in PAPER_LAYERS)


def conv_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@pytest.fixture(scope="module")
def paper_unet() -> UNet:
    return UNet()


# ---------------------------------------------------------------------------------------------------------------
# The paper's numbers


def test_paper_network_has_23_conv_layers_and_the_hand_counted_parameters(paper_unet):
    layers = conv_layers(paper_unet)
    assert len(layers) == 23  # "In total the network has 23 convolutional layers." (Sec. 2)
    found = [(m.kernel_size[0], m.in_channels, m.out_channels) for m in layers]
    assert found == PAPER_LAYERS
    assert sum(isinstance(m, nn.ConvTranspose2d) and m.stride == (2, 2) for m in layers) == 4
    assert all(m.padding == (0, 0) for m in layers)  # unpadded convolutions
    assert sum(p.numel() for p in paper_unet.parameters()) == paper_parameter_count() == 31_030_658


@pytest.mark.parametrize("depth", [1, 2, 3, 5])
def test_conv_layer_count_follows_the_depth(depth):
    # Counted from the paper's description, not from the figure: 2 convs per contracting level and 2 at the
    # bottleneck (2·depth + 2), an up-conv and 2 convs per expanding level (3·depth), one 1x1 conv: 5·depth + 3,
    # which is the paper's 23 at depth 4 (the test above).
    layers = conv_layers(UNet(depth=depth, base_channels=2))
    assert len(layers) == 5 * depth + 3
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in layers) == depth
    assert sum(m.kernel_size == (3, 3) for m in layers) == 4 * depth + 2


def test_summary_prints_blocks_whose_counts_add_up_to_the_total(paper_unet, capsys):
    text = paper_unet.summary()
    assert capsys.readouterr().out == text + "\n"  # printed, and returned for whoever wants the string
    rows = [line for line in text.splitlines()[2:] if not line.startswith("total")]
    assert [line.split()[0] for line in rows] == [
        "encoder.0", "encoder.1", "encoder.2", "encoder.3", "bottleneck",
        "decoder.0", "decoder.1", "decoder.2", "decoder.3", "head",
    ]  # fmt: skip
    counts = [int(line.split()[-1].replace(",", "")) for line in rows]
    total = int(text.splitlines()[-1].split()[-1].replace(",", ""))
    assert sum(counts) == total == paper_parameter_count()


def test_size_arithmetic_gives_the_paper_numbers():
    assert output_size(572) == 388
    # Valid inputs recur every 2^4 = 16 pixels (each max-pool halves), so the neighbours of 572 are 556 and 588.
    assert output_size(556) == 372 and output_size(588) == 404
    assert valid_input_size(557) == valid_input_size(572) == 572
    # Same padding keeps the size but needs it divisible by 16: 572 = 16 * 35.75 is not.
    assert output_size(576, padding="same") == 576 and output_size(64, depth=4, padding="same") == 64
    with pytest.raises(ValueError, match="nearest valid sizes are 560 and 576"):
        output_size(572, padding="same")


def test_feature_sizes_and_skip_crops_match_figure_1():
    # Fig. 1's side lengths: the encoder levels end at 568, 280, 136, 64 (after two 3x3 convs: 572-4, 284-4, ...),
    # the bottleneck at 28; each up-conv doubles (28 -> 56) and the skip is cropped to that size
    # (64 -> 56, 136 -> 104, 280 -> 200, 568 -> 392); each decoder level ends 4 smaller (52, 100, 196, 388).
    model = UNet(base_channels=4)  # the sizes do not depend on the channels; 4 keeps a 572 input cheap
    seen: dict[str, list] = {"encoder": [], "bottleneck": [], "skip": [], "up": [], "decoder": [], "head": []}
    for block in model.encoder:
        block.register_forward_hook(lambda m, a, out: seen["encoder"].append(tuple(out.shape[1:])))
    model.bottleneck.register_forward_hook(lambda m, a, out: seen["bottleneck"].append(tuple(out.shape[1:])))
    for block in model.decoder:
        block.register_forward_hook(lambda m, a, out: seen["skip"].append(a[1].shape[-1]))
        block.up.register_forward_hook(lambda m, a, out: seen["up"].append(out.shape[-1]))
        block.conv.register_forward_pre_hook(lambda m, a: seen["decoder"].append(a[0].shape[-1]))
        block.register_forward_hook(lambda m, a, out: seen["decoder"].append(out.shape[-1]))
    model.head.register_forward_hook(lambda m, a, out: seen["head"].append(tuple(out.shape)))
    with torch.no_grad():
        model(torch.zeros(1, 1, 572, 572))
    assert seen["encoder"] == [(4, 568, 568), (8, 280, 280), (16, 136, 136), (32, 64, 64)]
    assert seen["bottleneck"] == [(64, 28, 28)]
    assert list(zip(seen["skip"], seen["up"])) == [(64, 56), (136, 104), (280, 200), (568, 392)]
    assert seen["decoder"] == [56, 52, 104, 100, 200, 196, 392, 388]  # concat size, then 4 smaller
    assert seen["head"] == [(1, 2, 388, 388)]


def test_summary_with_an_input_size_shows_the_shapes_and_leaves_the_model_untouched():
    model = UNet(base_channels=4, batch_norm=True)
    running = model.encoder[0].norm1.running_mean.clone()
    text = model.summary(572)
    assert "(1, 4, 568, 568)" in text and "(1, 64, 28, 28)" in text and "(1, 2, 388, 388)" in text
    assert model.training
    assert torch.equal(model.encoder[0].norm1.running_mean, running)  # eval mode: batch statistics not updated


# ---------------------------------------------------------------------------------------------------------------
# Wrong sizes fail at the door


@pytest.mark.parametrize(
    "padding, depth, size, nearest",
    [
        # depth 4, valid: n = 16 b + 124 for bottleneck output b >= 4 (b = 3 would decode 3 -> 2 -> 0).
        ("valid", 4, 570, (556, 572)),
        ("valid", 4, 100, (188,)),
        # depth 1, valid: n = 2 b + 12 for b >= 3 (b = 2 would decode to 0): 18, 20, 22, ...
        ("valid", 1, 19, (18, 20)),
        ("valid", 1, 5, (18,)),
        # same padding: multiples of 2^depth.
        ("same", 4, 50, (48, 64)),
        ("same", 2, 3, (4,)),
    ],
)
def test_wrong_input_size_raises_naming_the_nearest_valid_sizes(padding, depth, size, nearest):
    if len(nearest) == 2:
        expected = rf"nearest valid sizes are {nearest[0]} and {nearest[1]}$"
    else:
        expected = rf"smallest valid size is {nearest[0]}$"
    with pytest.raises(ValueError, match=expected):
        output_size(size, depth, padding)
    assert valid_input_size(size, depth, padding) == nearest[-1]
    model = UNet(depth=depth, base_channels=2, padding=padding)
    layer_calls = []
    model.encoder[0].register_forward_pre_hook(lambda m, a: layer_calls.append(1))
    good = nearest[-1]
    with pytest.raises(ValueError, match=r"^input width " + str(size) + " .*" + expected):
        model(torch.zeros(1, 1, good, size))
    with pytest.raises(ValueError, match=r"^input height " + str(size) + " .*" + expected):
        model(torch.zeros(1, 1, size, good))
    assert layer_calls == []  # rejected before any layer ran


def test_wrong_rank_or_channels_raise_value_error():
    model = UNet(in_channels=3, base_channels=2, depth=1, padding="same")
    for bad in (torch.zeros(3, 16, 16), torch.zeros(1, 1, 16, 16), torch.zeros(1, 3, 1, 16, 16)):
        with pytest.raises(ValueError, match=r"shape \(N, 3, H, W\)"):
            model(bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(depth=0), "depth must be a positive integer, got 0"),
        (dict(depth=True), "depth must be a positive integer, got True"),
        (dict(padding="reflect"), "padding must be one of"),
        (dict(base_channels=0), "base_channels must be a positive integer"),
        (dict(in_channels=1.5), "in_channels must be a positive integer"),
        (dict(num_classes=0), "num_classes must be a positive integer"),
        (dict(dropout=1.0), "dropout must be finite and ≥ 0.0 and < 1.0, got 1.0"),
        (dict(dropout=-0.5), "dropout must be finite and ≥ 0.0 and < 1.0, got -0.5"),
        (dict(dropout=float("nan")), "dropout must be finite and ≥ 0.0 and < 1.0, got nan"),
        (dict(dropout="0.5"), "dropout must be a real number"),
        (dict(seed=-1), "seed must be an integer >= 0, got -1"),
    ],
)
def test_bad_configuration_raises_value_error(kwargs, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        UNet(**kwargs)


def test_numpy_integers_configure_a_model_with_a_plain_config():
    model = UNet(depth=np.int64(2), base_channels=np.int64(2), seed=np.int64(3), dropout=np.float32(0.5))
    assert model.config == UNet(depth=2, base_channels=2, seed=3, dropout=0.5).config
    assert all(type(v) in (str, int, float, bool) for v in model.config.values())
    assert type(model.bottleneck.dropout.p) is float and model.bottleneck.dropout.p == 0.5


def test_an_input_of_another_dtype_is_cast_to_the_models():
    model = UNet(depth=2, base_channels=2, padding="same").eval()
    model.set_normalization(0.3, 2.0)
    x = torch.randn(2, 1, 8, 12, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x.float())
        out = model(x)  # float64 into a float32 model: cast, not a dtype error from the first convolution
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        image = torch.randint(0, 256, (1, 1, 8, 8), dtype=torch.uint8)  # an integer image, cast the same way
        torch.testing.assert_close(model(image), model(image.float()), rtol=0, atol=0)
        double = UNet(depth=2, base_channels=2, padding="same").double().eval()
        double.set_normalization(0.3, 2.0)
        assert double(x.float()).dtype == torch.float64  # a float32 input to a float64 model
        torch.testing.assert_close(double(x.float()), double(x.float().double()), rtol=0, atol=0)
        # Under autocast a float32 input stays autocast's business; float64 is cast, as autocast leaves it alone.
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model(x).dtype == torch.bfloat16 and model(x.float()).dtype == torch.bfloat16
    for bad, message in ((x > 0, "bool"), (x.numpy(), "ndarray")):
        with pytest.raises(ValueError, match=f"^input must be a .*{message}"):
            model(bad)


# ---------------------------------------------------------------------------------------------------------------
# Every configuration runs forward and backward


@pytest.mark.parametrize(
    "padding, batch_norm, dropout, depth",
    list(itertools.product(["valid", "same"], [False, True], [0.0, 0.5], [1, 2, 3, 4])),
)
def test_forward_backward_every_configuration(padding, batch_norm, dropout, depth):
    model = UNet(
        in_channels=2, num_classes=3, depth=depth, base_channels=2,
        padding=padding, batch_norm=batch_norm, dropout=dropout,
    )  # fmt: skip
    h = valid_input_size(1, depth, padding)  # the smallest input, and a wider one (H != W catches a swap)
    w = valid_input_size(h + 1, depth, padding)
    x = torch.randn(2, 2, h, w, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 3, output_size(h, depth, padding), output_size(w, depth, padding))
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_dropout_sits_at_the_end_of_the_contracting_path():
    model = UNet(depth=3, base_channels=2, dropout=0.5)
    dropouts = {name: m.p for name, m in model.named_modules() if isinstance(m, nn.Dropout)}
    assert dropouts == {"encoder.2.dropout": 0.5, "bottleneck.dropout": 0.5}
    assert not any(isinstance(m, nn.Dropout) for m in UNet(depth=3, base_channels=2).modules())


def test_skip_connection_is_the_centre_crop_concatenated_first():
    up = Up(8)  # x (N, 8, 5, 5) -> up-conv (N, 4, 10, 10); skip (N, 4, 16, 16) cropped at offset 3
    x, skip = torch.randn(1, 8, 5, 5), torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        up.conv.conv1.weight[:, 4:] = 0  # now only the skip (the first 4 channels of the concat) reaches the output
        base = up(x, skip)
        border = skip.clone()
        border[..., :3, :] += 1.0
        border[..., :, 13:] += 1.0  # outside the centre window rows/cols 3..12
        assert torch.equal(up(x, border), base)
        assert torch.equal(up(torch.randn_like(x), skip), base)
        centre = skip.clone()
        centre[..., 3:13, 3:13] += 1.0
        assert not torch.allclose(up(x, centre), base)


@pytest.mark.parametrize("big, small", [((14, 14), (10, 10)), ((9, 12), (4, 7)), ((568, 568), (392, 392))])
def test_center_crop_matches_the_reference(big, small):
    x = np.random.default_rng(0).standard_normal((2, 3, *big)).astype(np.float32)
    assert np.array_equal(center_crop(torch.from_numpy(x), small).numpy(), reference_center_crop(x, small)[0])


def test_double_conv_shapes():
    x = torch.randn(2, 3, 11, 13)
    assert DoubleConv(3, 5)(x).shape == (2, 5, 7, 9)
    assert DoubleConv(3, 5, padding="same", batch_norm=True)(x).shape == (2, 5, 11, 13)


# ---------------------------------------------------------------------------------------------------------------
# He-normal initialisation


def incoming_nodes(layer: nn.Module) -> int:
    """N, "the number of incoming nodes of one neuron" (paper Sec. 3): C_in·k·k for a conv; the 2x2 stride-2
    up-conv gives every output pixel exactly one kernel tap of each input channel, so N = C_in."""
    return layer.in_channels if isinstance(layer, nn.ConvTranspose2d) else layer.in_channels * layer.kernel_size[0] ** 2


def test_conv_weights_have_he_statistics(paper_unet):
    alpha = 1e-6  # per layer, two-sided; 23 layers x 3 checks stays far below one false alarm in 10^4 seeds
    for layer in conv_layers(paper_unet):
        w = layer.weight.detach().numpy().astype(np.float64).ravel()
        sigma, n = np.sqrt(2.0 / incoming_nodes(layer)), w.size
        # (n - 1) s² / σ² ~ chi²(n - 1) for normal draws: the sample variance within its exact two-sided bounds.
        ratio = w.var(ddof=1) / sigma**2
        low, high = stats.chi2.ppf([alpha / 2, 1 - alpha / 2], n - 1) / (n - 1)
        assert low < ratio < high, f"{layer}: var / (2/fan_in) = {ratio:.4f} outside [{low:.4f}, {high:.4f}]"
        assert abs(w.mean()) < stats.norm.ppf(1 - alpha / 2) * sigma / np.sqrt(n), f"{layer}: mean {w.mean()}"
        assert torch.count_nonzero(layer.bias) == 0


def test_conv_weights_follow_the_numpy_he_normal_distribution(paper_unet):
    # At most 50k draws of each side: enough to tell a factor sqrt(2) in std, cheap for the 9.4M-weight layers.
    rng = np.random.default_rng(2026)  # independent of the model's seed
    for layer in conv_layers(paper_unet):
        shape = tuple(layer.weight.shape)
        rows = min(shape[0], -(-50_000 // int(np.prod(shape[1:]))))
        ours = layer.weight.detach().numpy()[:rows].ravel()
        theirs = np.asarray(he_normal((rows, *shape[1:]), rng, fan_in=incoming_nodes(layer))).ravel()
        assert stats.ks_2samp(ours, theirs).pvalue > 1e-4, layer
    # The same test rejects torch's default init (uniform, std 1/sqrt(3·fan_in)) on a layer of the same shape:
    # it can tell the distributions apart.
    default = nn.Conv2d(128, 128, 3).weight.detach().numpy()[:44].ravel()
    reference = np.asarray(he_normal((44, 128, 3, 3), rng, fan_in=128 * 9)).ravel()
    assert stats.ks_2samp(default, reference).pvalue < 1e-10


def test_initialisation_is_the_reference_draw_for_the_seed():
    model = UNet(base_channels=4, seed=7)
    first = he_normal((4, 1, 3, 3), np.random.default_rng(7), fan_in=9)  # the first conv takes the first draws
    assert np.array_equal(model.encoder[0].conv1.weight.detach().numpy(), np.asarray(first, dtype=np.float32))
    again, other = UNet(base_channels=4, seed=7), UNet(base_channels=4, seed=8)
    for (name, a), b, c in zip(model.state_dict().items(), again.state_dict().values(), other.state_dict().values()):
        if name.endswith("weight") and a.dim() == 4:
            assert torch.equal(a, b) and not torch.equal(a, c), name


def test_batch_norm_starts_as_the_identity_and_biases_at_zero():
    model = UNet(depth=2, base_channels=3, batch_norm=True, seed=4)
    for name, p in model.named_parameters():
        if ".norm" in name:
            assert torch.equal(p, torch.ones_like(p) if name.endswith(".weight") else torch.zeros_like(p)), name
        elif name.endswith(".bias"):
            assert torch.count_nonzero(p) == 0, name


def test_init_from_spec_refuses_a_spec_that_is_not_the_modules():
    model = UNet(depth=1, base_channels=2)
    spec = unet_parameters(model.config)
    before = {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    with pytest.raises(ValueError, match=r"entry 0 is \('stem.weight', \(1,\)\) in the spec, \('encoder.0.conv1"):
        init_from_spec_(model, [("stem.weight", (1,), None)] + spec)
    with pytest.raises(ValueError, match=r"entry 1 is \('encoder.0.norm1.weight', \(2,\)\) in the spec"):
        init_from_spec_(model, unet_parameters(model.config | {"batch_norm": True}))
    with pytest.raises(ValueError, match=rf"entry {len(spec) - 1} is nothing in the spec, \('head.bias', \(2,\)\)"):
        init_from_spec_(model, spec[:-1])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # nothing drawn before the check


# ---------------------------------------------------------------------------------------------------------------
# What the model stores: normalisation and class names


def test_normalisation_is_applied_before_the_first_layer():
    model = UNet(in_channels=2, depth=2, base_channels=2, padding="same")
    plain = UNet(in_channels=2, depth=2, base_channels=2, padding="same")
    mean, std = [1.5, -2.0], [0.5, 3.0]
    model.set_normalization(mean, std)
    x = torch.randn(1, 2, 8, 12)
    standardised = (x - torch.tensor(mean).view(1, 2, 1, 1)) / torch.tensor(std).view(1, 2, 1, 1)
    with torch.no_grad():
        # float32, the same operations in the same order: only the normalisation's rounding differs.
        assert_close(model(x).numpy(), plain(standardised).numpy(), name="normalised forward")


def test_normalisation_and_class_names_round_trip_through_state_dict():
    model = UNet(in_channels=2, num_classes=3, depth=1, base_channels=2, padding="same")
    assert model.class_names == ["class_0", "class_1", "class_2"]
    assert torch.equal(model.input_mean, torch.zeros(2)) and torch.equal(model.input_std, torch.ones(2))
    model.set_normalization([0.25, 0.75], [0.1, 2.0])
    model.class_names = ["background", "cell", "border"]
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    restored = UNet(in_channels=2, num_classes=3, depth=1, base_channels=2, padding="same", seed=1)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.class_names == ["background", "cell", "border"]
    assert torch.equal(restored.input_mean, torch.tensor([0.25, 0.75]))
    assert torch.equal(restored.input_std, torch.tensor([0.1, 2.0]))
    x = torch.randn(1, 2, 4, 6)
    with torch.no_grad():
        assert torch.equal(restored(x), model(x))


def test_two_class_default_names_and_bad_values_rejected():
    model = UNet(depth=1, base_channels=2, padding="same")
    assert model.class_names == ["background", "foreground"]
    with pytest.raises(ValueError, match="class_names must be 2 strings"):
        model.class_names = ["only one"]
    with pytest.raises(ValueError, match="class_names must be 2 strings"):
        model.load_state_dict({**model.state_dict(), "_extra_state": {"class_names": ["a", "b", "c"]}})
    for mean, std in (([0.0, 1.0], 1.0), (0.0, 0.0), (float("nan"), 1.0), (0.0, -1.0)):
        with pytest.raises(ValueError, match=re.escape("must be")):
            model.set_normalization(mean, std)
