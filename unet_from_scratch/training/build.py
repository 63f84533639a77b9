"""From a ``TrainConfig`` to the objects of a training step: source, datasets, model, loss, optimizer, device.

Each builder reads its own table of the config and nothing else, so the trainer (``loop.py``) only wires them up.

Where the class weights go. The weight map already contains them, ``w(x) = w_c(t(x)) + border term``
(``data.targets``), so a loss that is given the map must not be given ``class_weights`` too, or the class weight
would count twice (squared, in effect). The rule here: a loss that uses the weight map (``weighted-ce``, and the CE
term of ``combined``) gets the map and no class weights; ``ce`` gets the class weights and no map; ``dice`` and
``focal`` get neither (Dice is insensitive to imbalance by construction, focal down-weights easy pixels instead).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from unet_from_scratch import sizes
from unet_from_scratch.data import (
    Compose,
    ElasticDeform,
    FolderDataset,
    RandomAffine,
    RandomContrast,
    RandomCrop,
    RandomFlip,
    RandomRotate90,
    SyntheticCells,
    make_datasets,
)
from unet_from_scratch.loss_options import LossOptions
from unet_from_scratch.nn import CombinedLoss, from_config
from unet_from_scratch.training.config import ConfigError, TrainConfig

# (dice, focal, cross-entropy) coefficients of each loss, and whether its CE term is weighted by the weight map.
LOSS_TERMS = {
    "ce": ((0.0, 0.0, 1.0), False),
    "weighted-ce": ((0.0, 0.0, 1.0), True),
    "dice": ((1.0, 0.0, 0.0), False),
    "focal": ((0.0, 1.0, 0.0), False),
}
AUGMENTATIONS = {
    "flip": RandomFlip,
    "rot90": RandomRotate90,
    "affine": RandomAffine,
    "contrast": RandomContrast,
    "elastic": ElasticDeform,  # the paper's: a 3x3 grid, 10 px standard deviation, bicubic
}
DEFAULT_CROP = 256  # the side of the training crops when the images are too large or of different sizes
MIN_SAMPLES_PER_EPOCH = 160  # a handful of large images still give an epoch of this many random crops


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA if present, then Apple's MPS, then the CPU; or the named device, checked to exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device name (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"--device {name}: MPS is not available on this machine")
    return device


def build_source(config: TrainConfig):
    """The images: ``SyntheticCells`` (touching or sparse) or a ``FolderDataset`` at the path ``data.source``."""
    data = config.data
    if data.source in ("synthetic", "synthetic-sparse"):
        preset = "touching" if data.source == "synthetic" else "sparse"
        return SyntheticCells(data.images, size=data.size, seed=config.run.seed, preset=preset)
    if not Path(data.source).exists():
        raise ConfigError(f"--data {data.source!r} is neither 'synthetic', 'synthetic-sparse' nor an existing folder")
    return FolderDataset(data.source, mask_kind=data.mask_kind, class_names=tuple(data.class_names))


def model_arguments(config: TrainConfig, in_channels: int, num_classes: int) -> dict:
    """The ``model`` table as the keyword arguments of ``nn.from_config`` (what ``model.config`` records)."""
    m = config.model
    arguments = dict(name=m.name, in_channels=in_channels, num_classes=num_classes, depth=m.depth,
                     base_channels=m.base_channels, padding=m.padding, dropout=m.dropout, seed=config.run.seed)  # fmt: skip
    if m.name == "unet":
        arguments["batch_norm"] = m.batch_norm
    else:
        arguments["num_heads"] = m.num_heads
    return arguments


def build_model(config: TrainConfig, in_channels: int, num_classes: int):
    """The network the ``model`` table describes, He-initialised from ``run.seed``."""
    try:
        return from_config(model_arguments(config, in_channels, num_classes))
    except ValueError as error:
        raise ConfigError(f"model: {error}") from None


@dataclass(frozen=True)
class Geometry:
    """A network's size arithmetic (``sizes.py``): all ``training_window`` asks of a model, for one not built in torch."""

    depth: int
    padding: str
    extra_convs: int = 0

    def output_size(self, input_size: int) -> int:
        return sizes.output_size(input_size, self.depth, self.padding, self.extra_convs)

    def valid_input_size(self, n: int) -> int:
        return sizes.valid_input_size(n, self.depth, self.padding, self.extra_convs)


