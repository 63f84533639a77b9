"""Does the weight map separate touching cells? ``python -m unet_from_scratch.experiments.weight_map_ablation``.

The paper (Ronneberger et al. 2015, Sec. 3) weights the cross-entropy by a map that is large on the thin background
gaps between touching cells, w(x) = w_c(x) + w0 · exp(-(d1(x) + d2(x))^2 / (2 σ^2)), "to force the network to
learn the small separation borders". This trains the same model for the same budget twice per seed, on the
built-in touching cells (``--data synthetic``), with everything but the loss equal:

    --loss ce            cross-entropy weighted by the class weights w_c alone
    --loss weighted-ce   cross-entropy weighted by the paper's map (w_c plus the border term)

and reports, on each run's validation split, the pixel IoU of the foreground and the instance F1 (objects matched
at IoU > 0.5, ``reference.metrics.instance_f1``) of each run's best epoch: mean ± standard deviation (ddof 1)
over the seeds.

The base config is the ``quick`` preset (``training.config``); the options shrink it for a test. Everything goes to
``--out`` (default ``runs/weight_map_ablation``): one run directory per (loss, seed), ``ablation.json`` (every
run's scores and the summary), ``ablation.md`` (the table) and ``ablation.png`` (the same validation images
predicted both ways, each connected component in its own colour, so merged cells show as one colour).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

LOSSES = ("ce", "weighted-ce")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m unet_from_scratch.experiments.weight_map_ablation",
        description="Train the quick preset's U-Net with --loss ce and with --loss weighted-ce (the paper's weight "
        "map) on the touching cells over several seeds; report pixel IoU and instance F1, mean ± std.",
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the quick preset's)")
    parser.add_argument("--images", type=int, default=None, help="synthetic images (default: the quick preset's)")
    parser.add_argument("--size", type=int, default=None, help="image side (default: the quick preset's)")
    parser.add_argument("--samples-per-epoch", type=int, default=None, help="training samples per epoch")
    parser.add_argument("--depth", type=int, default=None, help="U-Net depth (default: the quick preset's)")
    parser.add_argument("--base-channels", type=int, default=None, help="first-level channels (default: preset's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--out", default="runs/weight_map_ablation", help="output folder")
    return parser


def configs(args, seed: int) -> dict:
    """loss -> the ``TrainConfig`` of one run: the quick preset, the options, this seed and this loss."""
    from unet_from_scratch.training.config import apply_overrides, load_config, validate

    common = {"data.source": "synthetic", "run.seed": seed, "run.device": args.device, "run.progress": "lines"}
    for name, key in (("epochs", "run.epochs"), ("images", "data.images"), ("size", "data.size"),
                      ("samples_per_epoch", "data.samples_per_epoch"), ("depth", "model.depth"),
                      ("base_channels", "model.base_channels")):  # fmt: skip
        if getattr(args, name) is not None:
            common[key] = getattr(args, name)
    out = Path(args.out)
    return {loss: validate(apply_overrides(load_config("quick"), {**common, "loss.name": loss,
                                                                  "run.out": str(out / f"{loss}-seed{seed}")}))
            for loss in LOSSES}  # fmt: skip


def summarise(runs: list[dict]) -> dict:
    """loss -> {score: {"mean", "std", "values"}} over the seeds (std with ddof 1; 0 for one seed)."""
    import numpy as np

    summary = {}
    for loss in LOSSES:
        rows = [r for r in runs if r["loss"] == loss]
        summary[loss] = {}
        for score in ("val_iou", "val_instance_f1"):
            values = np.array([r[score] for r in rows], dtype=np.float64)
            std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            summary[loss][score] = {"mean": float(values.mean()), "std": std, "values": values.tolist()}
    return summary


def table(summary: dict, seeds: list[int], epochs: int) -> str:
    lines = [f"| loss ({len(seeds)} seeds, {epochs} epochs) | pixel IoU | instance F1 |", "| --- | --- | --- |"]
    names = {"ce": "`ce` (class weights only)", "weighted-ce": "`weighted-ce` (the paper's weight map)"}
    for loss in LOSSES:
        s = summary[loss]
        lines.append(f"| {names[loss]} | {s['val_iou']['mean']:.3f} ± {s['val_iou']['std']:.3f} | "
                     f"{s['val_instance_f1']['mean']:.3f} ± {s['val_instance_f1']['std']:.3f} |")  # fmt: skip
    return "\n".join(lines)


def plot(run_dirs: dict, path, n: int = 2) -> None:
    """The first ``n`` validation images of one seed: image, true instances, and each loss's connected components."""
    import numpy as np
    from matplotlib import colormaps
    from matplotlib.figure import Figure
    from scipy import ndimage

    from unet_from_scratch.reference.metrics import instance_f1

    kept = {loss: np.load(Path(d) / "predictions.npz") for loss, d in run_dirs.items()}
    first = kept[LOSSES[0]]
    n = min(n, sum(1 for key in first.files if key.startswith("image_")))
    colours = np.vstack([[0, 0, 0], colormaps["tab20"](np.arange(20))[:, :3]])

    def coloured(labels):
        return colours[np.where(labels > 0, (labels - 1) % 20 + 1, 0)]

    figure = Figure(figsize=(12, 3 * n), layout="constrained")
    axes = np.asarray(figure.subplots(n, 2 + len(LOSSES), squeeze=False))
    for row in range(n):
        image, objects = first[f"image_{row}"][0], first[f"instances_{row}"]
        axes[row, 0].imshow(image, cmap="gray")
        axes[row, 0].set_title("image")
        axes[row, 1].imshow(coloured(objects))
        axes[row, 1].set_title(f"truth: {len(np.unique(objects[objects > 0]))} cells")
        for column, loss in enumerate(LOSSES, start=2):
            prediction = kept[loss][f"prediction_{row}"]
            components = ndimage.label(prediction > 0)[0]
            score = instance_f1(objects, prediction > 0)
            axes[row, column].imshow(coloured(components))
            axes[row, column].set_title(f"{loss}: instance F1 {score.f1:.2f}")
    for ax in axes.flat:
        ax.set_axis_off()
    figure.suptitle("the same validation images; each connected component in its own colour (merged cells share one)")
    figure.savefig(path, dpi=100)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        if not seeds or min(seeds) < 0:
            raise ValueError
    except ValueError:
        print(f"error: --seeds must be comma-separated non-negative integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    from unet_from_scratch.training.config import ConfigError
    from unet_from_scratch.training.loop import Trainer

    out = Path(args.out)
    try:
        plans = {seed: configs(args, seed) for seed in seeds}  # every config checked before the first run
        for seed in seeds:
            for config in plans[seed].values():
                if (Path(config.run.out) / "last.pt").exists():
                    raise ConfigError(f"{config.run.out} already holds a run: choose another --out")
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    runs, started = [], time.perf_counter()
    for seed in seeds:
        for loss, config in plans[seed].items():
            print(f"== --loss {loss}, seed {seed} ==", flush=True)
            metrics = Trainer(config).fit()
            best = metrics["best"]
            runs.append({"loss": loss, "seed": seed, "out": config.run.out, "best_epoch": metrics["best_epoch"],
                         "val_iou": best["val_iou"], "val_instance_f1": best["val_instance_f1"],
                         "seconds": metrics["seconds"]})  # fmt: skip
    summary = summarise(runs)
    epochs = plans[seeds[0]][LOSSES[0]].run.epochs
    text = table(summary, seeds, epochs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"runs": runs, "summary": summary, "seeds": seeds,
                                                   "epochs": epochs}, indent=2) + "\n")  # fmt: skip
    (out / "ablation.md").write_text(text + "\n")
    plot({loss: plans[seeds[0]][loss].run.out for loss in LOSSES}, out / "ablation.png")
    print(text)
    print(f"{len(runs)} runs in {time.perf_counter() - started:.0f} s; saved {out / 'ablation.json'}, "
          f"{out / 'ablation.md'}, {out / 'ablation.png'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
