"""The U-Net in NumPy: its parameter spec (names, shapes, fans), its forward pass and its backward pass, assembled
from the reference layers, equal to the torch ``UNet`` (``unet_from_scratch.nn.unet``) and its autograd gradients
with the same weights.

``unet_parameters(config)`` lists every parameter of ``UNet(**config)`` as ``(name, shape, fan_in)``, in the torch
model's registration order and under its ``state_dict()`` names, so weights move between the two by name:

    encoder.{l}.conv1.weight  (c_l, c_in, 3, 3)     fan_in c_in · 9     (He-normal, Ronneberger et al. 2015, Sec. 3)
    encoder.{l}.conv1.bias    (c_l,)                None (zero)         only without batch norm
    encoder.{l}.norm1.weight  (c_l,)                None (one)          only with batch norm (then no conv bias)
    encoder.{l}.norm1.bias    (c_l,)                None (zero)
    ... conv2 / norm2 alike; bottleneck.* alike, with c = base · 2^depth
    decoder.{j}.up.weight     (2c, c, 2, 2)         fan_in 2c           the 2x2 stride-2 up-convolution: each output
    decoder.{j}.up.bias       (c,)                  None                pixel sums one tap of each of the 2c inputs
    decoder.{j}.conv.*        a double convolution 2c -> c
    head.weight, head.bias    (K, base, 1, 1), (K,) fan_in base

with c_l = base · 2^l. Every fan is ``reference.init.fan_in`` of the layer's kind and weight shape, the rule stated
and argued there: a transposed convolution's is C_in (k² / s² = 1 taps per input channel), not torch's default fan
of that weight. The torch ``UNet`` initialises itself from this spec too (``nn.init.init_from_spec_``).

``NumpyUNet(config, rng)`` draws the weights as the torch model does (``reference.init.he_normal`` in this order,
float32 draws, biases 0, batch-norm scale 1 and shift 0), so ``NumpyUNet(config, np.random.default_rng(seed))``
starts from exactly the weights of ``UNet(**config)`` with that seed; ``load_state_dict`` takes any mapping of
names to arrays (a torch ``state_dict()`` of CPU tensors converts by ``np.asarray``) and ``to_torch_state_dict``
gives them back (``torch.from_numpy`` of each array), so weights move both ways. ``forward(x, training)`` runs the
network layer after layer, ``y, cache = layer(x, ...)``, and keeps the caches; ``backward(dlogits)`` walks them in
reverse, ``grads = layer_backward(dy, cache)``, and returns the gradient of every parameter under its name.

The one join of the backward pass is the skip connection: an encoder output feeds both its max-pool and, cropped,
the decoder's concatenation, so its gradient is the sum of the two (the concatenation's share is kept until the
walk back reaches that pool). The input normalisation holds no parameter and is not differentiated.
"""

from __future__ import annotations

import numpy as np

from unet_from_scratch.reference import threads
from unet_from_scratch.reference._checks import check_float_array, check_int, check_real
from unet_from_scratch.reference.conv import (
    conv2d,
    conv2d_backward,
    conv2d_relu,
    conv2d_relu_backward,
    relu,
    relu_backward,
)
from unet_from_scratch.reference.crop import crop_and_concat, crop_and_concat_backward
from unet_from_scratch.reference.dropout import dropout, dropout_backward
from unet_from_scratch.reference.init import fan_in, he_normal
from unet_from_scratch.reference.norm import batch_norm, batch_norm_backward
from unet_from_scratch.reference.pool import max_pool2d, max_pool2d_backward
from unet_from_scratch.reference.upconv import conv_transpose2d, conv_transpose2d_backward
from unet_from_scratch.sizes import check_architecture, size_message, trace

ARCHITECTURE_KEYS = ("in_channels", "num_classes", "depth", "base_channels", "padding", "batch_norm")

# Each layer's backward, by the name its forward writes into its cache.
BACKWARDS = {
    "conv2d": conv2d_backward,
    "conv2d_relu": conv2d_relu_backward,
    "relu": relu_backward,
    "batch_norm": batch_norm_backward,
    "dropout": dropout_backward,
    "max_pool2d": max_pool2d_backward,
    "conv_transpose2d": conv_transpose2d_backward,
    "crop_and_concat": crop_and_concat_backward,
}


