"""The NumPy U-Net against the torch UNet: the parameter spec against ``named_parameters()`` and ``nn.init.fan_in``,
the initial weights drawn alike, and the forward pass (valid and same padding, with and without batch norm, depth
1-3, training and evaluation, float64) with the same weights; bad configs.

Tolerance of the forward: float64 rtol 1e-8 (atol 1e-10 of the largest logit). Depth 3 chains 15 convolutions,
each summing at most 16 · 9 products; rounding grows about linearly with the layers, far below that.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_close
from unet_from_scratch.nn.init import fan_in
from unet_from_scratch.nn.unet import UNet
from unet_from_scratch.reference.unet import NumpyUNet, unet_buffers, unet_parameters
from unet_from_scratch.sizes import valid_input_size

CONFIGS = [
    dict(),  # the paper's network: 23 convolutions, 31,030,658 parameters
    dict(depth=1, base_channels=4),
    dict(depth=2, base_channels=3, in_channels=3, num_classes=5, batch_norm=True),
    dict(depth=3, base_channels=8, padding="same", dropout=0.5),
    dict(depth=4, base_channels=2, padding="same", batch_norm=True, num_classes=1),
]


@pytest.mark.parametrize("arguments", CONFIGS, ids=str)
def test_unet_parameters_are_the_torch_models_in_order_with_their_fans(arguments):
    model = UNet(**arguments)
    spec = unet_parameters(model.config)
    assert [(n, s) for n, s, _ in spec] == [(n, tuple(p.shape)) for n, p in model.named_parameters()]
    for name, _, fan in spec:
        layer = model.get_submodule(name.rsplit(".", 1)[0])
        if name.endswith(".weight") and isinstance(layer, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            assert fan == fan_in(layer), name
        else:
            assert fan is None, name
    buffers = {n: tuple(b.shape) for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")}
    assert dict(unet_buffers(model.config)) == buffers


def test_the_paper_networks_parameter_count():
    assert sum(np.prod(shape) for _, shape, _ in unet_parameters(UNet().config)) == 31_030_658


@pytest.mark.parametrize("arguments", CONFIGS[1:], ids=str)
def test_numpy_unet_starts_from_the_torch_models_weights(arguments):
    model = UNet(**arguments, seed=7)
    ours = NumpyUNet(model.config, np.random.default_rng(7))
    state = model.state_dict()
    for name, value in ours.params.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, state[name].numpy(), err_msg=name)
    for name, value in ours.buffers.items():
        np.testing.assert_array_equal(value, state[name].numpy(), err_msg=name)


ARCHITECTURES = [(d, p, bn) for d in (1, 2, 3) for p in ("valid", "same") for bn in (False, True)]


@pytest.mark.parametrize("depth, padding, batch_norm", ARCHITECTURES)
@settings(deadline=None, max_examples=3)
@given(seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 2), batch=st.integers(1, 2))
def test_forward_equals_the_torch_unets_in_training_and_evaluation(depth, padding, batch_norm, seed, extra, batch):
    rng = np.random.default_rng(seed)
    model = UNet(in_channels=2, num_classes=3, depth=depth, base_channels=4, padding=padding, batch_norm=batch_norm,
                 seed=seed % 1000).double()  # fmt: skip
    with torch.no_grad():  # every number of the forward away from its initial value: biases, norms, statistics
        for name, p in model.named_parameters():
            if ".norm" in name and name.endswith(".weight"):  # batch-norm scales
                p.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, p.shape)))
            elif name.endswith(".bias"):  # convolution biases and batch-norm shifts
                p.copy_(torch.from_numpy(rng.uniform(-0.2, 0.2, p.shape)))
        model.set_normalization(rng.uniform(-0.5, 0.5, 2), rng.uniform(0.5, 2.0, 2))
    ours = NumpyUNet(model.config, dtype=np.float64)
    ours.load_state_dict(model.state_dict())
    side = valid_input_size(1, depth, padding) + extra * 2**depth
    x = rng.uniform(-2, 2, (batch, 2, side, side + 2**depth))  # (N, 2, H, W), W != H
    tolerance = dict(rtol=1e-8, atol=1e-10)
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        logits = ours.forward(x, training)
        assert logits.dtype == np.float64
        assert_close(logits, expected, name=f"logits (training={training})", **tolerance)
        if batch_norm:  # the running statistics moved alike in training
            for name, value in model.state_dict().items():
                if "running" in name:
                    assert_close(ours.buffers[name], value.numpy(), name=name, **tolerance)


@pytest.mark.parametrize(
    "config, match",
    [
        ([1, 2], "config must be a dict"),
        (dict(UNet(depth=1).config, name="attention_unet"), "config must describe a 'unet'"),
        ({"name": "unet", "depth": 2}, "config is missing in_channels, num_classes, base_channels, padding"),
        (dict(UNet(depth=1).config, base_channels=0), r"config\['base_channels'\] must be a positive integer"),
        (dict(UNet(depth=1).config, padding="full"), "padding"),
        (dict(UNet(depth=1).config, batch_norm=1), r"config\['batch_norm'\] must be a bool"),
    ],
)
def test_bad_configs_raise_one_line_value_errors(config, match):
    with pytest.raises(ValueError, match=match) as error:
        unet_parameters(config)
    assert "\n" not in str(error.value)


def test_bad_inputs_raise_one_line_value_errors():
    ours = NumpyUNet(UNet(depth=1, base_channels=2).config)
    for x, match in [
        (np.zeros((1, 2, 18, 18), np.float32), r"x must have shape \(N, 1, H, W\)"),
        (np.zeros((1, 1, 18, 18)), "x must be float32 like the model, got float64"),
        (np.zeros((1, 1, 19, 18), np.float32), "input height"),
    ]:
        with pytest.raises(ValueError, match=match) as error:
            ours.forward(x)
        assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match=r"state is missing 'encoder.0.conv1.weight'"):
        ours.load_state_dict({})
