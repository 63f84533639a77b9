"""Segment images with a trained U-Net: ``python -m unet_from_scratch.predict --checkpoint CKPT INPUT... --out DIR``.

Each INPUT is an image file (PNG, TIFF, JPEG; 8/16-bit, float TIFF, multi-channel, multi-page stacks) or a folder
of them; images are read exactly as ``data.FolderDataset`` reads training images (integers divided by their type's
maximum, grey -> 1 channel, colour -> 3, alpha dropped, each TIFF page one image), and the model applies the
normalisation and class order it was trained with (both stored in the checkpoint). Any size: the model mirrors the
borders out to the sizes it takes, or predicts overlapping tiles (``--tile``, ``inference.predict_tiled``).

Written per input, under the input's own stem (``cell01.tif`` -> ``cell01_mask.png``, ...; ``_page<k>`` added per
page of a stack):

    <stem>_mask.png            class of every pixel: 0/255 for two classes, the class index (uint8) for more
    <stem>_probabilities.tif   float32 softmax: the foreground probability (H, W) for two classes, (K, H, W) else
    <stem>_overlay.png         the image with the predicted classes tinted over it
    <stem>_instances.tif       instance-style models (trained on instance masks): the connected components of the
                               foreground (4-connectivity, as ``reference.metrics.instance_f1``), uint16/uint32 ids
                               1..n, components below ``--min-size`` pixels dropped

Two classes: a pixel is foreground where its foreground probability exceeds ``--threshold``; by default the
threshold ``python -m unet_from_scratch.evaluate`` tuned for this checkpoint (stored in ``evaluation.json``
beside it), else 0.5 (the argmax). More classes: the argmax.

Every input is read and checked before the first prediction: an unreadable file, a file with the wrong number
of channels or two inputs with one stem is named in a one-line error, exit status 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")  # as data.folder (checked in the tests)


class Parser(argparse.ArgumentParser):
    """argparse with errors of one line and exit status 2 (shared by predict, evaluate and export)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


class InputError(ValueError):
    """A bad input file, folder or option: one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m unet_from_scratch.predict",
        description="Segment images with a trained U-Net: a class mask, the probabilities, an overlay and (for "
        "instance-style models) an instance label image per input, under the input's own stem.",
    )
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER",
                        help="image files (PNG, TIFF, JPEG) or folders of them")  # fmt: skip
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by unet_from_scratch.train")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--tile", type=int, default=None,
                        help="output pixels per tile side, for overlap-tile inference (default: whole images)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="two classes: foreground where its probability exceeds this (default: the threshold "
                        "evaluate stored for this checkpoint, else 0.5)")  # fmt: skip
    parser.add_argument("--min-size", type=int, default=0,
                        help="instance image: drop components of fewer pixels (default: 0, keep all)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--tta", action="store_true", help="mean over the 8 flips and rotations (8x the time)")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# Inputs


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Image paths of ``inputs`` (files, or folders listed as ``data.FolderDataset`` lists its images folder)."""
    from unet_from_scratch.data.folder import list_files

    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            try:
                found = list(list_files(path, IMAGE_SUFFIXES, "image").values())
            except (OSError, ValueError) as error:
                raise InputError(str(error)) from None
            if not found:
                raise InputError(f"no images in {path} (expected {', '.join(IMAGE_SUFFIXES)} files)")
            paths.extend(found)
        elif path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"unsupported image file {path}: expected one of {', '.join(IMAGE_SUFFIXES)}")
            paths.append(path)
        else:
            raise InputError(f"input {path} does not exist")
    stems: dict[str, Path] = {}
    for path in paths:
        if path.stem in stems and stems[path.stem] != path:
            raise InputError(f"{path} and {stems[path.stem]} share the stem {path.stem!r}: their outputs would collide")
        stems[path.stem] = path
    return list(dict.fromkeys(paths))


def read_image(path: Path, in_channels: int | None = None):
    """Every page of an image file as float32 (C, H, W), read as ``data.FolderDataset`` reads training images.

    Integer values are divided by their type's maximum (uint8 by 255, uint16 by 65535); float values are kept and
    must be finite. InputError (one line, naming the file) for an unreadable file or another channel count than
    ``in_channels``.
    """
    import numpy as np

    from unet_from_scratch.data.folder import read_image_pages

    try:
        pages = read_image_pages(path)
    except ValueError as error:
        raise InputError(str(error)) from None
    images = []
    for k, page in enumerate(pages):
        if np.issubdtype(page.dtype, np.integer):
            page = page / np.iinfo(page.dtype).max
        elif not np.all(np.isfinite(page)):
            raise InputError(f"image {path} page {k} holds NaN or infinite values; expected finite values")
        if in_channels is not None and page.shape[0] != in_channels:
            raise InputError(f"{path} has {page.shape[0]} channel(s), the model takes {in_channels}")
        images.append(page.astype(np.float32))
    return images


# ----------------------------------------------------------------------------------------------------------------
# Outputs


def foreground_instances(foreground, min_size: int = 0):
    """Connected components (4-connectivity) of a bool (H, W) mask, those under ``min_size`` px dropped, renumbered
    1..n -> (ids uint16, or uint32 past 65535 objects, n)."""
    import numpy as np
    from scipy import ndimage

    labels, n = ndimage.label(foreground)
    if min_size > 1 and n:
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        keep = areas >= min_size
        keep[0] = False
        new_ids = np.zeros(n + 1, dtype=np.int64)
        new_ids[keep] = np.arange(1, int(keep.sum()) + 1)
        labels, n = new_ids[labels], int(keep.sum())
    return labels.astype(np.uint16 if n < 2**16 else np.uint32), n


