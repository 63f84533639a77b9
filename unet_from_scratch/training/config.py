"""One config tree for a training run: it is the TOML file, the command-line flags and what a checkpoint stores.

    TrainConfig
      model      ModelConfig      which network, how deep and wide, padding, batch norm, dropout
      data       DataConfig       which images, how they are split, cropped, augmented and weighted
      loss       LossConfig       which loss, and its parameters
      optimizer  OptimizerConfig  which optimizer, learning rate and its moments
      schedule   ScheduleConfig   how the learning rate moves over the run
      run        RunConfig        epochs, batch size, clipping, early stopping, seed, device, output folder

A preset or file is read with ``load_config`` (``configs/quick.toml`` is the default), then flags override
single fields (``apply_overrides``). Every field has a default, a type and a help text, and each flag is derived
from its field (``--base-channels`` is ``model.base_channels``): the help, the TOML tables and the checkpoint can
never disagree. An unknown key or a value of the wrong type is a ``ConfigError`` of one line naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from unet_from_scratch.loss_options import LossOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(ValueError):
    """A bad config file, key or value: the message is one line that names it."""


def _field(default, help: str, choices: tuple | None = None, flag: str | None = None):
    """A config field with its help text, its allowed values and (where it differs from the field) its flag name."""
    kwargs = {"default_factory": lambda: list(default)} if isinstance(default, list) else {"default": default}
    return field(**kwargs, metadata={"help": help, "choices": choices, "flag": flag})


MODELS = ("unet", "attention-unet")
PADDINGS = ("same", "valid")
LOSSES = ("ce", "weighted-ce", "dice", "focal", "combined")
OPTIMIZERS = ("sgd", "momentum", "adam", "rmsprop")
SCHEDULES = ("constant", "warmup-cosine", "one-cycle", "step", "plateau")
BACKENDS = ("torch", "numpy")
AUGMENTATIONS = ("flip", "rot90", "affine", "contrast", "elastic")
CLASS_WEIGHTS = ("balanced", "median_frequency", "none")
MASK_KINDS = ("instances", "classes")


@dataclass
class ModelConfig:
    name: str = _field("unet", "network: the paper's U-Net or the attention U-Net", MODELS, flag="model")
    depth: int = _field(3, "number of 2x2 max-pools (the paper: 4)")
    base_channels: int = _field(16, "channels of the first level, doubled at every level (the paper: 64)")
    padding: str = _field("same", "3x3 convolutions: 'valid' (the paper, output smaller) or 'same'", PADDINGS)
    batch_norm: bool = _field(True, "batch norm after every 3x3 convolution (U-Net; the attention U-Net always)")
    dropout: float = _field(0.0, "dropout probability at the end of the contracting path")
    num_heads: int = _field(4, "attention heads (attention U-Net only)")


@dataclass
class DataConfig:
    source: str = _field(
        "synthetic", "'synthetic', 'synthetic-sparse', or a folder with images/ and masks/", flag="data"
    )
    images: int = _field(200, "number of synthetic images")
    size: int = _field(128, "side length of the synthetic images")
    mask_kind: str = _field("instances", "folder masks: instance ids or class indices", MASK_KINDS)
    class_names: list = _field(["background", "foreground"], "class names of a folder's masks, in index order")
    val_fraction: float = _field(0.2, "fraction of the images held out for validation")
    crop: int = _field(0, "side of the random training crop (output pixels); 0 trains on whole images")
    samples_per_epoch: int = _field(0, "training samples per epoch; 0 = max(training images, 160)")
    augment: list = _field(["flip", "rot90"], "augmentations, any of these", AUGMENTATIONS)
    class_weights: str = _field("balanced", "class weights from the training split", CLASS_WEIGHTS)
    w0: float = _field(10.0, "weight map: border weight w0 (the paper: 10)")
    sigma: float = _field(5.0, "weight map: border width sigma in pixels (the paper: 5)")
    oversample: bool = _field(False, "draw images rich in the minority class more often")
    workers: int = _field(0, "DataLoader worker processes")


@dataclass
class LossConfig:
    name: str = _field(
        "combined",
        "ce (class-weighted), weighted-ce (the paper's weight map), dice, focal, combined",
        LOSSES,
        flag="loss",
    )
    coefficients: list = _field([0.7, 0.0, 0.3], "combined loss: weights of (dice, focal, CE weighted by the map)")
    # The loss's own defaults (kernels.loss_checks.LossOptions, where they are stated once); only the coefficients
    # differ: the quick preset's, not the advanced recipe's 0.4/0.4/0.2.
    alpha: float = _field(LossOptions.alpha, "focal loss alpha")
    gamma: float = _field(LossOptions.gamma, "focal loss gamma")
    smooth: float = _field(LossOptions.smooth, "Dice smoothing")
    include_background: bool = _field(LossOptions.include_background, "Dice over the background class too")
    backend: str = _field("auto", "auto (fused Triton kernel on CUDA), triton, torch", ("auto", "triton", "torch"),
                          flag="loss-backend")


@dataclass
class OptimizerConfig:
    name: str = _field("adam", "sgd, momentum (SGD with momentum, the paper's 0.99), adam, rmsprop", OPTIMIZERS,
                       flag="optimizer")  # fmt: skip
    lr: Any = _field(3e-3, "peak learning rate, or 'auto' (take the LR finder's suggestion; implies --lr-find)")
    momentum: float = _field(0.99, "momentum of the 'momentum' optimizer (the paper: 0.99)")
    b1: float = _field(0.9, "Adam beta1")
    b2: float = _field(0.999, "Adam beta2")
    weight_decay: float = _field(0.0, "L2 weight decay")


@dataclass
class ScheduleConfig:
    name: str = _field("warmup-cosine", "learning-rate policy", SCHEDULES, flag="schedule")
    warmup_epochs: float = _field(1.0, "warmup-cosine: epochs of linear warmup")
    final_lr_ratio: float = _field(0.02, "warmup-cosine / one-cycle: final learning rate / peak")
    pct_start: float = _field(0.3, "one-cycle: fraction of the run spent rising")
    step_epochs: float = _field(10.0, "step: epochs between two drops of the rate")
    step_gamma: float = _field(0.1, "step: factor of each drop")
    plateau_factor: float = _field(0.5, "plateau: factor on a plateau")
    plateau_patience: int = _field(3, "plateau: epochs without improvement before the rate drops")


@dataclass
class RunConfig:
    epochs: int = _field(12, "training epochs")
    batch_size: int = _field(4, "images per batch (per process under torchrun)")
    clip: float = _field(1.0, "gradient max-norm clipping; 0 disables it")
    patience: int = _field(0, "early stopping: epochs without a better val_iou; 0 disables it")
    seed: int = _field(0, "seed of the split, the initialisation, the sampling and the augmentations")
    device: str = _field("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    amp: bool = _field(False, "mixed precision on CUDA (bf16 where supported, else fp16 with a scaler)")
    out: str = _field("", "run directory; empty = runs/<date-time>")
    init_from: str = _field("", "checkpoint whose weights start this run (fine-tuning: new optimizer)")
    lr_find: bool = _field(False, "run the LR range test first and plot it")
    progress: str = _field("auto", "auto (a bar on a terminal), bar, lines", ("auto", "bar", "lines"))
    backend: str = _field("torch", "the engine of a step: torch, or numpy (the reference's NumPy U-Net, losses and "
                          "optimizers, on the CPU)", BACKENDS)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, tables: dict, source: str = "config") -> "TrainConfig":
        """A config from nested tables (TOML, a checkpoint); missing keys keep their defaults, unknown ones raise."""
        config = cls()
        if not isinstance(tables, dict):
            raise ConfigError(f"{source}: expected tables {list(SECTIONS)}, got {type(tables).__name__}")
        for section, values in tables.items():
            if section not in SECTIONS:
                raise ConfigError(f"{source}: unknown table [{section}]; expected one of {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: [{section}] must be a table, got {values!r}")
            for key, value in values.items():
                set_field(config, f"{section}.{key}", value, source)
        return config


SECTIONS = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def section_fields(section: str) -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(getattr(TrainConfig(), section))


# ------------------------------------------------------------------------------------------------------------------
# Values: checked and converted one field at a time


def _convert(value, default, name: str, choices):
    """``value`` as the type of ``default`` (bool, int, float, str, list), or ConfigError."""
    kind = type(default)
    if name == "optimizer.lr" and value == "auto":
        return value
    if kind is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            expected = "a finite number or 'auto'" if name == "optimizer.lr" else "a finite number"
            raise ConfigError(f"{name} must be {expected}, got {value!r}")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
    elif kind is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        item = type(default[0]) if default else str
        value = [_convert(v, item(), f"{name} item", None) for v in value]
        bad = [v for v in value if choices and v not in choices]
        if bad:
            raise ConfigError(f"{name}: {bad[0]!r} is not one of {', '.join(choices)}")
        return value
    if choices and kind is not list and value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def set_field(config: TrainConfig, name: str, value, source: str = "config") -> None:
    """Set ``section.key`` of ``config`` to ``value`` after checking it against the field's default and choices."""
    section, _, key = name.partition(".")
    if section not in SECTIONS:
        raise ConfigError(f"{source}: unknown table [{section}]; expected one of {', '.join(SECTIONS)}")
    fields = {f.name: f for f in section_fields(section)}
    if key not in fields:
        raise ConfigError(f"{source}: unknown key {name!r}; [{section}] has {', '.join(fields)}")
    table = getattr(config, section)
    choices = fields[key].metadata["choices"]
    try:
        setattr(table, key, _convert(value, _default(fields[key]), name, choices))
    except ConfigError as error:
        raise ConfigError(f"{source}: {error}") from None


