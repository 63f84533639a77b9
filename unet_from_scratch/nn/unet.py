"""The U-Net of Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation"
(MICCAI 2015, arXiv:1505.04597), with the blocks and the size arithmetic it is built from.

With its defaults ``UNet()`` is the paper's network (Fig. 1): a 572x572 one-channel tile in, 388x388 scores for
two classes out, 23 convolutional layers, 31,030,658 parameters. Side lengths and channels, level by level:

    level  contracting path: 3x3 conv+ReLU x2    skip crop      expanding path: up-conv, concat, 3x3 conv+ReLU x2
      0    572 -> 570 -> 568     x 64            568 -> 392     392 -> 390 -> 388    x 64  -> 1x1 conv -> 388 x 2
      1    284 -> 282 -> 280     x 128           280 -> 200     200 -> 198 -> 196    x 128
      2    140 -> 138 -> 136     x 256           136 -> 104     104 -> 102 -> 100    x 256
      3     68 ->  66 ->  64     x 512            64 ->  56      56 ->  54 ->  52    x 512
      4     32 ->  30 ->  28     x 1024 (bottleneck)

Going down a row is a 2x2 max-pool (568 / 2 = 284), going up a 2x2 "up-convolution" that doubles the size and
halves the channels (28 x 1024 -> 56 x 512). The encoder map of the same level is centre-cropped to the
up-convolved map's size and the two are concatenated on the channels, [cropped skip, up]: the cropping is needed
"due to the loss of border pixels in every convolution" (Sec. 2).

The size rules. An unpadded 3x3 convolution takes 2 pixels, so each pair takes 4; a max-pool must see an even
size, or it would drop a row and the skip would no longer be centred. With ``padding="valid"`` this admits the
inputs n = 2^depth * b + 4 * (2^(depth+1) - 1) for a bottleneck output b large enough that the expanding path
(b -> 2b - 4, ``depth`` times) stays positive; for the paper's depth 4 that is n = 16 b + 124 with b >= 4, i.e.
188, 204, ..., 556, 572, 588, ..., and the output is n - 184 (a 92-pixel border lost on each side, which
overlap-tile inference supplies by mirroring). With ``padding="same"`` (zero padding 1) convolutions keep the size,
any n divisible by 2^depth works and the output has the input's size. ``output_size`` and ``valid_input_size``
answer these questions; a model given any other size raises a ValueError naming the nearest valid sizes before
it runs a single layer. The arithmetic lives in ``unet_from_scratch.sizes`` (torch-free, shared with inference).

Dropout: the paper puts "Drop-out layers at the end of the contracting path" without saying where exactly or
how strong. ``UNet(dropout=p)`` puts them after the convolutions of the deepest encoder level and of the
bottleneck (the two blocks at the end of the contracting path, as widely used reimplementations do); the paper's
configuration is ``UNet(dropout=0.5)``, 0.5 being the usual rate of its time. The default 0.0 leaves it out.

Weights are drawn from He et al.'s normal distribution, std sqrt(2 / fan_in) (the paper's Sec. 3: "a Gaussian
distribution with a standard deviation of sqrt(2/N), where N denotes the number of incoming nodes of one neuron"),
seeded by ``seed``; biases start at 0, batch-norm scales at 1. The names, shapes and fans come from the torch-free
spec ``reference.unet.unet_parameters(config)``, drawn in its order by ``nn.init.init_from_spec_``, so
``NumpyUNet(config, np.random.default_rng(seed))`` starts from exactly these weights.

Every model here also carries what inference needs to reproduce training (``SegmentationModel``): the input
normalisation statistics as buffers and the class names as extra state, both inside ``state_dict()``.

Checks follow the policy of ``reference/_checks.py``: the constructor's parameters are checked (sizes are ints,
NumPy ints too, never bool; ``dropout`` a finite number in [0, 1)), and ``forward`` checks the input's type, shape,
size and dtype, not its values: a convolution passes a NaN on to exactly the outputs that read it, visibly, and the
loss refuses non-finite logits. An input of another real dtype than the model's (float64 into a float32 model,
float32 into a ``.half()`` one, an integer image) is cast to the model's dtype, as the model's first step; under
autocast a float16/bfloat16/float32 input is left to autocast.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from unet_from_scratch.nn.init import init_from_spec_
from unet_from_scratch.reference._checks import check_int, check_real
from unet_from_scratch.reference.unet import unet_parameters

# The size arithmetic is torch-free and shared (inference, training crops): ``unet_from_scratch.sizes``.
# ``output_size``, ``valid_input_size`` and ``PADDINGS`` are re-exported from here (and ``nn``).
from unet_from_scratch.sizes import PADDINGS, output_size, valid_input_size  # noqa: F401
from unet_from_scratch.sizes import check_architecture as _check_architecture
from unet_from_scratch.sizes import size_message as _size_message
from unet_from_scratch.sizes import trace as _trace


# ----------------------------------------------------------------------------------------------------------------
# Blocks


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The central (h, w) window of ``x`` (N, C, H, W) -> (N, C, h, w), a view.

    Offsets ``(H - h) // 2`` and ``(W - w) // 2``, as ``reference.crop.center_crop`` (whose docstring says why
    the floor, should a difference ever be odd; in a valid-size U-Net it is always even).
    """
    h, w = size
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


