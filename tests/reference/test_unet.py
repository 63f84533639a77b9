"""The NumPy U-Net against the torch UNet: the parameter spec against ``named_parameters()`` and each torch layer's
fan (``nn.init.layer_fan_in``), the initial weights bitwise alike (depth 1-4, valid and same, with and without batch
norm, several seeds: both draw ``unet_parameters`` in order), the forward pass (valid and same padding, with and
without batch norm, depth 1-4, training and evaluation, float64) with the same weights, the state dict both ways,
and the backward pass: every parameter gradient against torch autograd (a linear loss sum(logits · R), so
dlogits = R; the combined loss; dropout with the same masks on both sides) and five optimizer steps against
``torch.optim``; bad configs and inputs.

Tolerance of the forward: float64 rtol 1e-8 (atol 1e-10 of the largest logit). Depth 3 chains 15 convolutions,
each summing at most 16 · 9 products; rounding grows about linearly with the layers, far below that.

Tolerance of the gradients (atol relative to the largest gradient of the tensor, as ``assert_close``): float64 rtol
1e-8, atol 1e-10, the forward's, as the backward walks the same chain once more. float32 rtol 1e-4, atol 5e-5
(the float32 gradient atol of ``tests.helpers``): eps is 1.2e-7, a weight gradient sums N·H·W products (up to
~10^4 here) in another order than torch's, and batch norm's dx = (M dy - Σdy - x̂ Σdy·x̂) / M subtracts sums of
that size, leaving small entries an absolute error of some eps times the largest: up to 8e-6 seen. Batch norm over
very few values (M = 4 in the bottleneck of the smallest same-padded input) divides by the std of those few and
amplifies rounding further (3e-5 seen), so the float32 cases take an input one size step larger, M >= 12.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers import assert_close
from unet_from_scratch.nn.init import layer_fan_in
from unet_from_scratch.nn.losses import combined_loss_torch
from unet_from_scratch.nn.unet import UNet
from unet_from_scratch.reference import optim
from unet_from_scratch.reference.losses import combined_loss
from unet_from_scratch.reference.unet import NumpyUNet, unet_buffers, unet_parameters
from unet_from_scratch.sizes import valid_input_size

@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These networks are tiny: handing each small convolution to a pool of threads costs more than the work
    (on a busy machine a hundredfold), so torch runs on one thread here, and the count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
            assert fan == layer_fan_in(layer), name
        else:
            assert fan is None, name
    buffers = {n: tuple(b.shape) for n, b in model.named_buffers() if not n.endswith("num_batches_tracked")}
    assert dict(unet_buffers(model.config)) == buffers


def test_the_paper_networks_parameter_count():
    assert sum(np.prod(shape) for _, shape, _ in unet_parameters(UNet().config)) == 31_030_658


INIT_CONFIGS = CONFIGS[1:] + [
    dict(depth=d, base_channels=3, in_channels=2, padding=p, batch_norm=bn)
    for d in (1, 2, 3, 4)
    for p in ("valid", "same")
    for bn in (False, True)
]


@pytest.mark.parametrize("seed", [0, 7, 2026])
@pytest.mark.parametrize("arguments", INIT_CONFIGS, ids=str)
def test_numpy_unet_starts_from_the_torch_models_weights(arguments, seed):
    model = UNet(**arguments, seed=seed)
    ours = NumpyUNet(model.config, np.random.default_rng(seed))
    assert list(ours.params) == [name for name, _ in model.named_parameters()]
    state = model.state_dict()
    for name, value in ours.params.items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, state[name].numpy(), err_msg=name)
    for name, value in ours.buffers.items():
        np.testing.assert_array_equal(value, state[name].numpy(), err_msg=name)


ARCHITECTURES = [(d, p, bn) for d in (1, 2, 3) for p in ("valid", "same") for bn in (False, True)]
ARCHITECTURES += [(4, "valid", True), (4, "same", False)]  # the paper's depth: two of its four variants
TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def unet_pair(rng: np.random.Generator, dtype=np.float64, base_channels: int = 4, **arguments):
    """A torch UNet (2 input channels, 3 classes) in ``dtype`` with every number of its forward away from its
    initial value (biases, norms, input statistics), and the NumpyUNet holding the same weights."""
    arguments = dict(in_channels=2, num_classes=3, base_channels=base_channels) | arguments
    model = UNet(**arguments, seed=int(rng.integers(1000))).to(TORCH_DTYPES[np.dtype(dtype)])
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm" in name and name.endswith(".weight"):  # batch-norm scales
                p.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, p.shape)))
            elif name.endswith(".bias"):  # convolution biases and batch-norm shifts
                p.copy_(torch.from_numpy(rng.uniform(-0.2, 0.2, p.shape)))
        model.set_normalization(rng.uniform(-0.5, 0.5, 2), rng.uniform(0.5, 2.0, 2))
    ours = NumpyUNet(model.config, dtype=dtype)
    ours.load_state_dict(model.state_dict())
    return model, ours


def unet_input(rng: np.random.Generator, model: UNet, dtype=np.float64, extra: int = 0, batch: int = 2):
    """A batch (N, 2, H, W) of the smallest size ``model`` takes (plus ``extra`` steps), W != H."""
    side = valid_input_size(1, model.depth, model.padding) + extra * 2**model.depth
    return rng.uniform(-2, 2, (batch, 2, side, side + 2**model.depth)).astype(dtype)


@pytest.mark.parametrize("depth, padding, batch_norm", ARCHITECTURES)
@settings(deadline=None, max_examples=3)
@given(seed=st.integers(0, 2**32 - 1), extra=st.integers(0, 2), batch=st.integers(1, 2))
def test_forward_equals_the_torch_unets_in_training_and_evaluation(depth, padding, batch_norm, seed, extra, batch):
    rng = np.random.default_rng(seed)
    model, ours = unet_pair(rng, depth=depth, padding=padding, batch_norm=batch_norm)
    x = unet_input(rng, model, extra=extra, batch=batch)
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("arguments", [dict(depth=2, batch_norm=True), dict(depth=1, padding="same", num_classes=2)],
                         ids=str)  # fmt: skip
def test_the_state_dict_goes_torch_to_numpy_to_torch_unchanged(arguments, dtype):
    rng = np.random.default_rng(3)
    model, _ = unet_pair(rng, dtype, **arguments)
    model.class_names = [f"kind {i}" for i in range(model.num_classes)]
    model.train()
    with torch.no_grad():  # move the running statistics and batch counts away from their initial values
        for _ in range(2):
            model(torch.from_numpy(unet_input(rng, model, dtype)))
    ours = NumpyUNet(model.config, dtype=dtype)
    ours.load_state_dict(model.state_dict())
    state = ours.to_torch_state_dict()
    architecture = {k: v for k, v in model.config.items() if k != "name"}
    back = UNet(**architecture | {"seed": 1}).to(TORCH_DTYPES[np.dtype(dtype)])  # other weights, overwritten
    back.load_state_dict({k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in state.items()})
    expected = model.state_dict()
    assert list(back.state_dict()) == list(expected)
    for name, value in back.state_dict().items():
        if name == "_extra_state":
            assert value == expected[name] == {"class_names": model.class_names}
        else:
            assert value.dtype == expected[name].dtype and torch.equal(value, expected[name]), name
    if arguments.get("batch_norm"):
        assert int(back.state_dict()["encoder.0.norm1.num_batches_tracked"]) == 2


def test_training_forwards_move_the_state_as_the_torch_models():
    rng = np.random.default_rng(4)
    model, ours = unet_pair(rng, depth=2, batch_norm=True)
    model.train()
    for training in (True, True, False):
        x = unet_input(rng, model)
        model.train(training)
        with torch.no_grad():
            model(torch.from_numpy(x))
        ours.forward(x, training)
    state = ours.to_torch_state_dict()
    assert state.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        if name == "_extra_state":
            assert state[name] == value
        elif "num_batches_tracked" in name:
            assert state[name].dtype == np.int64 and state[name] == value.item() == 2, name
        else:
            assert_close(state[name], value.numpy(), name=name, rtol=1e-8, atol=1e-10)


GRAD_TOLERANCE = {np.dtype(np.float64): dict(rtol=1e-8, atol=1e-10), np.dtype(np.float32): dict(rtol=1e-4, atol=5e-5)}


def vanishing_gradients(model: UNet) -> list[str]:
    """The parameters whose gradient is exactly 0 in training: with "valid" padding and batch norm, the
    up-convolutions' biases (a constant per channel stays a constant through a valid convolution, and batch norm
    removes it). Only rounding noise stands in their place."""
    if model.padding == "valid" and isinstance(model.bottleneck.norm1, torch.nn.BatchNorm2d):
        return [f"decoder.{j}.up.bias" for j in range(model.depth)]
    return []


def assert_gradients_equal(grads: dict, model: UNet, dtype) -> None:
    """``grads`` holds every parameter of ``model``, in its order and dtype, each equal to the autograd gradient
    (the vanishing ones: both 0 up to rounding)."""
    assert list(grads) == [name for name, _ in model.named_parameters()]
    tolerance = GRAD_TOLERANCE[np.dtype(dtype)]
    for name, p in model.named_parameters():
        expected = p.grad.numpy()
        assert grads[name].dtype == dtype, name
        if name in vanishing_gradients(model):
            for gradient in (grads[name], expected):
                assert_close(gradient, np.zeros_like(gradient), kind="grad", name=name, atol=tolerance["atol"])
        else:
            assert np.abs(expected).max() > 1e-3, f"{name}: a gradient this small would compare nothing"
            assert_close(grads[name], expected, kind="grad", name=name, **tolerance)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("depth, padding, batch_norm", ARCHITECTURES)
def test_backward_equals_torch_autograd_in_training(depth, padding, batch_norm, dtype):
    rng = np.random.default_rng([depth, len(padding), batch_norm])
    model, ours = unet_pair(rng, dtype, base_channels=3, depth=depth, padding=padding, batch_norm=batch_norm)
    x = unet_input(rng, model, dtype, extra=int(dtype == np.float32))  # float32: see the module docstring
    model.train()
    logits = model(torch.from_numpy(x))
    r = rng.standard_normal(logits.shape).astype(dtype)  # loss sum(logits · R): dlogits = R
    (logits * torch.from_numpy(r)).sum().backward()
    assert_close(ours.forward(x, training=True), logits.detach().numpy(), name="logits")
    assert_gradients_equal(ours.backward(r), model, dtype)


@pytest.mark.parametrize(
    "dtype, depth, padding, batch_norm",
    [(np.float64, 2, "valid", True), (np.float64, 3, "same", False), (np.float32, 2, "same", True)],
)
def test_backward_of_the_combined_loss_equals_torch_autograd(dtype, depth, padding, batch_norm):
    rng = np.random.default_rng(depth)
    model, ours = unet_pair(rng, dtype, base_channels=3, depth=depth, padding=padding, batch_norm=batch_norm)
    x = unet_input(rng, model, dtype)
    model.train()
    logits = model(torch.from_numpy(x))
    target = rng.integers(0, 3, (logits.shape[0], *logits.shape[2:]))  # (N, H_out, W_out)
    pixel_weights = rng.uniform(0.5, 3.0, target.shape).astype(dtype)
    class_weights = np.array([0.5, 1.0, 2.0], dtype)
    options = dict(alpha=0.3, gamma=2.0, smooth=1.0, coefficients=(0.5, 0.3, 0.2))
    expected = combined_loss_torch(logits, torch.from_numpy(target), torch.from_numpy(pixel_weights),
                                   torch.from_numpy(class_weights), **options)  # fmt: skip
    expected.backward()
    loss, dlogits = combined_loss(ours.forward(x, training=True), target, pixel_weights, class_weights, **options)
    assert_close(loss, expected.detach().numpy(), name="loss")
    assert_gradients_equal(ours.backward(dlogits), model, dtype)


def test_backward_with_dropout_equals_torch_autograd_with_the_same_masks():
    rng = np.random.default_rng(5)
    model, ours = unet_pair(rng, base_channels=3, depth=2, padding="same", dropout=0.5)
    x = unet_input(rng, model)
    ours_logits = ours.forward(x, training=True)
    masks = {name: cache["mask"] for name, cache in ours.caches if cache["layer"] == "dropout"}
    assert sorted(masks) == ["bottleneck.dropout", "encoder.1.dropout"]
    assert all(0 < mask.mean() < 1 for mask in masks.values())  # something dropped, something kept

    def same_mask(mask):  # the torch Dropout's output replaced by the NumPy mask's, as a forward hook may
        return lambda module, inputs, output: inputs[0] * torch.from_numpy(mask) * (1.0 / (1.0 - module.p))

    for name, mask in masks.items():
        model.get_submodule(name).register_forward_hook(same_mask(mask))
    model.train()
    logits = model(torch.from_numpy(x))
    r = rng.standard_normal(logits.shape)
    (logits * torch.from_numpy(r)).sum().backward()
    assert_close(ours_logits, logits.detach().numpy(), name="logits")
    assert_gradients_equal(ours.backward(r), model, np.float64)


OPTIMIZERS = [  # (reference.optim class, its options, the torch.optim class, the same options in torch's names)
    ("SGD", dict(lr=0.01, momentum=0.9, weight_decay=1e-3), "SGD", dict(lr=0.01, momentum=0.9, weight_decay=1e-3)),
    ("Adam", dict(lr=1e-3, b1=0.8, b2=0.99, eps=1e-8), "Adam", dict(lr=1e-3, betas=(0.8, 0.99), eps=1e-8)),
    ("RMSProp", dict(lr=1e-3, alpha=0.9, momentum=0.5), "RMSprop", dict(lr=1e-3, alpha=0.9, momentum=0.5)),
]


@pytest.mark.parametrize("kind, options, torch_kind, torch_options", OPTIMIZERS, ids=[o[0] for o in OPTIMIZERS])
def test_five_training_steps_equal_torch_optims(kind, options, torch_kind, torch_options):
    rng = np.random.default_rng(6)
    # "same" padding: with "valid" padding and batch norm the up-convolutions' biases have no gradient
    # (``vanishing_gradients``), and Adam and RMSProp would scale the rounding noise in its place up to full steps.
    model, ours = unet_pair(rng, base_channels=3, depth=2, padding="same", batch_norm=True)
    start = {name: p.detach().clone().numpy() for name, p in model.named_parameters()}
    ours_optimizer = getattr(optim, kind)(ours.params, **options)
    torch_optimizer = getattr(torch.optim, torch_kind)(model.parameters(), **torch_options)
    model.train()
    for _ in range(5):  # a fresh batch and a fresh loss sum(logits · R) at each step
        x = unet_input(rng, model)
        logits = model(torch.from_numpy(x))
        r = rng.standard_normal(logits.shape)
        torch_optimizer.zero_grad()
        (logits * torch.from_numpy(r)).sum().backward()
        torch_optimizer.step()
        ours.forward(x, training=True)
        ours_optimizer.step(ours.backward(r))
    for name, p in model.named_parameters():
        assert not np.array_equal(p.detach().numpy(), start[name]), f"{name} did not move"
        assert_close(ours.params[name], p.detach().numpy(), name=name, rtol=1e-8, atol=1e-10)
    for name, value in ours.buffers.items():  # the running statistics of five training batches
        assert_close(value, model.state_dict()[name].numpy(), name=name, rtol=1e-8, atol=1e-10)


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


def test_bad_state_entries_raise_one_line_value_errors():
    ours = NumpyUNet(UNet(depth=1, base_channels=2, batch_norm=True).config)
    state = ours.to_torch_state_dict()
    for name, value, match in [
        ("encoder.0.norm1.num_batches_tracked", np.array(-1), "must be one integer >= 0, got array\\(-1\\)"),
        ("encoder.0.norm1.num_batches_tracked", np.array([1, 2]), "must be one integer >= 0"),
        ("encoder.0.norm1.num_batches_tracked", np.array(1.5), "must be one integer >= 0"),
        ("_extra_state", {"class_names": ["a"]}, r"state\['_extra_state'\] must be \{'class_names': 2 strings\}"),
        ("_extra_state", ["a", "b"], r"state\['_extra_state'\] must be"),
    ]:
        with pytest.raises(ValueError, match=match) as error:
            ours.load_state_dict(state | {name: value})
        assert "\n" not in str(error.value)


def test_bad_backward_calls_raise_one_line_value_errors():
    ours = NumpyUNet(UNet(depth=1, base_channels=2).config)
    with pytest.raises(ValueError, match="backward needs the caches of a forward pass") as error:
        ours.backward(np.zeros((1, 2, 2, 2), np.float32))
    assert "\n" not in str(error.value)
    ours.forward(np.zeros((1, 1, 18, 18), np.float32), training=True)  # logits (1, 2, 2, 2)
    for dlogits, match in [
        ([[0.0]], "dlogits must be a numpy array"),
        (np.zeros((1, 2, 2), np.float32), "dlogits must have 4 dimensions"),
        (np.zeros((1, 3, 2, 2), np.float32), r"dlogits must have the last logits' shape \(1, 2, 2, 2\)"),
        (np.zeros((1, 2, 2, 2)), "dlogits must be float32 like the model, got float64"),
    ]:
        with pytest.raises(ValueError, match=match) as error:
            ours.backward(dlogits)
        assert "\n" not in str(error.value)