def _default(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def validate(config: TrainConfig) -> TrainConfig:
    """Ranges that no single type states (positive sizes, probabilities in [0, 1), ...): ConfigError if broken."""
    checks = [
        ("model.depth", config.model.depth >= 1, "must be >= 1"),
        ("model.base_channels", config.model.base_channels >= 1, "must be >= 1"),
        ("model.dropout", 0.0 <= config.model.dropout < 1.0, "must lie in [0, 1)"),
        ("model.num_heads", config.model.num_heads >= 1, "must be >= 1"),
        ("data.images", config.data.images >= 2, "must be >= 2 (one to train on, one to validate)"),
        ("data.size", config.data.size >= 16, "must be >= 16"),
        ("data.val_fraction", 0.0 < config.data.val_fraction < 1.0, "must lie in (0, 1)"),
        ("data.crop", config.data.crop >= 0, "must be >= 0"),
        ("data.samples_per_epoch", config.data.samples_per_epoch >= 0, "must be >= 0"),
        ("data.class_names", len(config.data.class_names) >= 2, "must name at least 2 classes"),
        ("data.w0", config.data.w0 >= 0, "must be >= 0"),
        ("data.sigma", config.data.sigma > 0, "must be > 0"),
        ("data.workers", config.data.workers >= 0, "must be >= 0"),
        ("loss.coefficients", len(config.loss.coefficients) == 3, "must hold 3 numbers (dice, focal, CE)"),
        ("loss.gamma", config.loss.gamma >= 0, "must be >= 0"),
        ("loss.smooth", config.loss.smooth >= 0, "must be >= 0"),
        ("optimizer.lr", config.optimizer.lr == "auto" or config.optimizer.lr > 0, "must be > 0 or 'auto'"),
        ("optimizer.momentum", 0.0 <= config.optimizer.momentum < 1.0, "must lie in [0, 1)"),
        ("optimizer.b1", 0.0 <= config.optimizer.b1 < 1.0, "must lie in [0, 1)"),
        ("optimizer.b2", 0.0 <= config.optimizer.b2 < 1.0, "must lie in [0, 1)"),
        ("optimizer.weight_decay", config.optimizer.weight_decay >= 0, "must be >= 0"),
        ("schedule.warmup_epochs", config.schedule.warmup_epochs >= 0, "must be >= 0"),
        ("schedule.final_lr_ratio", 0.0 <= config.schedule.final_lr_ratio <= 1.0, "must lie in [0, 1]"),
        ("schedule.pct_start", 0.0 < config.schedule.pct_start < 1.0, "must lie in (0, 1)"),
        ("schedule.step_epochs", config.schedule.step_epochs > 0, "must be > 0"),
        ("schedule.step_gamma", 0.0 < config.schedule.step_gamma <= 1.0, "must lie in (0, 1]"),
        ("schedule.plateau_factor", 0.0 < config.schedule.plateau_factor < 1.0, "must lie in (0, 1)"),
        ("schedule.plateau_patience", config.schedule.plateau_patience >= 0, "must be >= 0"),
        ("run.epochs", config.run.epochs >= 1, "must be >= 1"),
        ("run.batch_size", config.run.batch_size >= 1, "must be >= 1"),
        ("run.clip", config.run.clip >= 0, "must be >= 0"),
        ("run.patience", config.run.patience >= 0, "must be >= 0"),
        ("run.seed", config.run.seed >= 0, "must be >= 0"),
    ]
    for name, ok, rule in checks:
        if not ok:
            section, _, key = name.partition(".")
            raise ConfigError(f"{name} {rule}, got {getattr(getattr(config, section), key)!r}")
    if config.run.backend == "numpy":
        _check_numpy_backend(config)
    if config.data.mask_kind == "instances" and len(config.data.class_names) != 2:
        raise ConfigError(f"data.class_names must hold 2 names for instance masks, got {config.data.class_names!r}")
    return config


def _check_numpy_backend(config: TrainConfig) -> None:
    """What the NumPy engine (``numpy_engine.py``) does not do: ConfigError naming the flag to change."""
    unsupported = [
        (config.model.name != "unet", f"--model {config.model.name}", "--model unet"),
        (config.run.amp, "--amp", "--no-amp"),
        (config.run.device not in ("auto", "cpu"), f"--device {config.run.device}", "--device cpu"),
        (config.data.workers > 0, f"--workers {config.data.workers}", "--workers 0"),
    ]
    for broken, given, needed in unsupported:
        if broken:
            raise ConfigError(f"--backend numpy trains the NumPy U-Net on the CPU in one process: {given} is not "
                              f"available there (use {needed}, or --backend torch)")  # fmt: skip


# ------------------------------------------------------------------------------------------------------------------
# Files: presets shipped with the package, TOML in, TOML out


def presets() -> list[str]:
    """The preset names shipped in ``unet_from_scratch/configs`` (``quick`` is the default)."""
    folder = resources.files("unet_from_scratch") / "configs"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_config(name_or_path: str = "quick") -> TrainConfig:
    """A preset by name (``quick``, ``paper``, ``advanced``) or a TOML file by path, over the defaults."""
    path = Path(name_or_path)
    if name_or_path in presets():
        text = (resources.files("unet_from_scratch") / "configs" / f"{name_or_path}.toml").read_text()
        source = f"preset {name_or_path!r}"
    elif path.is_file():
        text, source = path.read_text(), str(path)
    else:
        raise ConfigError(f"--config {name_or_path!r} is neither a preset ({', '.join(presets())}) nor a file")
    try:
        tables = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{source}: not valid TOML ({error})") from None
    return TrainConfig.from_dict(tables, source)


def to_toml(config: TrainConfig) -> str:
    """The config as TOML text that ``load_config`` reads back to an equal config."""
    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string is a JSON string for every character we write
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


# ------------------------------------------------------------------------------------------------------------------
# Flags: one per field


def flag_fields() -> dict[str, str]:
    """Flag name -> ``section.key`` for every field (``--base-channels`` -> ``model.base_channels``)."""
    flags = {}
    for section in SECTIONS:
        for f in section_fields(section):
            flag = f.metadata["flag"] or f.name.replace("_", "-")
            if flag in flags:  # pragma: no cover - a guard for whoever adds a field
                raise AssertionError(f"flag --{flag} names both {flags[flag]} and {section}.{f.name}")
            flags[flag] = f"{section}.{f.name}"
    return flags


def field_help(name: str) -> tuple[str, Any, tuple | None]:
    """(help text, default, choices) of ``section.key``."""
    section, _, key = name.partition(".")
    f = next(f for f in section_fields(section) if f.name == key)
    return f.metadata["help"], _default(f), f.metadata["choices"]


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """Set ``section.key`` fields from flag values (strings or already typed); ConfigError names the flag."""
    by_field = {v: k for k, v in flag_fields().items()}
    for name, value in overrides.items():
        try:
            set_field(config, name, value, source=f"--{by_field[name]}")
        except ConfigError as error:
            raise ConfigError(str(error)) from None
    if config.optimizer.lr == "auto":
        config.run.lr_find = True
    return config
