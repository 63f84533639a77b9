"""Train a U-Net: ``python -m unet_from_scratch.train``.

The training loop is not built yet; the layers, losses, metrics and data it will drive are. Until it lands,
this command says so and exits 0, so the README's quick start stays true.
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unet_from_scratch.train",
        description="Train a U-Net on the built-in synthetic touching-cells dataset or on a folder of images and masks.",
    )
    parser.parse_args(argv)
    print(
        "unet_from_scratch.train: the trainer is not implemented yet. "
        "The NumPy reference, kernels, models and data it will use are; run `pytest` to see them proven.",
        file=sys.stdout,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