class DoubleConv(nn.Module):
    """Two 3x3 convolutions, each followed by ReLU (batch norm before it if asked), then dropout if asked.

    (N, C_in, H, W) -> (N, C_out, H - 4, W - 4) with ``padding="valid"``, (N, C_out, H, W) with "same".
    With batch norm the convolutions have no bias: the norm's shift would cancel it.
    """

    def __init__(
        self, in_channels: int, out_channels: int, padding: str = "valid", batch_norm: bool = False, dropout: float = 0
    ):
        super().__init__()
        pad = 1 if padding == "same" else 0
        self.in_channels, self.out_channels, self.padding = in_channels, out_channels, padding
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=pad, bias=not batch_norm)
        self.norm1 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=pad, bias=not batch_norm)
        self.norm2 = nn.BatchNorm2d(out_channels) if batch_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, {self.padding}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C_in, H, W)
        x = F.relu(self.norm1(self.conv1(x)))  # (N, C_out, H - 2, W - 2) valid | (N, C_out, H, W) same
        x = F.relu(self.norm2(self.conv2(x)))  # (N, C_out, H - 4, W - 4) valid | (N, C_out, H, W) same
        return self.dropout(x)


class Up(nn.Module):
    """One level of the expanding path: 2x2 up-convolution, crop-and-concatenate the skip, ``DoubleConv``.

    ``x`` (N, 2C, h, w) from the level below, ``skip`` (N, C, H, W) from the encoder (H >= 2h, W >= 2w)
    -> (N, C, 2h - 4, 2w - 4) valid | (N, C, 2h, 2w) same. The up-convolution halves the channels and the
    concatenation [cropped skip, up] (encoder channels first, as the paper's figure) restores 2C.
    """

    def __init__(self, in_channels: int, padding: str = "valid", batch_norm: bool = False, dropout: float = 0.0):
        super().__init__()
        out_channels = in_channels // 2
        self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_channels, out_channels, padding, batch_norm, dropout)

    def extra_repr(self) -> str:
        return f"{self.conv.in_channels} -> {self.conv.out_channels}, {self.conv.padding}"

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:  # x (N, 2C, h, w), skip (N, C, H, W)
        x = self.up(x)  # (N, C, 2h, 2w)
        skip = center_crop(skip, x.shape[-2:])  # (N, C, 2h, 2w)
        return self.conv(torch.cat([skip, x], dim=1))  # (N, 2C, 2h, 2w) -> (N, C, 2h - 4, 2w - 4) | (N, C, 2h, 2w)


# ----------------------------------------------------------------------------------------------------------------
# What every segmentation model carries besides its layers


