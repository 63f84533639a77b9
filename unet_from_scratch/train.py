"""Train a U-Net: ``python -m unet_from_scratch.train [--config PRESET_OR_FILE] [flags]``.

With no arguments it trains the ``quick`` preset on the built-in synthetic touching cells. ``--config`` takes a
preset (quick, paper, advanced) or a TOML file; every flag overrides one field of it (``--help`` lists them with
their defaults). ``--resume RUN_DIR`` continues a run from its ``last.pt``. Under ``torchrun --nproc_per_node=N``
it trains with DistributedDataParallel.

Exit status: 0 done; 2 a bad flag, config, data folder or checkpoint (one line on stderr, no traceback); 1 a
non-finite loss (the message names epoch and step); 130/143 stopped by SIGINT/SIGTERM after saving ``last.pt``.
"""

from __future__ import annotations

import argparse
import sys

from unet_from_scratch.training.config import (
    ConfigError,
    apply_overrides,
    field_help,
    flag_fields,
    load_config,
    presets,
    validate,
)

RESUME_FLAGS = ("epochs", "device", "workers", "progress")  # what may change when a run is continued


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2, as every other bad input
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m unet_from_scratch.train",
        usage="%(prog)s [--config PRESET_OR_FILE] [--resume RUN_DIR] [--FLAG VALUE ...]",
        description="Train a U-Net on the built-in synthetic touching cells or on a folder of images and masks "
        "(images/ and masks/, paired by file name). Defaults are those of the quick preset.",
    )
    parser.add_argument("--config", default="quick",
                        help=f"a preset ({', '.join(presets())}) or a TOML file (default: quick)")  # fmt: skip
    resumable = ", ".join(f"--{flag}" for flag in RESUME_FLAGS)
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help=f"continue the run in RUN_DIR from its last.pt (only {resumable} may change)")  # fmt: skip
    defaults = load_config("quick")
    groups = {}
    for flag, name in flag_fields().items():
        text, _, choices = field_help(name)
        section, _, key = name.partition(".")
        group = groups.get(section) or groups.setdefault(section, parser.add_argument_group(f"[{section}]"))
        default = getattr(getattr(defaults, section), key)
        if isinstance(default, bool):
            group.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None,
                                help=f"{text} (default: {str(default).lower()})")  # fmt: skip
            continue
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        metavar = "{" + ",".join(choices) + "}" if choices and not isinstance(default, list) else None
        group.add_argument(f"--{flag}", metavar=metavar, default=None,
                            help=f"{text} (default: {shown if shown != '' else 'none'})")  # fmt: skip
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    fields = flag_fields()
    given = {fields[flag]: value for flag, value in ((f, getattr(args, f.replace("-", "_"))) for f in fields)
             if value is not None}  # fmt: skip
    try:  # the flags and the config first: a mistake there answers at once, before torch is even imported
        config = None
        if args.resume:
            extra = sorted(name for name in given if name.partition(".")[2] not in RESUME_FLAGS)
            if extra:
                flags = ", ".join("--" + {v: k for k, v in fields.items()}[n] for n in extra)
                resumable = ", ".join(f"--{flag}" for flag in RESUME_FLAGS)
                raise ConfigError(f"--resume continues a run with its own config; {flags} cannot change "
                                  f"(only {resumable})")  # fmt: skip
        else:
            config = validate(apply_overrides(load_config(args.config), given))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from unet_from_scratch.training.checkpoint import CheckpointError
    from unet_from_scratch.training.loop import Interrupted, NonFiniteLoss, Trainer

    try:
        trainer = Trainer(resume=args.resume, overrides=given) if args.resume else Trainer(config)
        metrics = trainer.fit()
    except (ConfigError, CheckpointError, ValueError, OSError) as error:  # a flag, a config, the data, a file
        print(f"error: {error}", file=sys.stderr)
        return 2
    except NonFiniteLoss as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Interrupted as error:
        print(str(error), file=sys.stderr)
        return 128 + error.signum
    if trainer.world.is_main:
        report(trainer, metrics)
    return 0


def report(trainer, metrics: dict) -> None:
    """The closing lines: the best epoch's scores, where everything went, and what a GPU would add."""
    best = metrics["best"]
    print(f"Best epoch {metrics['best_epoch']}: val_iou {best['val_iou']:.4f} - val_dice {best['val_dice']:.4f} - "
          f"val_precision {best['val_precision']:.4f} - val_recall {best['val_recall']:.4f} - "
          f"val_instance_f1 {best['val_instance_f1']:.4f}")  # fmt: skip
    where = "the NumPy engine (cpu)" if metrics["backend"] == "numpy" else metrics["device"]
    print(f"Trained in {metrics['seconds']:.0f} s on {where} ({metrics['seconds_per_epoch']:.1f} s/epoch, "
          f"{metrics['ms_per_step']:.0f} ms/step, {metrics['images_per_s']:.1f} images/s); "
          f"{metrics['wall_seconds']:.0f} s in all, data and weight maps included")  # fmt: skip
    print(f"Saved in {trainer.out}: best.pt, last.pt, config.toml, history.csv, metrics.json, curves.png, "
          f"predictions.png, weight_map.png{', lr_finder.png' if trainer.config.run.lr_find else ''}")  # fmt: skip
    if metrics["backend"] == "numpy":
        print(f"The checkpoints are torch checkpoints: python -m unet_from_scratch.evaluate --checkpoint "
              f"{trainer.out / 'best.pt'} (and predict, export) use them as they are; --backend torch trains the same "
              "model with torch.")  # fmt: skip
    elif trainer.device.type == "cpu":
        print("On a CUDA GPU the same command runs the fused Triton loss; add --amp for mixed precision, and try "
              "--config advanced (attention U-Net, 2400 images of 256 px) or --depth 4 --base-channels 64 "
              "(the paper's width).")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