def largest_output_at_most(model, side: int) -> int | None:
    """The largest output side of ``model`` that is at most ``side`` (None if none is)."""
    best, n = None, model.valid_input_size(1)
    while model.output_size(n) <= side:
        best = model.output_size(n)
        n = model.valid_input_size(n + 1)
    return best


def training_window(config: TrainConfig, model, sizes: list[tuple[int, int]]) -> tuple[int, int]:
    """(output side, margin) of the square training crops: ``data.crop``, or whole images where they allow it.

    ``margin`` is the model's valid-convolution border, (input - output) / 2 (0 with "same" padding): the crop's
    image window is that much wider on every side (``RandomCrop``).
    """
    smallest = min(min(h, w) for h, w in sizes)
    if config.data.crop:
        wanted = config.data.crop
        if wanted > smallest:
            raise ConfigError(f"--crop {wanted} is larger than the smallest training image ({smallest} px)")
    elif len(set(sizes)) == 1 and sizes[0][0] == sizes[0][1] and smallest <= 2 * DEFAULT_CROP:
        wanted = smallest  # one square size, not too large: train on whole images
    else:
        wanted = min(DEFAULT_CROP, smallest)
    output = largest_output_at_most(model, wanted)
    if output is None:
        raise ConfigError(f"training crops of {wanted} px are too small for this model (depth {model.depth}, "
                          f"{model.padding!r} padding); use a larger --crop or a smaller --depth")  # fmt: skip
    input_side = model.valid_input_size(output)
    while model.output_size(input_side) != output:
        input_side = model.valid_input_size(input_side + 1)
    return output, (input_side - output) // 2


def image_sizes(source) -> list[tuple[int, int]]:
    """(H, W) of every item of ``source`` (one size for all synthetic images)."""
    if isinstance(source, SyntheticCells):
        return [source.size] * len(source)
    return [tuple(source[i][1].shape) for i in range(len(source))]


def build_datasets(config: TrainConfig, source, model):
    """(train, val) ``SegmentationDataset``s: augmented square crops for training, whole images for validation."""
    output, margin = training_window(config, model, image_sizes(source))
    transforms = [AUGMENTATIONS[name]() for name in config.data.augment]
    transforms.append(RandomCrop(output, margin))
    class_weights = None if config.data.class_weights == "none" else config.data.class_weights
    try:
        return make_datasets(
            source, config.data.val_fraction, config.run.seed, Compose(transforms), None,
            class_weight_method=class_weights, w0=config.data.w0, sigma=config.data.sigma,
        )  # fmt: skip
    except ValueError as error:
        raise ConfigError(f"data: {error}") from None


def loss_terms(config: TrainConfig, class_weights: np.ndarray) -> tuple[tuple, bool, np.ndarray | None, LossOptions]:
    """(coefficients (dice, focal, CE), whether the CE term takes the weight map, class weights or None, the
    loss's options) of the ``loss`` table: the rule of the module docstring, for either engine."""
    loss = config.loss
    if loss.name == "combined":
        coefficients, uses_map = tuple(loss.coefficients), True
    else:
        coefficients, uses_map = LOSS_TERMS[loss.name]
    weights = None
    if loss.name == "ce" and config.data.class_weights != "none":
        weights = np.asarray(class_weights, dtype=np.float32)
    options = LossOptions(loss.alpha, loss.gamma, loss.smooth, loss.include_background, coefficients)
    return coefficients, uses_map, weights, options


def build_loss(config: TrainConfig, class_weights: np.ndarray) -> tuple[CombinedLoss, bool]:
    """The loss module, and whether it takes the weight map as ``pixel_weights`` (see the module docstring)."""
    _, uses_map, weights, options = loss_terms(config, class_weights)
    weights = None if weights is None else torch.from_numpy(weights)
    # validate=False: the data are checked where they are read, and the trainer checks the loss itself.
    module = CombinedLoss(class_weights=weights, backend=config.loss.backend, validate=False, **vars(options))
    return module, uses_map


def build_optimizer(config: TrainConfig, parameters, lr: float) -> torch.optim.Optimizer:
    """SGD, SGD with momentum (the paper's 0.99), Adam or RMSProp at learning rate ``lr``."""
    o = config.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, weight_decay=o.weight_decay)
    if o.name == "momentum":
        return torch.optim.SGD(parameters, lr=lr, momentum=o.momentum, weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(parameters, lr=lr, betas=(o.b1, o.b2), weight_decay=o.weight_decay)
    return torch.optim.RMSprop(parameters, lr=lr, alpha=0.99, weight_decay=o.weight_decay)