def _check_config(config) -> dict:
    """The architecture of a ``UNet.config`` (its ``name`` "unet" if present; dropout and seed default to 0)."""
    if not isinstance(config, dict):
        raise ValueError(f"config must be a dict (UNet(...).config), got {type(config).__name__}")
    if config.get("name", "unet") != "unet":
        raise ValueError(f"config must describe a 'unet', got name {config.get('name')!r}")
    missing = [k for k in ARCHITECTURE_KEYS if k not in config]
    if missing:
        raise ValueError(f"config is missing {', '.join(missing)} (expected the keys of UNet(...).config)")
    c = {k: config[k] for k in ARCHITECTURE_KEYS}
    for key in ("in_channels", "num_classes", "base_channels"):
        c[key] = check_int(c[key], f"config[{key!r}]")
    check_architecture(c["depth"], c["padding"])
    c["depth"] = int(c["depth"])
    if not isinstance(c["batch_norm"], (bool, np.bool_)):
        raise ValueError(f"config['batch_norm'] must be a bool, got {c['batch_norm']!r}")
    c["dropout"] = check_real(config.get("dropout", 0.0), "config['dropout']", 0.0, below=1.0)
    return c


def _double_conv(prefix: str, c_in: int, c_out: int, batch_norm: bool) -> list:
    spec = []
    for k, channels in ((1, c_in), (2, c_out)):
        shape = (c_out, channels, 3, 3)
        spec.append((f"{prefix}.conv{k}.weight", shape, fan_in("conv", shape)))
        if batch_norm:
            spec += [(f"{prefix}.norm{k}.weight", (c_out,), None), (f"{prefix}.norm{k}.bias", (c_out,), None)]
        else:
            spec.append((f"{prefix}.conv{k}.bias", (c_out,), None))
    return spec


def unet_parameters(config: dict) -> list[tuple[str, tuple[int, ...], float | None]]:
    """Every parameter of ``UNet(**config)`` as ``(name, shape, fan_in)``, in ``named_parameters()`` order.

    ``fan_in`` is the He-normal fan of a weight (``reference.init.fan_in``), None for a bias or a batch-norm
    parameter (they start at 0, or 1 for the norm's scale). The table is in the module docstring.
    """
    c = _check_config(config)
    depth, bn = c["depth"], c["batch_norm"]
    widths = [c["base_channels"] * 2**level for level in range(depth + 1)]
    spec = []
    for level, (c_in, c_out) in enumerate(zip([c["in_channels"]] + widths[:-2], widths[:-1])):
        spec += _double_conv(f"encoder.{level}", c_in, c_out, bn)
    spec += _double_conv("bottleneck", widths[-2], widths[-1], bn)
    for j, width in enumerate(reversed(widths[1:])):
        half = width // 2
        up = (width, half, 2, 2)
        spec += [(f"decoder.{j}.up.weight", up, fan_in("conv_transpose", up, stride=2))]
        spec += [(f"decoder.{j}.up.bias", (half,), None)]
        spec += _double_conv(f"decoder.{j}.conv", width, half, bn)
    head = (c["num_classes"], widths[0], 1, 1)
    spec += [("head.weight", head, fan_in("conv", head)), ("head.bias", (c["num_classes"],), None)]
    return spec