def match_dtype(x: torch.Tensor, dtype: torch.dtype, what: str = "input") -> torch.Tensor:
    """``x`` in the model's ``dtype``: a real tensor of another dtype is cast, bool and complex raise ValueError.

    Under autocast a float16/bfloat16/float32 ``x`` is returned as it is (autocast picks each op's dtype); float64
    is cast even there, as autocast leaves float64 alone and a float32 weight cannot meet it.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype == dtype:
        return x
    if x.dtype == torch.bool or x.is_complex():
        raise ValueError(f"{what} must be a real (float or integer) tensor, got {x.dtype}")
    if x.is_floating_point() and x.dtype != torch.float64 and _autocasting(x.device.type):
        return x
    return x.to(dtype)


def _autocasting(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one flag per device kind
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


def _plain(value):
    """A NumPy scalar as the Python number it holds (a config must hold plain values only)."""
    return value.item() if isinstance(value, (np.integer, np.floating, np.bool_)) else value


def check_dropout(p) -> float:
    """A drop probability: a finite number in [0, 1) (1 would drop everything), as a float; else ValueError."""
    return check_real(p, "dropout", 0.0, below=1.0)


def default_class_names(num_classes: int) -> list[str]:
    """["background", "foreground"] for two classes, else ["class_0", "class_1", ...]."""
    return ["background", "foreground"] if num_classes == 2 else [f"class_{i}" for i in range(num_classes)]


class SegmentationModel(nn.Module):
    """Base of ``UNet`` and ``AttentionUNet``: input checks, normalisation, class names, size arithmetic, summary.

    - Buffers ``input_mean`` and ``input_std`` (in_channels,), 0 and 1 until ``set_normalization``: ``forward``
      first computes ``(x - mean) / std`` per channel, so a model normalises its input with exactly the statistics
      it was trained with, wherever its ``state_dict()`` goes.
    - ``class_names``, one per output channel in that order, saved as the module's extra state
      (``state_dict()["_extra_state"]``) through ``get_extra_state``/``set_extra_state``.
    - ``output_size(n)`` / ``valid_input_size(n)`` for this model's depth and padding; a forward on any other
      size raises ValueError naming the nearest valid sizes.

    - ``config``: the constructor's arguments with the model's ``name``, plain values only, so
      ``nn.from_config(model.config)`` builds the same architecture (a checkpoint stores it beside the weights).

    A subclass builds its layers and calls ``self._prepare(x)`` at the start of its ``forward``. ``extra_convs``
    counts the 3x3 convolutions it adds after the expanding path, for the size arithmetic. It sets ``name`` and
    calls ``self._record_config(locals())`` in its ``__init__``.
    """

    extra_convs = 0
    name = ""

    def __init__(self, in_channels: int, num_classes: int, depth: int, base_channels: int, padding: str):
        super().__init__()
        in_channels, num_classes = check_int(in_channels, "in_channels"), check_int(num_classes, "num_classes")
        base_channels = check_int(base_channels, "base_channels")
        _check_architecture(depth, padding)
        depth = int(depth)
        self.in_channels, self.num_classes, self.depth, self.padding = in_channels, num_classes, depth, padding
        self.base_channels = base_channels
        self.register_buffer("input_mean", torch.zeros(in_channels))
        self.register_buffer("input_std", torch.ones(in_channels))
        self.class_names = default_class_names(num_classes)

    def _record_config(self, arguments: dict) -> None:
        """Keep the constructor's arguments (``locals()`` at the top of a subclass's ``__init__``) as ``config``."""
        self.config = {"name": self.name} | {
            k: _plain(v) for k, v in arguments.items() if k not in ("self", "__class__")
        }

    # -- class names --------------------------------------------------------------------------------------------

    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    @class_names.setter
    def class_names(self, names: Sequence[str]) -> None:
        names = list(names)
        if len(names) != self.num_classes or not all(isinstance(n, str) for n in names):
            raise ValueError(f"class_names must be {self.num_classes} strings (one per output channel), got {names!r}")
        self._class_names = names

    def get_extra_state(self) -> dict:
        return {"class_names": self.class_names}

    def set_extra_state(self, state: dict) -> None:
        self.class_names = state["class_names"]

    # -- normalisation ------------------------------------------------------------------------------------------

    def set_normalization(self, mean, std) -> None:
        """Store per-channel input statistics: ``mean`` and ``std`` are scalars or (in_channels,) sequences, std > 0."""
        values = []
        for name, v in (("mean", mean), ("std", std)):
            t = torch.as_tensor(v, dtype=torch.float64).flatten()
            if t.numel() == 1:
                t = t.expand(self.in_channels)
            if t.shape != (self.in_channels,) or not torch.isfinite(t).all():
                raise ValueError(f"{name} must be a finite scalar or {self.in_channels} finite values, got {v!r}")
            values.append(t)
        if (values[1] <= 0).any():
            raise ValueError(f"std must be positive, got {std!r}")
        self.input_mean.copy_(values[0])
        self.input_std.copy_(values[1])

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Check ``x`` (N, in_channels, H, W) and its size, cast it to the model's dtype (``match_dtype``), then
        normalise it with the stored statistics."""
        x = match_dtype(x, self.input_mean.dtype)
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must have shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        for what, n in (("input height", x.shape[2]), ("input width", x.shape[3])):
            if _trace(n, self.depth, self.padding, self.extra_convs) is None:
                raise ValueError(_size_message(what, n, self.depth, self.padding, self.extra_convs))
        return (x - self.input_mean.view(1, -1, 1, 1)) / self.input_std.view(1, -1, 1, 1)  # (N, C_in, H, W)

    # -- sizes --------------------------------------------------------------------------------------------------

    def output_size(self, input_size: int) -> int:
        """This model's output side length for an input side length (ValueError naming the nearest valid ones)."""
        return output_size(input_size, self.depth, self.padding, self.extra_convs)

    def valid_input_size(self, n: int) -> int:
        """The smallest input side length >= n this model accepts."""
        return valid_input_size(n, self.depth, self.padding, self.extra_convs)

    # -- summary ------------------------------------------------------------------------------------------------

    def summary(self, input_size: int | None = None) -> str:
        """Print a table of the blocks with parameters, their parameter counts and the total; return it as a string.

        With ``input_size`` it also lists each block's output shape for one (1, C_in, n, n) input (one forward in
        eval mode, without gradients).
        """
        blocks = []
        for name, child in self.named_children():
            items = child.named_children() if isinstance(child, nn.ModuleList) else [("", child)]
            for index, module in items:
                count = sum(p.numel() for p in module.parameters())
                if count:
                    blocks.append((f"{name}.{index}" if index else name, module, count))
        shapes = self._block_output_shapes([m for _, m, _ in blocks], input_size) if input_size else {}
        lines = [
            f"{type(self).__name__}: {self.in_channels} -> {self.num_classes} channels, depth {self.depth}, "
            f"base {self.base_channels} channels, {self.padding!r} padding"
        ]
        lines.append(f"{'block':<22}{'layer':<60}{'output' if shapes else '':<22}{'params':>12}")
        for name, module, count in blocks:
            layer = f"{type(module).__name__}({module.extra_repr()})"
            lines.append(f"{name:<22}{layer:<60}{str(shapes.get(module, '')):<22}{count:>12,}")
        total = sum(p.numel() for p in self.parameters())
        lines.append(f"{'total':<104}{total:>12,}")
        table = "\n".join(lines)
        print(table)
        return table

    def _block_output_shapes(self, modules: list[nn.Module], n: int) -> dict:
        shapes = {}
        hooks = [m.register_forward_hook(lambda m, args, out: shapes.__setitem__(m, tuple(out.shape))) for m in modules]
        was_training = self.training
        try:
            self.eval()
            with torch.no_grad():
                self(torch.zeros(1, self.in_channels, n, n, device=self.input_mean.device))
        finally:
            self.train(was_training)
            for h in hooks:
                h.remove()
        return shapes