def overlay(image, classes, alpha: float = 0.45):
    """RGB uint8 (H, W, 3): the image (grey from its first channel, or its 3 colours; each stretched between its
    1st and 99th percentile) with class k > 0 tinted by the k-th colour of matplotlib's tab10."""
    import numpy as np
    from matplotlib import colormaps

    rgb = image[:3] if image.shape[0] == 3 else np.repeat(image[:1], 3, axis=0)
    low, high = np.percentile(rgb, 1), np.percentile(rgb, 99)
    rgb = np.clip((rgb - low) / max(high - low, 1e-12), 0, 1).transpose(1, 2, 0)  # (H, W, 3) in [0, 1]
    colours = np.asarray(colormaps["tab10"].colors)  # (10, 3)
    tint = colours[(np.maximum(classes, 1) - 1) % 10]  # (H, W, 3)
    blend = np.where((classes > 0)[..., None], (1 - alpha) * rgb + alpha * tint, rgb)
    return (blend * 255 + 0.5).astype(np.uint8)


def write_outputs(out: Path, stem: str, image, probabilities, threshold: float, instances: bool, min_size: int):
    """The files of the module docstring for one image (C, H, W) and its softmax ``probabilities`` (K, H, W)."""
    import numpy as np
    import tifffile
    from PIL import Image

    k = probabilities.shape[0]
    if k == 2:
        classes = (probabilities[1] > threshold).astype(np.uint8)
        Image.fromarray(classes * 255).save(out / f"{stem}_mask.png")
        tifffile.imwrite(out / f"{stem}_probabilities.tif", probabilities[1].astype(np.float32))
    else:
        classes = probabilities.argmax(0).astype(np.uint8)
        Image.fromarray(classes).save(out / f"{stem}_mask.png")
        tifffile.imwrite(out / f"{stem}_probabilities.tif", probabilities.astype(np.float32),
                         photometric="minisblack")  # fmt: skip
    Image.fromarray(overlay(image, classes)).save(out / f"{stem}_overlay.png")
    if instances:
        labels, _ = foreground_instances(classes > 0, min_size)
        tifffile.imwrite(out / f"{stem}_instances.tif", labels)


# ----------------------------------------------------------------------------------------------------------------
# The command


def _check_options(args) -> None:
    if args.tile is not None and args.tile < 1:
        raise InputError(f"--tile must be a positive integer, got {args.tile}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be a positive integer, got {args.batch_size}")
    if args.min_size < 0:
        raise InputError(f"--min-size must be >= 0, got {args.min_size}")
    if args.threshold is not None and not 0 <= args.threshold < 1:
        raise InputError(f"--threshold must lie in [0, 1), got {args.threshold}")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here: --help and bad flags answer at once, without importing torch.
    import torch
    from tqdm import tqdm

    from unet_from_scratch.evaluate import stored_threshold
    from unet_from_scratch.inference import predict
    from unet_from_scratch.training.build import resolve_device
    from unet_from_scratch.training.checkpoint import CheckpointError, load_checkpoint, load_model
    from unet_from_scratch.training.config import ConfigError

    try:
        _check_options(args)
        device = resolve_device(args.device)
        checkpoint = load_checkpoint(args.checkpoint)
        model = load_model(args.checkpoint).to(device)
        if args.threshold is not None and model.num_classes != 2:
            raise InputError(f"--threshold applies to two-class models; this one has {model.num_classes} classes")
        threshold = args.threshold
        if threshold is None:
            threshold = stored_threshold(args.checkpoint) if model.num_classes == 2 else None
        threshold = 0.5 if threshold is None else threshold
        data = checkpoint["config"]["data"]
        instance_style = data.get("source", "").startswith("synthetic") or data.get("mask_kind") == "instances"
        instances = instance_style and model.num_classes == 2
        paths = collect_inputs(args.inputs)
        pages = {path: len(read_image(path, model.in_channels)) for path in paths}  # every file checked first
    except (InputError, ConfigError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds, count = 0.0, 0
    for path in tqdm(paths, desc="predict", unit="file", disable=None):
        for k, image in enumerate(read_image(path, model.in_channels)):
            started = time.perf_counter()
            logits = predict(model, torch.from_numpy(image)[None], args.tile, args.batch_size, args.tta)
            probabilities = torch.softmax(logits, dim=1)[0].cpu().numpy()  # (K, H, W)
            seconds += time.perf_counter() - started
            count += 1
            stem = path.stem if pages[path] == 1 else f"{path.stem}_page{k}"
            write_outputs(out, stem, image, probabilities, threshold, instances, args.min_size)
    how = f"tiles of {args.tile}" if args.tile else "whole images"
    print(f"Predicted {count} image(s) from {len(paths)} file(s) in {seconds:.2f} s: "
          f"{1000 * seconds / max(count, 1):.1f} ms/image on {device} ({how}{', TTA x8' if args.tta else ''}"
          f"{f', threshold {threshold:.2f}' if model.num_classes == 2 else ''}); outputs in {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