def unet_buffers(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """The statistics a ``UNet`` keeps beside its parameters: the input normalisation and each batch norm's running
    mean and variance, ``(name, shape)`` under their ``state_dict()`` names."""
    c = _check_config(config)
    buffers = [("input_mean", (c["in_channels"],)), ("input_std", (c["in_channels"],))]
    for name, shape, _ in unet_parameters(config):
        if ".norm" in name and name.endswith(".weight"):
            norm = name[: -len(".weight")]
            buffers += [(f"{norm}.running_mean", shape), (f"{norm}.running_var", shape)]
    return buffers


class NumpyUNet:
    """The U-Net of ``UNet(**config)`` in NumPy, forward and backward pass (module docstring).

    ``params`` and ``buffers`` are dicts name -> ndarray in ``dtype`` (float32 like the torch model by default,
    float64 for exact comparisons); an optimizer of ``reference.optim`` updates ``params`` in place.
    ``rng`` draws the initial weights (a NumPy Generator; None: seed 0) and, in training, the dropout masks.
    ``num_batches_tracked`` (name -> int) counts each batch norm's training batches and ``class_names`` names the
    output channels, as the torch model's ``state_dict()`` does, so a state dict goes through here unchanged.
    """

    def __init__(self, config: dict, rng: np.random.Generator | None = None, dtype=np.float32):
        self.config = _check_config(config)
        self.rng = np.random.default_rng(0) if rng is None else rng
        if not isinstance(self.rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        if np.dtype(dtype) not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
        self.dtype = np.dtype(dtype)
        self.params = {}
        for name, shape, fan in unet_parameters(self.config):
            if fan is not None:  # float32 draws, as the torch model's, then the model's dtype
                value = he_normal(shape, self.rng, fan_in=fan).astype(self.dtype)
            elif ".norm" in name and name.endswith(".weight"):
                value = np.ones(shape, self.dtype)
            else:
                value = np.zeros(shape, self.dtype)
            self.params[name] = value
        self.buffers = {
            name: (np.zeros if name.endswith("mean") else np.ones)(shape, self.dtype)
            for name, shape in unet_buffers(self.config)
        }
        self.num_batches_tracked = {
            f"{name[: -len('.running_mean')]}.num_batches_tracked": 0
            for name in self.buffers
            if name.endswith(".running_mean")
        }
        k = self.config["num_classes"]
        self.class_names = ["background", "foreground"] if k == 2 else [f"class_{i}" for i in range(k)]  # UNet's
        self.caches: list[tuple[str, dict]] = []

    def load_state_dict(self, state) -> None:
        """Copy every parameter and buffer from ``state`` (name -> array-like, e.g. a torch ``state_dict()`` of CPU
        tensors). The entries that hold no number of the forward are taken where present and optional: each batch
        norm's ``num_batches_tracked`` and ``_extra_state`` (``{"class_names": [...]}``). Missing names and wrong
        shapes raise ValueError."""
        for target in (self.params, self.buffers):
            for name, current in target.items():
                if name not in state:
                    raise ValueError(f"state is missing {name!r}")
                value = np.asarray(state[name], dtype=self.dtype)
                if value.shape != current.shape:
                    raise ValueError(f"state[{name!r}] must have shape {current.shape}, got {value.shape}")
                target[name] = value.copy()
        for name in self.num_batches_tracked:
            if name in state:
                value = np.asarray(state[name])
                if value.shape != () or not np.issubdtype(value.dtype, np.integer) or value < 0:
                    raise ValueError(f"state[{name!r}] must be one integer >= 0, got {value!r}")
                self.num_batches_tracked[name] = int(value)
        if "_extra_state" in state:
            names = state["_extra_state"].get("class_names") if isinstance(state["_extra_state"], dict) else None
            k = self.config["num_classes"]
            if not (isinstance(names, (list, tuple)) and len(names) == k and all(isinstance(n, str) for n in names)):
                raise ValueError(f"state['_extra_state'] must be {{'class_names': {k} strings}}, got {names!r}")
            self.class_names = list(names)

    def to_torch_state_dict(self) -> dict:
        """Every entry of ``UNet(**config).state_dict()``, under its name, from this model: the parameters and
        buffers as copies in ``dtype``, each ``num_batches_tracked`` as a 0-d int64 array, and ``_extra_state`` as
        the torch model keeps it, ``{"class_names": [...]}``. ``torch.from_numpy`` turns each array into a tensor;
        ``UNet(**config).load_state_dict`` then takes the result."""
        state = {name: value.copy() for name, value in (self.params | self.buffers).items()}
        state |= {name: np.array(count, np.int64) for name, count in self.num_batches_tracked.items()}
        state["_extra_state"] = {"class_names": list(self.class_names)}
        return state

    def _double_conv(self, prefix: str, x: np.ndarray, training: bool, p: float) -> np.ndarray:
        pad = 1 if self.config["padding"] == "same" else 0
        for k in (1, 2):
            w = self.params[f"{prefix}.conv{k}.weight"]
            if self.config["batch_norm"]:
                x, cache = conv2d(x, w, None, pad)
                self.caches.append((f"{prefix}.conv{k}", cache))
                norm = f"{prefix}.norm{k}"
                x, cache = batch_norm(x, self.params[f"{norm}.weight"], self.params[f"{norm}.bias"],
                                      self.buffers[f"{norm}.running_mean"], self.buffers[f"{norm}.running_var"],
                                      training)  # fmt: skip
                self.caches.append((norm, cache))
                self.num_batches_tracked[f"{norm}.num_batches_tracked"] += int(training)
                x, cache = relu(x)
                self.caches.append((f"{prefix}.relu{k}", cache))
            else:
                x, cache = conv2d_relu(x, w, self.params[f"{prefix}.conv{k}.bias"], pad)
                self.caches.append((f"{prefix}.conv{k}", cache))
        if p > 0:
            x, cache = dropout(x, p, self.rng, training)
            self.caches.append((f"{prefix}.dropout", cache))
        return x

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits (N, num_classes, H_out, W_out) of ``x`` (N, in_channels, H, W) in the model's dtype.

        In training batch norm normalises by the batch's statistics (and updates the running ones in place) and
        dropout draws its masks from ``rng``; in evaluation both are fixed maps. ``self.caches`` holds each
        layer's cache, in forward order, for the backward pass.
        """
        c = self.config
        check_float_array(x, "x", ndim=4, layout="(N, C, H, W)")
        if x.shape[1] != c["in_channels"]:
            raise ValueError(f"x must have shape (N, {c['in_channels']}, H, W), got {x.shape}")
        if x.dtype != self.dtype:
            raise ValueError(f"x must be {self.dtype} like the model, got {x.dtype}")
        for what, n in (("input height", x.shape[2]), ("input width", x.shape[3])):
            if trace(n, c["depth"], c["padding"]) is None:
                raise ValueError(size_message(what, n, c["depth"], c["padding"]))
        with threads.split_over(x.shape[0]):  # BLAS on one thread, the batch split over the cores (see there)
            self.caches = []
            mean, std = self.buffers["input_mean"], self.buffers["input_std"]
            x = (x - mean[None, :, None, None]) / std[None, :, None, None]  # (N, C_in, H, W)
            skips = []
            for level in range(c["depth"]):
                x = self._double_conv(f"encoder.{level}", x, training, c["dropout"] if level == c["depth"] - 1 else 0.0)
                skips.append(x)  # (N, c_l, h, w)
                x, cache = max_pool2d(x)  # (N, c_l, h / 2, w / 2)
                self.caches.append((f"encoder.{level}.pool", cache))
            x = self._double_conv("bottleneck", x, training, c["dropout"])
            for j, skip in enumerate(reversed(skips)):
                up = f"decoder.{j}"
                x, cache = conv_transpose2d(x, self.params[f"{up}.up.weight"], self.params[f"{up}.up.bias"], 2)
                self.caches.append((f"{up}.up", cache))  # (N, c, 2h, 2w)
                x, cache = crop_and_concat(skip, x)  # (N, 2c, 2h, 2w): [cropped skip, up]
                self.caches.append((f"{up}.concat", cache))
                x = self._double_conv(f"{up}.conv", x, training, 0.0)
            x, cache = conv2d(x, self.params["head.weight"], self.params["head.bias"])  # (N, K, H_out, W_out)
            self.caches.append(("head", cache))
            return x

    def backward(self, dlogits: np.ndarray) -> dict[str, np.ndarray]:
        """Gradients of a loss with respect to every parameter, from ``dlogits`` (N, num_classes, H_out, W_out), the
        loss's gradient with respect to the logits of the last ``forward``; a dict name -> ndarray in the names,
        order, shapes and dtype of ``params`` (what ``reference.optim``'s ``step`` takes).

        The layers' backwards run in reverse order of the forward, each on its own cache; a ``forward`` in training
        gives the gradient of the training graph (batch statistics, the dropout masks drawn). The caches are kept,
        so a second call with the same ``dlogits`` returns the same gradients.
        """
        if not self.caches:
            raise ValueError("backward needs the caches of a forward pass: call forward(x) first")
        check_float_array(dlogits, "dlogits", ndim=4, layout="(N, num_classes, H_out, W_out)")
        head_x = self.caches[-1][1]["x"]  # (N, base, H_out, W_out): the 1x1 head keeps the size
        expected = (head_x.shape[0], self.config["num_classes"], *head_x.shape[2:])
        if dlogits.shape != expected:
            raise ValueError(f"dlogits must have the last logits' shape {expected}, got {dlogits.shape}")
        if dlogits.dtype != self.dtype:
            raise ValueError(f"dlogits must be {self.dtype} like the model, got {dlogits.dtype}")
        with threads.split_over(dlogits.shape[0]):  # as in forward
            grads = {}
            skip_grads = []  # the decoder's shares of the skips' gradients, level 0 first; the encoder pops them
            dy = dlogits
            for name, cache in reversed(self.caches):
                kind = cache["layer"]
                result = BACKWARDS[kind](dy, cache)
                if kind in ("conv2d", "conv2d_relu", "batch_norm", "conv_transpose2d"):  # (dx, dweight, dbias)
                    dy, grads[f"{name}.weight"], dbias = result
                    if f"{name}.bias" in self.params:  # a convolution before batch norm has none
                        grads[f"{name}.bias"] = dbias
                elif kind == "crop_and_concat":  # (d cropped skip, d up-convolution output)
                    dskip, dy = result
                    skip_grads.append(dskip)
                elif kind == "max_pool2d":  # the encoder output fed the pool and the skip: the two gradients add
                    dy = result + skip_grads.pop()
                else:  # relu, dropout
                    dy = result
            return {name: grads[name] for name in self.params}