# ----------------------------------------------------------------------------------------------------------------
# The network


class UNet(SegmentationModel):
    """The U-Net: ``depth`` levels down and up, ``base_channels * 2**level`` channels at each (64 -> 1024).

    Args:
        in_channels: channels of the input image (1 for the paper's grey-scale microscopy).
        num_classes: output channels, one score map per class (logits; softmax is the loss's business).
        depth: number of max-pools (4 in the paper).
        base_channels: channels of the first level (64 in the paper).
        padding: "valid" (the paper: unpadded convs, cropped skips) or "same" (zero padding, output size = input).
        batch_norm: batch norm after every 3x3 convolution (not in the paper, which predates it).
        dropout: drop probability after the last encoder level and the bottleneck, in [0, 1); 0.5 for the paper's
            setup.
        seed: seeds the He-normal initialisation (a NumPy generator drawing ``unet_parameters(config)`` in order,
            see ``nn.init``), an integer >= 0.

    ``forward``: (N, in_channels, H, W) -> (N, num_classes, output_size(H), output_size(W)), in the model's dtype
    (an input of another dtype is cast to it first). Bad arguments raise ValueError at construction.
    """

    name = "unet"

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "valid",
        batch_norm: bool = False,
        dropout: float = 0.0,
        seed: int = 0,
    ):
        super().__init__(in_channels, num_classes, depth, base_channels, padding)
        dropout, seed = check_dropout(dropout), check_int(seed, "seed", minimum=0)
        self._record_config(locals())
        widths = [base_channels * 2**level for level in range(depth + 1)]  # 64, 128, 256, 512, 1024
        self.encoder = nn.ModuleList(
            DoubleConv(c_in, c_out, padding, batch_norm, dropout if level == depth - 1 else 0.0)
            for level, (c_in, c_out) in enumerate(zip([in_channels] + widths[:-2], widths[:-1]))
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(widths[-2], widths[-1], padding, batch_norm, dropout)
        self.decoder = nn.ModuleList(Up(c, padding, batch_norm) for c in reversed(widths[1:]))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        init_from_spec_(self, unet_parameters(self.config), seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._prepare(x)  # (N, C_in, H, W), checked and normalised
        skips = []
        for down in self.encoder:
            x = down(x)  # (N, c, h - 4, w - 4) valid | (N, c, h, w) same; c = 64, 128, ...
            skips.append(x)
            x = self.pool(x)  # (N, c, h/2 - 2, w/2 - 2) | (N, c, h/2, w/2)
        x = self.bottleneck(x)  # (N, 2^depth * base, ...): 28 x 1024 in the paper
        for up, skip in zip(self.decoder, reversed(skips)):
            x = up(x, skip)  # (N, c/2, 2h - 4, 2w - 4) | (N, c/2, 2h, 2w)
        return self.head(x)  # (N, num_classes, H_out, W_out): 388 x 2 in the paper
