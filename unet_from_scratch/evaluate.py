"""Measure a trained U-Net: ``python -m unet_from_scratch.evaluate --checkpoint CKPT [--data synthetic|FOLDER]``.

Which images:
- no ``--data``, or ``--data`` naming the checkpoint's own source (``synthetic``, ``synthetic-sparse`` or its
  folder): the checkpoint's own validation split, rebuilt from the config it stores (the same images, the same
  ``val_fraction`` and seed, ``training.build.build_source`` and ``data.train_val_split``), so the numbers are
  those of images the model never trained on;
- ``--data synthetic`` with ``--seed N``: ``--images`` fresh synthetic images (the checkpoint's size and preset)
  drawn with seed N, all of them evaluated;
- ``--data FOLDER`` (another folder, ``images/`` + ``masks/`` as for training): every image in it.

What it reports (a table on screen and ``evaluation.json``), all computed with ``reference.metrics`` on the pixels
of all images pooled (every pixel counts once), the prediction being the argmax of the logits:
- per class: IoU, Dice, precision, recall, F1 (= Dice on pixel counts) and accuracy (tp / (tp + fn), the pixel
  accuracy on the class's pixels); ``mean``: their mean over the classes, with the overall pixel accuracy; and
  ``foreground``: the scores of the foreground classes pooled (micro), which is the trainer's ``val_iou``;
- instances: precision, recall and F1 of objects matched at IoU > 0.5 (``reference.metrics.instance_f1``, the
  counts pooled over images), and the F1 averaged over the IoU thresholds 0.50, 0.55, ..., 0.95 (the Data Science
  Bowl 2018's object metric averages over the same thresholds). The true objects are the instances (separated as in
  training) for instance masks, the connected components of the foreground for class masks;
- speed: ms/image and images/s of whole-image passes and of overlap-tile passes (``--tile``), one image at a time,
  on the device named;
- two classes: the threshold sweep of the foreground probability, precision, recall and F1 (pixels; the instance F1
  too) at thresholds 0.05, 0.10, ..., 0.95 (foreground where the probability exceeds the threshold), plotted in
  ``threshold_sweep.png``; the best threshold (highest pixel F1) is stored in ``evaluation.json`` with the
  checkpoint's SHA-256, and ``predict`` uses it by default when that file lies beside the checkpoint (the default
  ``--out``) and the checkpoint is unchanged;
- more classes: the confusion matrix (rows: truth, columns: prediction), plotted in ``confusion_matrix.png``.

``evaluation_predictions.npz`` holds what the numbers were computed from: per image ``prediction_<i>`` (uint8
classes), ``target_<i>``, ``objects_<i>`` (the true objects) and, for two classes, ``probability_<i>`` (float32).
Exit status 2 with a one-line error for a bad checkpoint, flag or data folder.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

from unet_from_scratch.predict import Parser

EVALUATION_FILE = "evaluation.json"
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05, 0.10, ..., 0.95
INSTANCE_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50, 0.55, ..., 0.95


def sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def stored_threshold(checkpoint) -> float | None:
    """The best threshold ``evaluate`` stored beside ``checkpoint`` for this very file (same SHA-256), or None."""
    path = Path(checkpoint).parent / EVALUATION_FILE
    try:
        stored = json.loads(path.read_text())
        if stored["checkpoint"]["sha256"] != sha256(checkpoint):
            return None
        return float(stored["threshold_sweep"]["best_threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def build_parser() -> Parser:
    parser = Parser(
        prog="python -m unet_from_scratch.evaluate",
        description="Evaluate a trained U-Net: per-class IoU, Dice, precision, recall, F1, accuracy; instance "
        "precision/recall/F1; speed; a threshold sweep (two classes) or a confusion matrix (more).",
    )
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by unet_from_scratch.train")
    parser.add_argument("--data", default=None,
                        help="synthetic, synthetic-sparse or a folder with images/ and masks/ (default: the "
                        "checkpoint's own data, its validation split)")  # fmt: skip
    parser.add_argument("--mask-kind", choices=("instances", "classes"), default=None,
                        help="a folder's masks (default: the checkpoint's)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=None,
                        help="synthetic data: fresh images drawn with this seed, not the validation split")
    parser.add_argument("--images", type=int, default=None,
                        help="with --seed: how many fresh images (default: the validation split's count)")
    parser.add_argument("--tile", type=int, default=None,
                        help="tile side of the tiled speed measurement (default: half the largest side)")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per forward pass (default: 4)")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    parser.add_argument("--tta", action="store_true", help="predict with the mean over the 8 flips and rotations")
    parser.add_argument("--out", default=None, help="output folder (default: the checkpoint's folder)")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# The images


def evaluation_items(config, args):
    """(description, items): items are (image float32 (C, H, W), target int64 (H, W), objects int32 (H, W))."""
    import numpy as np
    from scipy import ndimage

    from unet_from_scratch.data import SyntheticCells, train_val_split
    from unet_from_scratch.data.targets import prepare_labels, target_classes
    from unet_from_scratch.training.build import build_source

    own = config.data.source
    wanted = own if args.data is None else args.data
    if args.mask_kind is not None:
        config.data.mask_kind = args.mask_kind
    synthetic = wanted in ("synthetic", "synthetic-sparse")
    if args.seed is not None and not synthetic:
        raise ValueError("--seed draws fresh synthetic images: use it with --data synthetic or synthetic-sparse")
    if args.images is not None and args.seed is None:
        raise ValueError("--images goes with --seed (fresh synthetic images)")
    same_source = wanted == own or (not synthetic and Path(wanted).resolve() == Path(own).resolve())
    if synthetic and args.seed is not None:
        _, val = train_val_split(config.data.images, config.data.val_fraction, config.run.seed)
        n = args.images if args.images is not None else len(val)
        if n < 1:
            raise ValueError(f"--images must be >= 1, got {n}")
        preset = "touching" if wanted == "synthetic" else "sparse"
        source = SyntheticCells(n, size=config.data.size, seed=args.seed, preset=preset)
        indices, what = np.arange(n), f"{wanted}, {n} fresh images (seed {args.seed})"
    else:
        config.data.source = wanted
        source = build_source(config)
        if same_source:
            indices = train_val_split(len(source), config.data.val_fraction, config.run.seed)[1]
            what = f"{wanted}, the checkpoint's validation split ({len(indices)} images)"
        else:
            indices, what = np.arange(len(source)), f"{wanted}, all {len(source)} images"
    items = []
    for i in indices:
        image, mask = source[int(i)]
        image = np.asarray(image, dtype=np.float32)
        image = image[None] if image.ndim == 2 else image
        labels = prepare_labels(mask, source.mask_kind)
        target = target_classes(labels, source.mask_kind)
        objects = labels if source.mask_kind == "instances" else ndimage.label(target > 0)[0]
        items.append((image, target, objects.astype(np.int32)))
    return what, items


# ----------------------------------------------------------------------------------------------------------------
# The numbers


def _pooled(arrays):
    """Images of any sizes as one (1, P) label map: pixel scores pool every pixel once."""
    import numpy as np

    return np.concatenate([a.reshape(-1) for a in arrays])[None]


def instance_scores(objects, foregrounds, threshold: float) -> dict:
    """Object precision, recall, F1 at IoU > ``threshold``, the counts pooled over images."""
    from unet_from_scratch.reference.metrics import instance_f1

    matched = n_true = n_pred = 0
    for truth, prediction in zip(objects, foregrounds):
        s = instance_f1(truth, prediction, threshold)
        matched, n_true, n_pred = matched + s.matched, n_true + s.n_true, n_pred + s.n_pred
    empty = n_true + n_pred == 0
    ratio = lambda a, b: 1.0 if empty else (a / b if b else 0.0)  # noqa: E731 - as reference.metrics
    return {"precision": ratio(matched, n_pred), "recall": ratio(matched, n_true),
            "f1": ratio(2 * matched, n_true + n_pred), "matched": matched, "n_true": n_true,
            "n_pred": n_pred}  # fmt: skip


def compute_metrics(targets, predictions, objects, class_names, probabilities=None) -> dict:
    """Every number of the module docstring from the targets, predicted classes and true objects (lists of (H, W)
    arrays), and the foreground probabilities (two classes) for the threshold sweep."""
    import numpy as np

    from unet_from_scratch.reference import metrics as m

    k = len(class_names)
    y, p = _pooled(targets), _pooled(predictions)
    per_class = {}
    scores = {"iou": m.iou, "dice": m.dice, "precision": m.precision, "recall": m.recall, "f1": m.f1}
    table = {name: f(y, p, k, reduction="per_class") for name, f in scores.items()}
    table["accuracy"] = m.accuracy(y, p, k, reduction="per_class")
    for c, name in enumerate(class_names):
        per_class[name] = {score: float(values[c]) for score, values in table.items()}
    mean = {score: float(np.mean(values)) for score, values in table.items()}
    mean["accuracy"] = float(m.accuracy(y, p, k))  # the overall pixel accuracy
    foreground = {name: float(f(y, p, k)) for name, f in scores.items()}  # micro over classes 1..K-1
    foregrounds = [prediction > 0 for prediction in predictions]
    at_half = instance_scores(objects, foregrounds, 0.5)
    f1s = [instance_scores(objects, foregrounds, t)["f1"] for t in INSTANCE_THRESHOLDS]
    matrix = np.zeros((k, k), dtype=np.int64)  # rows: truth, columns: prediction
    np.add.at(matrix, (y.reshape(-1), p.reshape(-1)), 1)
    result = {
        "per_class": per_class, "mean": mean, "foreground": foreground,
        "instances": {**at_half, "iou_threshold": 0.5, "mean_f1_50_95": float(np.mean(f1s)),
                      "f1_by_iou_threshold": dict(zip(map(str, INSTANCE_THRESHOLDS), f1s))},
        "confusion_matrix": matrix.tolist(),
    }  # fmt: skip
    if k == 2 and probabilities is not None:
        result["threshold_sweep"] = threshold_sweep(targets, probabilities, objects)
    return result


def threshold_sweep(targets, probabilities, objects) -> dict:
    """Pixel precision/recall/F1 and instance F1 of ``probability > t`` for t in THRESHOLDS; the best by pixel F1."""
    from unet_from_scratch.reference import metrics as m

    y = _pooled(targets)
    rows = []
    for t in THRESHOLDS:
        masks = [probability > t for probability in probabilities]
        p = _pooled(masks).astype(int)
        rows.append({"threshold": t, "precision": float(m.precision(y, p)), "recall": float(m.recall(y, p)),
                     "f1": float(m.f1(y, p)), "instance_f1": instance_scores(objects, masks, 0.5)["f1"]})  # fmt: skip
    best = max(rows, key=lambda r: (r["f1"], -abs(r["threshold"] - 0.5)))  # ties: the one nearest 0.5
    return {"thresholds": rows, "best_threshold": best["threshold"], "best_f1": best["f1"]}


# ----------------------------------------------------------------------------------------------------------------
# Plots and the table


def plot_threshold_sweep(sweep: dict, path) -> None:
    from matplotlib.figure import Figure

    rows = sweep["thresholds"]
    t = [r["threshold"] for r in rows]
    figure = Figure(figsize=(5.5, 3.8), layout="constrained")
    ax = figure.add_subplot()
    for key, label in (("precision", "precision"), ("recall", "recall"), ("f1", "F1 (pixels)"),
                       ("instance_f1", "instance F1")):  # fmt: skip
        ax.plot(t, [r[key] for r in rows], marker=".", label=label)
    ax.axvline(sweep["best_threshold"], color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel="foreground probability threshold", ylabel="score", xlim=(0, 1),
           title=f"best pixel F1 {sweep['best_f1']:.4f} at {sweep['best_threshold']:.2f}")  # fmt: skip
    ax.legend(loc="best")
    figure.savefig(path, dpi=120)


def plot_confusion_matrix(matrix, class_names, path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    matrix = np.asarray(matrix)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    k = len(class_names)
    figure = Figure(figsize=(1.2 * k + 2.5, 1.0 * k + 1.8), layout="constrained")
    ax = figure.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{rates[i, j]:.2f}\n{matrix[i, j]:,}", ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    ax.set(xticks=range(k), yticks=range(k), xticklabels=class_names, yticklabels=class_names,
           xlabel="predicted", ylabel="true", title="confusion matrix (rows sum to 1)")  # fmt: skip
    figure.colorbar(image, ax=ax)
    figure.savefig(path, dpi=120)


def format_table(result: dict) -> str:
    scores = ("iou", "dice", "precision", "recall", "f1", "accuracy")
    width = max(12, *(len(name) + 2 for name in result["per_class"]))
    lines = [f"{'class':<{width}}" + "".join(f"{s:>11}" for s in scores)]
    for name, row in [*result["per_class"].items(), ("mean", result["mean"])]:
        lines.append(f"{name:<{width}}" + "".join(f"{row[s]:>11.4f}" for s in scores))
    fg = result["foreground"]
    lines.append(f"{'foreground':<{width}}" + "".join(f"{fg[s]:>11.4f}" for s in scores[:-1]))
    i = result["instances"]
    lines.append(f"Instances (IoU > 0.5): precision {i['precision']:.4f}, recall {i['recall']:.4f}, F1 {i['f1']:.4f} "
                 f"({i['matched']} of {i['n_true']} true objects matched, {i['n_pred']} predicted); "
                 f"mean F1 over IoU 0.50:0.95 {i['mean_f1_50_95']:.4f}")  # fmt: skip
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# The command


def _timed(function, items) -> tuple[list, float]:
    results, seconds = [], 0.0
    for item in items:
        started = time.perf_counter()
        results.append(function(item))
        seconds += time.perf_counter() - started
    return results, seconds


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import numpy as np
    import torch

    from unet_from_scratch.inference import predict
    from unet_from_scratch.training.build import resolve_device
    from unet_from_scratch.training.checkpoint import CheckpointError, load_checkpoint, load_model
    from unet_from_scratch.training.config import ConfigError, TrainConfig

    try:
        for name in ("tile", "batch_size", "images"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
        device = resolve_device(args.device)
        checkpoint = load_checkpoint(args.checkpoint)
        model = load_model(args.checkpoint).to(device)
        config = TrainConfig.from_dict(checkpoint["config"], str(args.checkpoint))
        what, items = evaluation_items(config, args)
        if items and items[0][0].shape[0] != model.in_channels:
            raise ValueError(f"the images have {items[0][0].shape[0]} channel(s), the model takes {model.in_channels}")
    except (ConfigError, CheckpointError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    class_names = model.class_names
    k = len(class_names)
    largest = max(max(image.shape[1:]) for image, _, _ in items)
    tile = args.tile or max(1, largest // 2)

    def whole(item):
        return predict(model, torch.from_numpy(item[0])[None], None, args.batch_size, args.tta)[0]

    def tiled(item):
        return predict(model, torch.from_numpy(item[0])[None], tile, args.batch_size, args.tta)[0]

    whole(items[0]), tiled(items[0])  # warm-up: the first pass pays for allocations
    logits, whole_seconds = _timed(whole, items)
    _, tiled_seconds = _timed(tiled, items)
    predictions = [x.argmax(0).cpu().numpy().astype(np.uint8) for x in logits]
    probabilities = [torch.softmax(x, 0)[1].cpu().numpy().astype(np.float32) for x in logits] if k == 2 else None
    targets, objects = [t for _, t, _ in items], [o for _, _, o in items]
    result = compute_metrics(targets, predictions, objects, class_names, probabilities)
    n = len(items)
    def rate(seconds):
        return {"ms_per_image": 1000 * seconds / n, "images_per_s": n / max(seconds, 1e-12)}

    result["speed"] = {"device": str(device), "images": n, "tta": args.tta, "whole_image": rate(whole_seconds),
                       "tiled": {"tile": tile, **rate(tiled_seconds)}}  # fmt: skip
    out = Path(args.out) if args.out else Path(args.checkpoint).parent
    out.mkdir(parents=True, exist_ok=True)
    result = {"checkpoint": {"path": str(args.checkpoint), "sha256": sha256(args.checkpoint)}, "data": what,
              "class_names": class_names, **result}  # fmt: skip
    (out / EVALUATION_FILE).write_text(json.dumps(result, indent=2) + "\n")
    arrays = {f"prediction_{i}": p for i, p in enumerate(predictions)}
    arrays |= {f"target_{i}": t for i, t in enumerate(targets)} | {f"objects_{i}": o for i, o in enumerate(objects)}
    if probabilities is not None:
        arrays |= {f"probability_{i}": p for i, p in enumerate(probabilities)}
    np.savez_compressed(out / "evaluation_predictions.npz", **arrays)
    print(f"Evaluation of {args.checkpoint} on {what}, device {device}{', TTA x8' if args.tta else ''}")
    print(format_table(result))
    s = result["speed"]
    print(f"Speed: whole image {s['whole_image']['ms_per_image']:.1f} ms/image ({s['whole_image']['images_per_s']:.1f}"
          f" images/s); tiles of {tile}: {s['tiled']['ms_per_image']:.1f} ms/image "
          f"({s['tiled']['images_per_s']:.1f} images/s)")  # fmt: skip
    if k == 2:
        sweep = result["threshold_sweep"]
        plot_threshold_sweep(sweep, out / "threshold_sweep.png")
        print(f"Threshold sweep: best pixel F1 {sweep['best_f1']:.4f} at threshold {sweep['best_threshold']:.2f} "
              f"(stored for predict); plot: {out / 'threshold_sweep.png'}")  # fmt: skip
    else:
        plot_confusion_matrix(result["confusion_matrix"], class_names, out / "confusion_matrix.png")
        print(f"Confusion matrix: {out / 'confusion_matrix.png'}")
    print(f"Saved {out / EVALUATION_FILE} and {out / 'evaluation_predictions.npz'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
